"""Counting what each stage does: received / accepted / duplicate / rejected / retry_later, with a bounded reason.

Domain code counts through the small :class:`StageMetrics` protocol; the function wiring hands it
:class:`PowertoolsMetrics` (CloudWatch EMF, ``town`` dimension), tests hand it :class:`MemoryMetrics`.
A ``reason`` is always an ``ErrorCode`` value, so its set is fixed by the contract.

>>> metrics = MemoryMetrics()
>>> metrics.count("rejected", 2, reason=ErrorCode.IMAGE_INVALID)
>>> metrics.counts[("rejected", "image_invalid")]
2
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any, Protocol

from aws_lambda_powertools.metrics import MetricUnit, single_metric
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import AmazonCloudWatchEMFProvider

from anfang.contracts.problems import ErrorCode

__all__ = ["MemoryMetrics", "PowertoolsMetrics", "StageMetrics", "emit_town_metrics"]


class StageMetrics(Protocol):
    def count(self, name: str, value: int = 1, *, reason: ErrorCode | None = None) -> None:
        """Add ``value`` to the counter ``name`` (and its ``reason``, when given)."""
        ...


class MemoryMetrics:
    """Counters in a dict, for tests and benchmarks."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str | None]] = Counter()

    def count(self, name: str, value: int = 1, *, reason: ErrorCode | None = None) -> None:
        if value:
            self.counts[(name, reason.value if reason is not None else None)] += value


class PowertoolsMetrics:
    """Counters as CloudWatch EMF through Powertools ``Metrics``; ``town`` is a dimension of every metric.

    Counters without a reason go into the request's metric set (flushed once per request by the app);
    counters with a reason are emitted as single metrics with the extra ``reason`` dimension.
    """

    def __init__(self, metrics: Any, *, namespace: str, town_code: str) -> None:
        self._metrics = metrics
        self._single_metric = single_metric
        self._unit = MetricUnit.Count
        self._namespace = namespace
        self._town = town_code
        metrics.set_default_dimensions(town=town_code)

    def count(self, name: str, value: int = 1, *, reason: ErrorCode | None = None) -> None:
        if not value:
            return
        if reason is None:
            self._metrics.add_metric(name=name, unit=self._unit, value=value)
            return
        with self._single_metric(
            name=name, unit=self._unit, value=value, namespace=self._namespace, default_dimensions={"town": self._town}
        ) as metric:
            metric.add_dimension(name="reason", value=reason.value)


def emit_town_metrics(values: Mapping[str, int], *, namespace: str, town_code: str) -> None:
    """Print ``values`` as one EMF document whose only dimension is ``town`` (gauges of the whole town, such as
    ``DevicesSeen``, which the dashboard reads from the ``{anfang,town}`` set; no ``service`` dimension, whatever
    ``POWERTOOLS_SERVICE_NAME`` says). Zeros are emitted too: a gauge of 0 is a reading."""
    provider = AmazonCloudWatchEMFProvider(namespace=namespace, service="")  # "": no service dimension
    provider.add_dimension(name="town", value=town_code)
    for name, value in sorted(values.items()):
        provider.add_metric(name=name, unit=MetricUnit.Count, value=value)
    provider.flush_metrics()
