"""The soak's report: percentiles, the one-screen summary and a self-contained HTML page (inline SVG charts).

The page needs nothing from the network (no script, no font): ops open ``soak.html`` from the run's folder.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any, Final

__all__ = ["percentiles", "render_html", "summary_text"]

_COLOURS: Final = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf", "#7f7f7f")


def percentiles(values: Sequence[float]) -> dict[str, float | None]:
    """p50 / p95 / p99 / max (nearest rank) and the count; None when there are no values."""
    ordered = sorted(values)

    def rank(q: float) -> float | None:
        if not ordered:
            return None
        return round(ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))], 3)

    return {"p50": rank(0.5), "p95": rank(0.95), "p99": rank(0.99), "max": rank(1.0), "count": len(ordered)}


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def summary_text(report: dict[str, Any]) -> str:
    """What fits on one screen: the verdict, the accounting, latency, memory, the faults."""
    totals = report["totals"]
    destinations = list(totals["delivered"])
    rows: list[tuple[str, str]] = [
        ("events made by the devices", f"{totals['made']} (planned about {totals['planned']})"),
        ("accepted by the API", f"{totals['accepted']} (+{totals['duplicate_at_api']} resent, answered duplicate)"),
        (
            "rejected (in the agents' quarantine)",
            f"{totals['rejected']}"
            + "".join(f", {code} ×{n}" for code, n in totals.get("rejected_by_code", {}).items()),
        ),
        *(
            (
                f"delivered to {d}",
                f"{totals['delivered'][d]} once each; lost {totals['lost'][d]}; "
                f"redelivered {totals['raw_duplicates'][d]}, dropped by the consumer's dedupe; "
                f"written twice {totals['duplicates_after_dedupe'][d]}",
            )
            for d in destinations
        ),
        ("dead-lettered", str(totals["dead_lettered"])),
        (
            "throughput (delivered to both)",
            f"{report['throughput']['delivered_per_sec_under_load']} events/s while "
            f"{report['throughput']['offered_per_sec_under_load']} were made; "
            f"{report['throughput']['delivered_per_sec']} over the whole run",
        ),
    ]
    for stage, p in report["latency_secs"].items():
        rows.append((f"latency {stage}", f"p50 {_secs(p['p50'])}  p95 {_secs(p['p95'])}  p99 {_secs(p['p99'])}"))
    rows.append(("peak RSS (MiB)", ", ".join(f"{k} {v:.0f}" for k, v in report["peak_rss_mb"].items())))
    f = report["faults"]
    kinds: dict[str, int] = {}
    for happening in report["happenings"]:
        kinds[happening["kind"]] = kinds.get(happening["kind"], 0) + 1
    failed = sum(f.get("messages_failed_and_retried", {}).values())
    rows.append(
        (
            "AWS errors injected",
            f"{f['aws_total']} ({f['aws_settings']['rate']:.1%} steady); past botocore's retries, "
            f"{failed} messages failed a function and were retried",
        )
    )
    rows.append(("faults", ", ".join(f"{k} ×{n}" for k, n in kinds.items() if k != "agents started") or "none"))
    rows.append(("elapsed", f"{report['elapsed_secs']:.0f} s"))
    width = max(len(name) for name, _ in rows)
    lines = [f"  {name:<{width}}  {value}" for name, value in rows]
    verdict = (
        "OK: every event made was delivered once to each destination or accounted for"
        if report["ok"]
        else "FAILED: " + "; ".join(report["problems"])
    )
    return "\n".join(["anfang local soak", *lines, verdict])


def _chart(title: str, series: dict[str, list[tuple[float, float]]], marks: list[tuple[float, str]], unit: str) -> str:
    width, height, left, bottom, top, right = 900, 260, 60, 30, 24, 170
    points = [p for values in series.values() for p in values]
    if not points:
        return f"<h3>{html.escape(title)}</h3><p>no data</p>"
    x_max = max(x for x, _ in points) or 1.0
    y_max = max(y for _, y in points) or 1.0
    plot_w, plot_h = width - left - right, height - top - bottom

    def sx(x: float) -> float:
        return left + plot_w * x / x_max

    def sy(y: float) -> float:
        return top + plot_h * (1 - y / y_max)

    parts = [f'<svg width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg" font-size="11">']
    parts.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>')
    for k in range(5):
        y = y_max * k / 4
        label = f"{y:,.0f}" if y_max >= 20 else f"{y:.2g}"
        parts.append(f'<text x="{left - 4}" y="{sy(y) + 4:.1f}" text-anchor="end">{label}</text>')
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{sy(y):.1f}" y2="{sy(y):.1f}" stroke="#eee"/>')
        x = x_max * k / 4
        parts.append(f'<text x="{sx(x):.1f}" y="{height - 10}" text-anchor="middle">{x:.0f} s</text>')
    for at, label in marks:
        parts.append(
            f'<line x1="{sx(at):.1f}" x2="{sx(at):.1f}" y1="{top}" y2="{top + plot_h}" stroke="#bbb" '
            f'stroke-dasharray="3,3"><title>{html.escape(label)} at {at:.0f} s</title></line>'
        )
    for index, (name, values) in enumerate(series.items()):
        colour = _COLOURS[index % len(_COLOURS)]
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in values)
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{path}"/>')
        parts.append(
            f'<text x="{left + plot_w + 8}" y="{top + 14 * (index + 1)}" fill="{colour}">{html.escape(name)}</text>'
        )
    parts.append(f'<text x="{left}" y="{top - 8}">{html.escape(unit)}</text></svg>')
    return f"<h3>{html.escape(title)}</h3>" + "".join(parts)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def render_html(report: dict[str, Any]) -> str:
    """The page: the summary, four time series with the faults marked, and the accounting tables."""
    series = report["series"]
    marks = [(h["t"], h["kind"]) for h in report["happenings"] if h["kind"] != "agents started"]

    def line(key: str) -> list[tuple[float, float]]:
        return [(p["t"], float(p[key])) for p in series if p.get(key) is not None]

    flows = {"made": line("made"), "accepted": line("accepted")}
    flows |= {
        k.removeprefix("delivered_"): line(k) for k in (series[0] if series else {}) if k.startswith("delivered_")
    }
    queues: dict[str, list[tuple[float, float]]] = {"edge spools": line("spooled")}
    for name in series[0]["queues"] if series else []:
        queues[f"{name} queue"] = [(p["t"], float(p["queues"].get(name, 0))) for p in series]
    latency = {
        q: [(p["t"], p["latency"][q]) for p in series if p["latency"].get(q) is not None] for q in ("p50", "p95", "p99")
    }
    memory: dict[str, list[tuple[float, float]]] = {}
    for point in series:
        for group, mb in point["rss_mb"].items():
            memory.setdefault(group, []).append((point["t"], mb))
    totals = report["totals"]
    accounting = [
        ("made", totals["made"]),
        ("accepted", totals["accepted"]),
        ("answered duplicate (resent)", totals["duplicate_at_api"]),
        ("rejected", totals["rejected"]),
        ("dead-lettered", totals["dead_lettered"]),
        *((f"delivered to {d}", n) for d, n in totals["delivered"].items()),
        *((f"lost from {d}", n) for d, n in totals["lost"].items()),
        *((f"redelivered to {d} (deduped)", n) for d, n in totals["raw_duplicates"].items()),
        *((f"written twice for {d}", n) for d, n in totals["duplicates_after_dedupe"].items()),
    ]
    stages = [
        (stage, _secs(p["p50"]), _secs(p["p95"]), _secs(p["p99"]), _secs(p["max"]), p["count"])
        for stage, p in report["latency_secs"].items()
    ]
    happenings = [
        (h["t"], h["kind"], ", ".join(f"{k}={v}" for k, v in h.items() if k not in ("t", "kind")))
        for h in report["happenings"]
    ]
    dead = [
        (d["stage"], d["device_id"], d["event_id"], d["receive_count"], ", ".join(d["delivered_anyway_to"]) or "no")
        for d in report["dead_letters"]
    ]
    rejected = [(r["device_id"], r["event_id"], r["code"], r["reason"]) for r in report["rejected"]]
    aws = sorted(report["faults"]["aws"].items())
    verdict = "OK" if report["ok"] else "FAILED: " + "; ".join(report["problems"])
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>anfang local soak</title><style>"
        "body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;font-size:13px}pre{font-size:12px}"
        "</style></head><body><h1>anfang local soak</h1>"
        f"<p><b>{html.escape(verdict)}</b> — started {html.escape(report['started_at'])}, "
        f"{report['elapsed_secs']:.0f} s</p><pre>{html.escape(summary_text(report))}</pre>"
        + _chart("Events (cumulative)", flows, marks, "events")
        + _chart("Backlog: edge spools and queue depth", queues, marks, "messages")
        + _chart("End-to-end latency of the events delivered in each interval", latency, marks, "seconds")
        + _chart("Memory (resident set, all processes of each kind)", memory, marks, "MiB")
        + "<h2>Accounting</h2>"
        + _table(("", "events"), accounting)
        + "<h2>Latency per stage</h2>"
        + _table(("stage", "p50", "p95", "p99", "max", "events"), stages)
        + "<h2>Peak resident set per process</h2>"
        + _table(("process", "MiB"), sorted(report["peak_rss_mb"].items()))
        + "<h2>Faults and what happened</h2>"
        + _table(("t (s)", "what", "detail"), happenings)
        + "<h3>AWS errors injected (after them, botocore's retries; only exhausted ones reach our code)</h3>"
        + _table(("service and error", "count"), aws)
        + "<h2>Dead letters</h2>"
        + (_table(("stage", "device", "event", "receives", "delivered anyway to"), dead) if dead else "<p>none</p>")
        + "<h2>Rejected</h2>"
        + (_table(("device", "event", "code", "reason"), rejected) if rejected else "<p>none</p>")
        + "</body></html>"
    )
