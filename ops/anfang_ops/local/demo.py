"""``anfang local demo``: the whole job on one machine.

The local stack comes up; simulated sites register their devices; real edge agents (``anfang-edge run`` with
the simulator source and the fixture images) push signed events over HTTP; the health commission uploads a
snapshot through its presigned URL and sends deltas; both destination queues are drained into
``<out>/<destination>.ndjson`` as records arrive. It ends with a summary and ``<out>/report.html``, and
fails (exit 1) if an accepted event did not reach both destinations or anything reached a dead-letter queue.
What the functions log goes to ``<out>/functions.log``.

Each run starts from a clean state of its own: what an earlier run left in ``<out>`` (agents' spools and keys,
the local stack's state, records, report) is removed first, so a second ``make demo`` counts only its own
events. A folder holding anything the demo did not write is refused rather than emptied.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import html
import json
import math
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import requests

from anfang.aws.registry import DeviceRegistry, Site
from anfang.contracts import SITE_TYPES, Signer, generate_private_key
from anfang.contracts.destinations import DESTINATION_INFO, DESTINATIONS
from anfang.contracts.examples import example_population
from anfang_ops.towns import TownConfig, load_towns

from .agents import EdgeAgent, provision_agent
from .pollers import StageTiming
from .stack import LocalStack

__all__ = ["DemoError", "DemoResult", "run_demo"]

DEVICES_PER_SITE: Final = 2
#: What a run writes in its ``out`` folder, and so what the next run may remove.
DEMO_ENTRIES: Final = frozenset(
    {"agents", "local", "functions.log", "report.html", *(f"{d}.ndjson" for d in DESTINATIONS)}
)
DEMO_TOWN: Final = "gaoqing-tianzhen"
_DLQ_OUTPUTS: Final = {
    "analyse": "AnalyseDeadLetterQueueUrl",
    "process": "ProcessDeadLetterQueueUrl",
    "gov_cloud": "GovCloudDeadLetterQueueUrl",
    "police_video": "PoliceVideoDeadLetterQueueUrl",
    "healthcode_import": "ImportDeadLetterQueueUrl",
}


class DemoError(Exception):
    """The demo cannot start (its output folder holds something it did not write)."""


def _fresh_out(out: Path) -> None:
    """Remove what an earlier run left in ``out``; refuse a folder holding anything else."""
    out.mkdir(parents=True, exist_ok=True)
    entries = list(out.iterdir())
    strangers = sorted(p.name for p in entries if p.name not in DEMO_ENTRIES)
    if strangers:
        raise DemoError(f"{out} holds {', '.join(strangers[:3])}, which the demo did not write; choose another --out")
    for path in entries:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


@dataclass
class DemoResult:
    """What the demo measured."""

    events: int
    sent: int = 0
    accepted: int = 0
    duplicate: int = 0
    rejected: int = 0
    delivered: dict[str, int] = field(default_factory=dict)
    dead_letters: dict[str, int] = field(default_factory=dict)
    latencies_secs: list[float] = field(default_factory=list)
    #: per stage (edge → API, analyse, process, delivery), the seconds each event spent there
    stage_secs: dict[str, list[float]] = field(default_factory=dict)
    snapshot: dict[str, Any] = field(default_factory=dict)
    elapsed_secs: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def percentile(self, q: float, values: list[float] | None = None) -> float | None:
        values = self.latencies_secs if values is None else values
        if not values:
            return None
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]

    def summary(self) -> str:
        p50, p95 = self.percentile(0.5), self.percentile(0.95)
        stages = [
            (f"  {name} p50 / p95", f"{self.percentile(0.5, v) or 0:.2f} s / {self.percentile(0.95, v) or 0:.2f} s")
            for name, v in self.stage_secs.items()
        ]
        rows = [
            ("events sent by the edge agents", self.sent),
            ("accepted by the API", self.accepted),
            ("duplicate", self.duplicate),
            ("rejected", self.rejected),
            *((f"delivered to {name}", count) for name, count in self.delivered.items()),
            *((f"dead letters in {name}", count) for name, count in self.dead_letters.items()),
            (
                "health-code snapshot",
                f"{self.snapshot.get('status', '-')} ({self.snapshot.get('imported', 0)} records)",
            ),
            ("end-to-end latency p50 / p95", f"{p50 or 0:.2f} s / {p95 or 0:.2f} s"),
            *stages,
            ("elapsed", f"{self.elapsed_secs:.0f} s"),
        ]
        width = max(len(name) for name, _ in rows)
        lines = [f"  {name:<{width}}  {value}" for name, value in rows]
        verdict = (
            "OK: every accepted event reached both destinations" if self.ok else "FAILED: " + "; ".join(self.problems)
        )
        return "\n".join(["anfang local demo", *lines, verdict])


class _Progress:
    def __init__(self, total: int, stream: Any) -> None:
        self.total = max(total, 1)
        self.stream = stream
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self._last = 0.0

    def show(self, done: int, note: str) -> None:
        now = time.monotonic()
        if not self.tty and now - self._last < 5:
            return
        self._last = now
        width = 30
        filled = int(width * min(done, self.total) / self.total)
        line = f"[{'#' * filled}{'.' * (width - filled)}] {done}/{self.total} delivered to both  {note}"
        self.stream.write(("\r" + line) if self.tty else (line + "\n"))
        self.stream.flush()

    def end(self) -> None:
        if self.tty:
            self.stream.write("\n")


def _demo_town(root: Path) -> TownConfig:
    towns = load_towns(root / "infra" / "towns")
    return next((t for t in towns if t.env == DEMO_TOWN), towns[0])


def _signed(signer: Signer, method: str, url: str, path: str, payload: Any) -> requests.Response:
    body = b"" if payload is None else json.dumps(payload).encode()
    headers = signer.sign(method, path, body)
    return requests.request(method, url + path, data=body, headers=headers, timeout=30)


def _health_commission(stack: LocalStack, registry: DeviceRegistry, result: DemoResult) -> None:
    """The commission uploads a snapshot of the simulated residents and then sends a few deltas."""

    assert stack.info is not None
    private = generate_private_key()
    info = registry.add_key(private.public_key(), role="health_commission", name="county health commission")
    signer = Signer(info.key_id, private)
    api = stack.info.api_url
    people = example_population()  # the residents the simulated devices see
    statuses = ("green", "green", "green", "yellow", "red")
    as_of = dt.datetime.now(dt.UTC).isoformat()
    lines = [
        json.dumps({"id_number": p["id_number"], "status": statuses[n % len(statuses)], "updated_at": as_of})
        for n, p in enumerate(people)
    ]
    file = "\n".join(lines).encode()
    declared = {"size_bytes": len(file), "sha256": hashlib.sha256(file).hexdigest()}  # the URL is bound to them
    created = _signed(signer, "POST", api, "/v1/health-codes/snapshots", declared)
    created.raise_for_status()
    upload = created.json()
    put = requests.put(upload["upload_url"], data=file, headers=upload["upload_headers"], timeout=30)
    put.raise_for_status()
    deadline = time.monotonic() + 60
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = _signed(signer, "GET", api, f"/v1/health-codes/snapshots/{upload['snapshot_id']}", None).json()
        if status.get("status") in ("imported", "failed"):
            break
        time.sleep(0.5)
    result.snapshot = {"status": status.get("status"), **status.get("counts", {})}
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)).isoformat()
    deltas = [{"id_number": p["id_number"], "status": "yellow", "updated_at": later} for p in people[:3]]
    _signed(signer, "POST", api, "/v1/health-codes", {"deltas": deltas}).raise_for_status()


def _start_agents(
    stack: LocalStack, registry: DeviceRegistry, out: Path, events: int, devices: int, fixtures: Path
) -> list[EdgeAgent]:
    assert stack.info is not None
    town = stack.town.town.code
    sites = max(1, math.ceil(devices / DEVICES_PER_SITE))
    agents = []
    left_devices, left_events = devices, events
    for index in range(sites):
        count = min(DEVICES_PER_SITE, left_devices)
        share = left_events // (sites - index)
        left_devices, left_events = left_devices - count, left_events - share
        site_type = SITE_TYPES[index % len(SITE_TYPES)]
        prefix = f"{town}{index:02d}1320"
        site = Site(site_id=f"demo-{index + 1:02d}", site_type=site_type, name=f"demo site {index + 1}")
        agent = provision_agent(
            registry,
            site,
            [f"{prefix}{serial:06d}" for serial in range(1, count + 1)],
            out / "agents" / site.site_id,
            api_url=stack.info.api_url,
            source=f'type = "simulator"\ndevices = {count}\ndevice_id_prefix = "{prefix}"\n'
            f'rate_per_sec = 100.0\nmax_events = {share}\nseed = {index + 1}\nfixtures_dir = "{fixtures}"\n',
        )
        agent.start()
        agents.append(agent)
    return agents


def _agent_status(agent: EdgeAgent) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "anfang_edge.cli", "status", "--json", "--config", str(agent.config)],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    return json.loads(out.stdout) if out.returncode == 0 and out.stdout.strip() else {}


def _drain_round(sqs: Any, urls: dict[str, str], files: dict[str, Any], arrivals: dict[str, dict[str, Any]]) -> None:
    for destination, url in urls.items():
        answer = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0, AttributeNames=["SentTimestamp"]
        )
        messages = answer.get("Messages", [])
        now = dt.datetime.now(dt.UTC)
        for message in messages:
            record = json.loads(message["Body"])
            files[destination].write(message["Body"] + "\n")
            # an event is (device_id, event_id): event ids are unique per device only
            seen = arrivals.setdefault(f"{record['device_id']} {record['event_id']}", {})
            seen[destination] = record
            seen.setdefault("_arrived", {})[destination] = now
            sent = int(message.get("Attributes", {}).get("SentTimestamp", now.timestamp() * 1000)) / 1000
            seen.setdefault("_delivery", {})[destination] = max(0.0, now.timestamp() - sent)
        if messages:
            sqs.delete_message_batch(
                QueueUrl=url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)],
            )


def run_demo(
    root: Path,
    out: Path,
    *,
    events: int = 300,
    devices: int = 4,
    timeout_secs: float = 170.0,
    stream: Any = sys.stderr,
) -> DemoResult:
    """Run the demo; see the module docstring. ``out`` receives the NDJSON files and the report."""
    import boto3  # noqa: PLC0415

    started = time.monotonic()
    _fresh_out(out)
    result = DemoResult(events=events)
    fixtures = root.parent / "shared" / "fixtures" / "images"
    stream.write(f"anfang local demo: {events} events from {devices} simulated devices\n")
    # What the functions print (JSON logs, EMF metrics: CloudWatch's input on Lambda) and the local API's
    # request lines go to functions.log, as CloudWatch Logs would hold them; the progress stays on ``stream``.
    with (
        (out / "functions.log").open("w", encoding="utf-8") as log,
        contextlib.redirect_stdout(log),
        contextlib.redirect_stderr(log),
        LocalStack(root, out / "local", town=_demo_town(root)) as stack,
    ):
        assert stack.info is not None
        session = boto3.session.Session(region_name=stack.info.region)

        def client(name: str) -> Any:
            return session.client(name, endpoint_url=stack.info.aws_endpoint_url)  # type: ignore[union-attr]

        outputs = stack.info.outputs
        registry = DeviceRegistry(
            client("dynamodb"), outputs["DevicesTableName"], town_code=stack.info.town, cache_ttl_secs=0
        )
        stream.write(f"  local stack up: api {stack.info.api_url}, aws {stack.info.aws_endpoint_url}\n")
        _health_commission(stack, registry, result)
        stream.write(f"  health commission: snapshot {result.snapshot.get('status')}, 3 deltas\n")
        agents = _start_agents(stack, registry, out, events, devices, fixtures)
        stream.write(f"  {len(agents)} edge agents started\n")
        sqs = client("sqs")
        urls: dict[str, str] = {d: outputs[DESTINATION_INFO[d].queue_output] for d in DESTINATIONS}
        files: dict[str, Any] = {d: (out / f"{d}.ndjson").open("w", encoding="utf-8") for d in DESTINATIONS}
        arrivals: dict[str, dict[str, Any]] = {}
        try:
            _deliver(sqs, urls, files, arrivals, agents, events, timeout_secs, _Progress(events, stream))
            _tally(result, agents)
            time.sleep(1)  # what the last agent batch set off is on its way: one more round
            _drain_round(sqs, urls, files, arrivals)
        finally:
            for handle in files.values():
                handle.close()
        result.delivered = {d: sum(1 for seen in arrivals.values() if d in seen) for d in DESTINATIONS}
        for queue, key in _DLQ_OUTPUTS.items():
            attributes = sqs.get_queue_attributes(QueueUrl=outputs[key], AttributeNames=["ApproximateNumberOfMessages"])
            result.dead_letters[queue] = int(attributes["Attributes"]["ApproximateNumberOfMessages"])
        for seen in arrivals.values():
            record = next(v for k, v in seen.items() if k in DESTINATIONS)
            captured = dt.datetime.fromisoformat(record["captured_at"])
            result.latencies_secs.append((max(seen["_arrived"].values()) - captured).total_seconds())
        result.stage_secs = _stages(arrivals, stack.timings)
        result.elapsed_secs = time.monotonic() - started
        _check(result, events)
        _report(out / "report.html", arrivals, client("s3"), result)
    return result


def _stages(arrivals: dict[str, dict[str, Any]], timings: list[StageTiming]) -> dict[str, list[float]]:
    """Seconds per delivered event in each stage: capture → API receipt (the edge's spool and upload), the analyse
    and process functions (queue wait + the invocation that handled it, summed over retries), and the destination
    queue (SNS publish → drained by the demo)."""
    delivered = {tuple(key.split(" ", 1)) for key in arrivals}
    spent: dict[str, dict[tuple[str, str], float]] = {"analyse": {}, "process": {}}
    for timing in timings:
        stage = {"AnalyseFunction": "analyse", "ProcessFunction": "process"}.get(timing.function)
        if stage is not None and timing.key in delivered:
            spent[stage][timing.key] = spent[stage].get(timing.key, 0.0) + timing.queued_secs + timing.run_secs
    edge = []
    for seen in arrivals.values():
        record = next(v for k, v in seen.items() if k in DESTINATIONS)
        received = dt.datetime.fromisoformat(record["received_at"])
        edge.append((received - dt.datetime.fromisoformat(record["captured_at"])).total_seconds())
    return {
        "edge → API": edge,
        "analyse (events with images)": list(spent["analyse"].values()),
        "process": list(spent["process"].values()),
        "delivery": [max(seen["_delivery"].values()) for seen in arrivals.values()],
    }


def _deliver(
    sqs: Any,
    urls: dict[str, str],
    files: dict[str, Any],
    arrivals: dict[str, dict[str, Any]],
    agents: list[EdgeAgent],
    events: int,
    timeout_secs: float,
    progress: _Progress,
) -> None:
    """Drain the destination queues until the agents are done and every accepted event arrived; stop them."""
    statuses: dict[str, dict[str, Any]] = {}
    try:
        deadline = time.monotonic() + timeout_secs
        next_status = 0.0
        while time.monotonic() < deadline:
            _drain_round(sqs, urls, files, arrivals)
            both = sum(1 for seen in arrivals.values() if all(d in seen for d in DESTINATIONS))
            if time.monotonic() >= next_status:
                statuses = {agent.name: _agent_status(agent) for agent in agents}
                next_status = time.monotonic() + 2
            counters = [s.get("counters", {}) for s in statuses.values()]
            accepted = sum(c.get("sent", 0) for c in counters)
            spooled = sum(c.get("spooled", 0) for c in counters)
            idle = all(s.get("depth", 1) == 0 for s in statuses.values())
            progress.show(both, f"accepted {accepted}")
            if spooled >= events and idle and both >= accepted:
                break
            time.sleep(0.2)
    finally:
        progress.end()
        for agent in agents:
            agent.stop()


def _tally(result: DemoResult, agents: list[EdgeAgent]) -> None:
    for agent in agents:
        counters = _agent_status(agent).get("counters", {})
        result.accepted += counters.get("sent", 0)
        result.duplicate += counters.get("duplicate_at_api", 0)
        result.rejected += counters.get("rejected", 0)
    result.sent = result.accepted + result.duplicate + result.rejected


def _check(result: DemoResult, events: int) -> None:
    if result.sent < events:
        result.problems.append(f"the agents sent {result.sent} of {events} events")
    for destination, count in result.delivered.items():
        if count < result.accepted:
            result.problems.append(f"{destination} received {count} of {result.accepted} accepted events")
    dead = {k: v for k, v in result.dead_letters.items() if v}
    if dead:
        result.problems.append(f"dead letters: {dead}")
    if result.snapshot.get("status") != "imported":
        result.problems.append(f"health-code snapshot {result.snapshot.get('status')}")


def _image_uri(s3: Any, ref: str) -> str | None:
    if not ref.startswith("s3://"):
        return None
    bucket, _, key = ref[5:].partition("/")
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except Exception:  # an expired or missing object is shown as missing, not fatal to the report
        return None
    return "data:image/jpeg;base64," + base64.b64encode(body).decode("ascii")


def _image_kind(ref: str) -> str:
    if "/thumbnail_faces_blurred/" in ref:
        return "thumbnail, faces blurred"
    return "thumbnail" if "/thumbnail/" in ref else "original"


def _report(path: Path, arrivals: dict[str, dict[str, Any]], s3: Any, result: DemoResult) -> None:
    """A self-contained HTML page: for a few events, what each destination got, images side by side."""
    chosen: list[tuple[str, dict[str, Any]]] = []
    by_type: dict[str, int] = {}
    for event_key, seen in sorted(arrivals.items()):
        if not all(d in seen for d in DESTINATIONS):
            continue
        event_type = seen["police_video"]["event_type"]
        if by_type.get(event_type, 0) < (2 if event_type == "face_capture" else 1):
            by_type[event_type] = by_type.get(event_type, 0) + 1
            chosen.append((event_key, seen))
    sections = []
    for event_key, seen in chosen:
        cells = []
        for destination in DESTINATIONS:
            record = seen[destination]
            images = "".join(
                f'<figure><img src="{uri}" alt="{html.escape(image["role"])}">'
                f"<figcaption>{html.escape(image['role'])}: {_image_kind(image['ref'])}</figcaption></figure>"
                for image in record.get("images", [])
                if (uri := _image_uri(s3, image["ref"])) is not None
            )
            body = html.escape(json.dumps(record, ensure_ascii=False, indent=2))
            cells.append(f"<td><h3>{destination}</h3>{images}<pre>{body}</pre></td>")
        title = html.escape(f"{seen['police_video']['event_type']} {event_key}")
        sections.append(f"<h2>{title}</h2><table><tr>{''.join(cells)}</tr></table>")
    summary = html.escape(result.summary())
    ids = "".join(f"<li><code>{html.escape(e)}</code></li>" for e in sorted(arrivals))
    path.write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>anfang local demo</title><style>"
        "body{font-family:sans-serif;margin:2em}td{vertical-align:top;width:50%}pre{font-size:11px;"
        "white-space:pre-wrap}img{max-width:320px;border:1px solid #ccc}figure{display:inline-block;margin:4px}"
        "</style></head><body><h1>anfang local demo</h1>"
        f"<pre>{summary}</pre><p>gov_cloud gets face-blurred thumbnails only; police_video gets the originals.</p>"
        f"{''.join(sections)}<h2>Every event delivered ({len(arrivals)})</h2><ul>{ids}</ul></body></html>",
        encoding="utf-8",
    )
