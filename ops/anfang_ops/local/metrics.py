"""CloudWatch's metric extraction, locally: EMF lines the in-process functions print become metric data in moto.

On Lambda, CloudWatch Logs turns every Embedded Metric Format line a function prints into metrics. The local
functions print into this process's stdout, so the local stack wraps ``sys.stdout`` with
:class:`EmfForwarder`: every line passes through unchanged, and the EMF ones are also sent to the moto
server with ``PutMetricData`` from a background thread (never on the function's own time). ``anfang status``
then reads the same metrics from the local stack as from a town's.

>>> forwarder = EmfForwarder(sys.stdout, cloudwatch_client).start()
>>> sys.stdout = forwarder  # ... the functions run ...
>>> forwarder.stop()        # sends what is queued; restore sys.stdout yourself
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import queue
import threading
from typing import Any, TextIO

__all__ = ["EmfForwarder", "emf_metric_data"]

logger = logging.getLogger("anfang_ops.local")


def emf_metric_data(document: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    """``(namespace, MetricData)`` pairs of one EMF document, one datum per metric and dimension set."""
    aws = document.get("_aws", {})
    timestamp = dt.datetime.fromtimestamp(aws.get("Timestamp", 0) / 1000, dt.UTC)
    out = []
    for directive in aws.get("CloudWatchMetrics", []):
        data = []
        for dimension_set in directive.get("Dimensions", []) or [[]]:
            dimensions = [{"Name": name, "Value": str(document[name])} for name in dimension_set if name in document]
            for metric in directive.get("Metrics", []):
                raw = document.get(metric["Name"])
                values = raw if isinstance(raw, list) else [raw]
                values = [float(v) for v in values if isinstance(v, int | float)]
                if values:
                    data.append(
                        {
                            "MetricName": metric["Name"],
                            "Dimensions": dimensions,
                            "Values": values,
                            "Unit": metric.get("Unit", "None"),
                            "Timestamp": timestamp,
                        }
                    )
        if data:
            out.append((directive["Namespace"], data))
    return out


class EmfForwarder:
    """A text stream that writes through to ``inner`` and forwards EMF lines to CloudWatch."""

    def __init__(self, inner: TextIO, cloudwatch: Any) -> None:
        self.inner = inner
        self.cloudwatch = cloudwatch
        self._partial = ""
        self._lock = threading.Lock()
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="emf-forwarder", daemon=True)
        self.forwarded = 0

    def start(self) -> EmfForwarder:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    # the parts of TextIO that print() and logging use
    def write(self, text: str) -> int:
        with self._lock:
            self.inner.write(text)
            self._partial += text
            *lines, self._partial = self._partial.split("\n")
        for line in lines:
            if line.startswith("{") and '"_aws"' in line:
                self._queue.put(line)
        return len(text)

    def flush(self) -> None:
        self.inner.flush()

    def isatty(self) -> bool:
        return False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _run(self) -> None:
        while (line := self._queue.get()) is not None:
            try:
                for namespace, data in emf_metric_data(json.loads(line)):
                    for start in range(0, len(data), 1000):
                        self.cloudwatch.put_metric_data(Namespace=namespace, MetricData=data[start : start + 1000])
                    self.forwarded += len(data)
            except Exception:  # a metric lost locally is not worth a function's life
                logger.exception("could not forward an EMF line to the local CloudWatch")
