"""The town's CloudWatch dashboard, as data: its panels and their series, one place for two readers.

``dashboard_body()`` is the ``DashboardBody`` of ``TownDashboard`` in template.yaml (an ``Fn::Sub`` string; a
contract test fails when the template differs from it: ``python -m anfang_ops.dashboard`` prints it), and
``anfang status`` (:mod:`anfang_ops.status`) reads the same series through the CloudWatch and SQS APIs, so the
terminal and the console show the same numbers.

Our own metrics (namespace ``anfang``, CloudWatch EMF from the functions) are read with ``SEARCH`` expressions
over one dimension set each (``{anfang,service,town}``: the API's request counters; with ``reason``: its
per-reason counters; ``{anfang,service}``: the pipeline functions', which do not carry the town yet, so towns
sharing an account and region share those lines); AWS's metrics (SQS, Lambda) are named exactly.

>>> [panel.title for panel in PANELS][:2]
['Events at the API', 'Rejected at the API, by code']
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Final

from anfang.contracts.destinations import DESTINATION_INFO

__all__ = ["PANELS", "Panel", "Series", "dashboard_body"]

PERIOD_SECS: Final = 300


@dataclass(frozen=True)
class Series:
    """One line of a panel. ``where``: dimension filters (values may hold ``${...}`` of the template)."""

    label: str
    metric: str
    namespace: str = "anfang"
    where: tuple[tuple[str, str], ...] = ()
    stat: str = "Sum"
    split_by: str | None = None  # one line per value of this dimension (rejections by reason)
    schema: tuple[str, ...] = ()  # our metrics: the dimension names of the set to read (SEARCH's {namespace,...})


@dataclass(frozen=True)
class Panel:
    title: str
    series: tuple[Series, ...]


_TOWN = (("town", "${TownCode}"),)
_API = (("town", "${TownCode}"), ("service", "api"))
_API_COUNTERS = ("service", "town")  # the API's request metric set
_API_REASONS = ("reason", "service", "town")  # its per-reason counters (rejected is counted per reason only)
_ANALYSE = (("service", "analyse"),)
# (label, queue logical id, dead-letter queue logical id)
QUEUES: Final = (
    ("analyse", "AnalyseQueue", "AnalyseDeadLetterQueue"),
    ("process", "ProcessQueue", "ProcessDeadLetterQueue"),
    *(
        (name, info.queue_output.removesuffix("Url"), info.dead_letter_output.removesuffix("Url"))
        for name, info in DESTINATION_INFO.items()
    ),
)
FUNCTIONS: Final = ("ApiFunction", "AnalyseFunction", "ProcessFunction", "HealthcodeImportFunction")

PANELS: Final = (
    Panel(
        "Events at the API",
        (
            *(Series(name, name, where=_API, schema=_API_COUNTERS) for name in ("received", "accepted", "duplicate")),
            Series("rejected", "rejected", where=_API, schema=_API_REASONS),
        ),
    ),
    Panel(
        "Rejected at the API, by code",
        (Series("rejected", "rejected", where=_API, split_by="reason", schema=_API_REASONS),),
    ),
    Panel(
        "Images analysed, faces blurred",
        (
            Series("images analysed", "ImagesAnalysed", where=_ANALYSE, schema=("service",)),
            Series("faces blurred", "FacesBlurred", where=_ANALYSE, schema=("service",)),
            Series("images unreadable", "ImagesErrored", where=_ANALYSE, schema=("service",)),
        ),
    ),
    Panel(
        "Delivered per destination",
        tuple(
            Series(name, f"sent_{name}", where=(("service", "process"),), schema=("service",))
            for name in DESTINATION_INFO
        ),
    ),
    Panel(
        "Age of the oldest message (s)",
        tuple(
            Series(
                name, "ApproximateAgeOfOldestMessage", "AWS/SQS", (("QueueName", f"${{{queue}.QueueName}}"),), "Maximum"
            )
            for name, queue, _ in QUEUES
        ),
    ),
    Panel(
        "Dead letters",
        tuple(
            Series(
                name,
                "ApproximateNumberOfMessagesVisible",
                "AWS/SQS",
                (("QueueName", f"${{{dlq}.QueueName}}"),),
                "Maximum",
            )
            for name, _, dlq in QUEUES
        )
        + (
            Series(
                "healthcode_import",
                "ApproximateNumberOfMessagesVisible",
                "AWS/SQS",
                (("QueueName", "${ImportDeadLetterQueue.QueueName}"),),
                "Maximum",
            ),
        ),
    ),
    Panel(
        "Function errors",
        tuple(
            Series(f.removesuffix("Function").lower(), "Errors", "AWS/Lambda", (("FunctionName", f"${{{f}}}"),))
            for f in FUNCTIONS
        ),
    ),
    Panel(
        "Function duration p95 (ms)",
        tuple(
            Series(
                f.removesuffix("Function").lower(), "Duration", "AWS/Lambda", (("FunctionName", f"${{{f}}}"),), "p95"
            )
            for f in FUNCTIONS
        ),
    ),
    Panel(
        "Devices seen in the last hour",
        (Series("devices seen", "DevicesSeen", where=_TOWN, stat="Maximum", schema=("town",)),),
    ),
)


def _search(series: Series) -> str:
    terms = " ".join(f'{k}="{v}"' for k, v in (("MetricName", series.metric), *series.where))
    schema = ",".join((series.namespace, *sorted(series.schema)))
    return f"SEARCH('{{{schema}}} {terms}', '{series.stat}', {PERIOD_SECS})"


def _metrics(panel: Panel) -> list[list[object]]:
    rows: list[list[object]] = []
    for n, series in enumerate(panel.series):
        if series.namespace == "anfang":
            expression = _search(series) if series.split_by else f"SUM({_search(series)})"
            options: dict[str, object] = {"expression": expression, "id": f"m{n}"}
            if not series.split_by:
                options["label"] = series.label
            rows.append([options])
        else:
            dims = [part for pair in series.where for part in pair]
            rows.append([series.namespace, series.metric, *dims, {"stat": series.stat, "label": series.label}])
    return rows


def dashboard_body() -> str:
    """The dashboard's JSON with the template's ``${...}`` placeholders (for ``Fn::Sub``)."""
    widgets = []
    for index, panel in enumerate(PANELS):
        widgets.append(
            {
                "type": "metric",
                "x": (index % 3) * 8,
                "y": (index // 3) * 6,
                "width": 8,
                "height": 6,
                "properties": {
                    "title": panel.title,
                    "region": "${AWS::Region}",
                    "view": "timeSeries",
                    "stacked": False,
                    "period": PERIOD_SECS,
                    "metrics": _metrics(panel),
                },
            }
        )
    return json.dumps({"widgets": widgets}, separators=(",", ":"))


if __name__ == "__main__":
    print(dashboard_body())
