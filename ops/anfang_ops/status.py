"""``anfang status``: the town dashboard's panels in the terminal, a total and a sparkline per series.

It reads the series of :data:`anfang_ops.dashboard.PANELS`: our own metrics with ``ListMetrics`` and
``GetMetricData`` (5-minute sums over the last ``minutes``), dead-letter depths straight from SQS (the number
now, which is what an operator acts on), and AWS's SQS and Lambda metrics where CloudWatch has them (a real
town; the local stack has none, shown as ``-``). AWS calls: one ListMetrics per metric name, one
GetMetricData per 500 series, one GetQueueAttributes per dead-letter queue, one DescribeStackResources.

>>> print(render(collect(cloudwatch, sqs, cloudformation, "anfang-37032201")))  # doctest: +SKIP
Events at the API
  received        300  ▁▁▁▁▁▁▁▁▁▂█▅
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any, Final

from anfang_ops.dashboard import PANELS, PERIOD_SECS, Series
from anfang_ops.stackinfo import stack_outputs

__all__ = ["PanelStatus", "SeriesStatus", "collect", "render", "sparkline"]

BARS: Final = "▁▂▃▄▅▆▇█"


@dataclass
class SeriesStatus:
    label: str
    total: float | None  # None: no data for it
    points: list[float] = field(default_factory=list)
    stat: str = "Sum"


@dataclass
class PanelStatus:
    title: str
    series: list[SeriesStatus]


def sparkline(points: list[float]) -> str:
    """One character per point, scaled to the largest."""
    top = max(points, default=0.0)
    if top <= 0:
        return BARS[0] * len(points)
    return "".join(BARS[min(len(BARS) - 1, int(p / top * (len(BARS) - 1) + 0.5))] for p in points)


def _names(cloudformation: Any, stack_name: str, outputs: dict[str, str]) -> dict[str, str]:
    """What the dashboard's placeholders stand for in this stack."""
    names = {"TownCode": outputs.get("TownCode", "")}
    try:
        resources = cloudformation.describe_stack_resources(StackName=stack_name)["StackResources"]
    except Exception:  # names are a nicety: without them the AWS/* series show "-"
        resources = []
    for resource in resources:
        if "LogicalResourceId" in resource and "PhysicalResourceId" in resource:
            names[resource["LogicalResourceId"]] = resource["PhysicalResourceId"]
    for key, value in outputs.items():
        if key.endswith("QueueUrl"):
            names[key.removesuffix("Url") + ".QueueName"] = value.rsplit("/", 1)[-1]
    return names


def _resolve(value: str, names: dict[str, str]) -> str | None:
    missing = False

    def sub(match: re.Match[str]) -> str:
        nonlocal missing
        if match.group(1) not in names:
            missing = True
            return ""
        return names[match.group(1)]

    text = re.sub(r"\$\{([^}]+)\}", sub, value)
    return None if missing else text


def _list_metrics(cloudwatch: Any, series: Series) -> list[dict[str, Any]]:
    """Each metric (name and dimension set) once (moto lists a metric once per PutMetricData)."""
    found: dict[tuple[str, ...], dict[str, Any]] = {}
    for page in cloudwatch.get_paginator("list_metrics").paginate(Namespace=series.namespace, MetricName=series.metric):
        for metric in page.get("Metrics", []):
            key = (metric["MetricName"], *sorted(f"{d['Name']}={d['Value']}" for d in metric.get("Dimensions", [])))
            found[key] = metric
    return list(found.values())


def _matches(metric: dict[str, Any], series: Series, where: dict[str, str | None]) -> bool:
    """The metric has the filtered values and no dimension outside the series' set. ``town`` is let through:
    the local stack runs every function in one process, where Powertools shares default dimensions between
    ``Metrics`` instances, so the pipeline's metrics carry the API's town there."""
    dims = {d["Name"]: d["Value"] for d in metric.get("Dimensions", [])}
    if series.schema and not set(dims) <= {*series.schema, "town"}:
        return False
    if series.split_by and series.split_by not in dims:
        return False
    return all(dims.get(k) == v for k, v in where.items())


