"""Benchmarks: sigflow measured side by side with a baseline, run as `sigflow bench NAME`.

Speed is measured here, never asserted in tests. Each benchmark is a function from
`BenchOptions` to `BenchResult` (see `bench.report`); adding one is adding a module and
an entry in `BENCHMARKS`.
"""

from __future__ import annotations

from collections.abc import Callable

from bench import anomalies, api, e2e, ingest, latency, processors, sink, worker
from bench.report import BenchOptions, BenchResult

BENCHMARKS: dict[str, Callable[[BenchOptions], BenchResult]] = {
    api.NAME: api.run,
    latency.NAME: latency.run,
    processors.NAME: processors.run,
    sink.NAME: sink.run,
    anomalies.NAME: anomalies.run,
    ingest.NAME: ingest.run,
    worker.NAME: worker.run,
    e2e.NAME: e2e.run,
}

__all__ = ["BENCHMARKS", "BenchOptions", "BenchResult"]
