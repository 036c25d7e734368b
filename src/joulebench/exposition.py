"""Prometheus text exposition through ``prometheus_client`` (the library vLLM uses).

An app that serves ``/metrics`` (the embedded server, the gateway) owns one :class:`Exposition`:
its own ``CollectorRegistry``, never the global one, so several servers run in one process.
Its state stays where it is kept (counters under a lock, a slotted dataclass); at every scrape
the registry calls ``collect``, which builds metric families from that state with the helpers
below, and ``generate_latest`` writes them. ``prometheus_client`` comes with the ``serve`` extra
and is imported only when a family is built, so the core imports without it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from joulebench.extras import require

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

#: What ``/metrics`` answers: the classic text format, which ``generate_latest`` writes.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: ``(labels, value)`` pairs of one family; the labels of a family share their names.
Samples = Iterable[tuple[Mapping[str, str], float]]


def _client() -> Any:
    return require("prometheus_client", "serve", "Prometheus /metrics")


def _core() -> Any:
    return require("prometheus_client.core", "serve", "Prometheus /metrics")


def _family(cls_name: str, name: str, help_text: str, samples: Samples) -> Metric:
    rows = [(dict(labels), float(value)) for labels, value in samples]
    names = sorted(rows[0][0]) if rows else []
    family = getattr(_core(), cls_name)(name, help_text, labels=names)
    for labels, value in rows:
        family.add_metric([str(labels[k]) for k in names], value)
    return family


def gauge(name: str, help_text: str, samples: Samples) -> Metric:
    return _family("GaugeMetricFamily", name, help_text, samples)


def counter(name: str, help_text: str, samples: Samples) -> Metric:
    """A counter; ``name`` ends in ``_total``, as its samples are named."""
    if not name.endswith("_total"):
        raise ValueError(f"a counter's name ends in _total: {name}")
    return _family("CounterMetricFamily", name, help_text, samples)


def summary(
    name: str, help_text: str, count: float, total: float, labels: Mapping[str, str]
) -> Metric:
    """``name_count`` and ``name_sum`` of one label set (no quantiles)."""
    names = sorted(labels)
    family = _core().SummaryMetricFamily(name, help_text, labels=names)
    family.add_metric([labels[k] for k in names], count_value=count, sum_value=total)
    return family


def histogram(
    name: str, help_text: str, bounds: Sequence[float], counts: Sequence[int], total: float
) -> Metric:
    """A histogram from per-bucket ``counts`` (one more than ``bounds``: the last is above the
    largest bound); the buckets are written cumulative, ``le`` as Prometheus formats floats."""
    go_float = require("prometheus_client.utils", "serve").floatToGoString
    cumulative, running = [], 0
    for bound, n in zip([*bounds, float("inf")], counts, strict=True):
        running += n
        cumulative.append((go_float(bound), running))
    return _core().HistogramMetricFamily(name, help_text, buckets=cumulative, sum_value=total)


class Exposition:
    """One app's registry: ``collect`` is called at every scrape for the families to write."""

    def __init__(self, collect: Callable[[], Iterable[Metric]]) -> None:
        client = _client()
        self._generate = client.generate_latest
        self.registry = _core().CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(collect))

    def render(self) -> str:
        text: bytes = self._generate(self.registry)
        return text.decode("utf-8")


class _Collector:
    """The registry's view of a ``collect`` function (a collector is anything with
    ``collect()``)."""

    def __init__(self, collect: Callable[[], Iterable[Metric]]) -> None:
        self._collect = collect

    def collect(self) -> Iterable[Metric]:
        return list(self._collect())


def render(families: Iterable[Metric]) -> str:
    """Families built once, written as one scrape (for a part rendered on its own)."""
    fixed = list(families)
    return Exposition(lambda: fixed).render()