def _depth(sqs: Any, outputs: dict[str, str], queue: str | None) -> float | None:
    url = next((u for k, u in outputs.items() if k.endswith("QueueUrl") and u.endswith(f"/{queue}")), None)
    if url is None:
        return None
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
    return float(attributes["Attributes"]["ApproximateNumberOfMessages"])


def _totals(panels: list[PanelStatus]) -> None:
    for panel in panels:
        for row in panel.series:
            if row.points:
                row.total = max(row.points) if row.stat in ("Maximum", "p95") else sum(row.points)


def collect(
    cloudwatch: Any,
    sqs: Any,
    cloudformation: Any,
    stack_name: str,
    *,
    minutes: int = 60,
    now: dt.datetime | None = None,
) -> list[PanelStatus]:
    """Every panel of the dashboard with its series' numbers over the last ``minutes``."""
    outputs = stack_outputs(cloudformation, stack_name)
    names = _names(cloudformation, stack_name, outputs)
    end = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0)
    start = end - dt.timedelta(minutes=minutes)
    buckets = max(1, minutes * 60 // PERIOD_SECS)
    queries: list[dict[str, Any]] = []
    slots: list[tuple[int, int, str]] = []  # (panel, series, label) per query
    panels: list[PanelStatus] = []
    for p, panel in enumerate(PANELS):
        status = PanelStatus(panel.title, [])
        panels.append(status)
        for series in panel.series:
            where = {k: _resolve(v, names) for k, v in series.where}
            if series.namespace == "AWS/SQS" and series.metric == "ApproximateNumberOfMessagesVisible":
                status.series.append(
                    SeriesStatus(series.label, _depth(sqs, outputs, where.get("QueueName")), [], "now")
                )
                continue
            if any(v is None for v in where.values()):
                status.series.append(SeriesStatus(series.label, None, [], series.stat))
                continue
            matching = [m for m in _list_metrics(cloudwatch, series) if _matches(m, series, where)]
            groups: dict[str, list[dict[str, Any]]] = {}
            for metric in matching:
                label = series.label
                if series.split_by:
                    dims = {d["Name"]: d["Value"] for d in metric.get("Dimensions", [])}
                    if series.split_by not in dims:
                        continue
                    label = dims[series.split_by]
                groups.setdefault(label, []).append(metric)
            if not groups:
                status.series.append(SeriesStatus(series.label, None, [], series.stat))
                continue
            for label, metrics in sorted(groups.items()):
                s = len(status.series)
                status.series.append(SeriesStatus(label, 0.0, [0.0] * buckets, series.stat))
                for metric in metrics:
                    queries.append(
                        {
                            "Id": f"q{len(queries)}",
                            "MetricStat": {"Metric": metric, "Period": PERIOD_SECS, "Stat": series.stat},
                            "ReturnData": True,
                        }
                    )
                    slots.append((p, s, label))
    for first in range(0, len(queries), 500):
        chunk = queries[first : first + 500]
        answer = cloudwatch.get_metric_data(MetricDataQueries=chunk, StartTime=start, EndTime=end)
        for result in answer.get("MetricDataResults", []):
            p, s, _label = slots[int(result["Id"][1:])]
            target = panels[p].series[s]
            for when, value in zip(result.get("Timestamps", []), result.get("Values", []), strict=False):
                index = int((when - start).total_seconds() // PERIOD_SECS)
                index = min(max(index, 0), buckets - 1)
                if target.stat == "Maximum":
                    target.points[index] = max(target.points[index], float(value))
                else:
                    target.points[index] += float(value)
    _totals(panels)
    return panels


def render(panels: list[PanelStatus], *, minutes: int = 60) -> str:
    """The panels as text: a block per panel, one row per series (value, sparkline of 5-minute points)."""
    lines = [f"last {minutes} minutes, 5-minute points (sums; maxima for ages and devices; dead letters: now)"]
    width = max((len(s.label) for p in panels for s in p.series), default=10)
    for panel in panels:
        lines.append(panel.title)
        for series in panel.series:
            value = "-" if series.total is None else f"{series.total:,.0f}"
            lines.append(f"  {series.label:<{width}}  {value:>9}  {sparkline(series.points)}".rstrip())
    return "\n".join(lines)
