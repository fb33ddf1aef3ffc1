"""Entry point of the worker processes the Kafka benchmarks start and time.

    python -m bench.worker_process sigflow|naive|relay STATE_FILE [ENDS_JSON]

`sigflow` is the processor app of `processors.app.create_app` run by a Faust `Worker`,
as `sigflow process` runs it; `naive` is `bench.naive_agent`; `relay` is the bare
aiokafka consume → produce floor of `bench.relay`. Settings come from `SIGFLOW_*`.
A `DrainSensor` (relay: the relay loop itself) writes STATE_FILE as JSON: `first_in`,
the wall-clock time the first input record reached the agent, and, once every input
partition is processed up to ENDS_JSON (partition → end offset), `drained`.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from faust.sensors import Sensor

from sigflow.settings import Settings


def write_state(path: Path, state: dict[str, float]) -> None:
    """Replace the state file atomically, so a reader never sees half of it."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(state))
    tmp.replace(path)


class DrainSensor(Sensor):
    """Notes the first record the agent gets and when all input up to `ends` is acked.

    Faust acks a record once the agent is done with it (for `take_events`, after the
    whole micro-batch, its sends and its flush), so `drained` is the end of processing.
    """

    def __init__(self, topic: str, ends: dict[int, int], path: Path) -> None:
        super().__init__()
        self.topic = topic
        self.ends = {partition: end for partition, end in ends.items() if end > 0}
        self.pending = set(self.ends)
        self.path = path
        self.times: dict[str, float] = {}

    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        if "first_in" not in self.times and tp.topic == self.topic:
            self.times["first_in"] = time.time()
            write_state(self.path, self.times)

    def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
        if tp.topic != self.topic or tp.partition not in self.pending:
            return
        if offset + 1 >= self.ends[tp.partition]:
            self.pending.discard(tp.partition)
            if not self.pending:
                self.times["drained"] = time.time()
                write_state(self.path, self.times)


def main(argv: list[str]) -> None:
    kind, state_file, *rest = argv
    ends = {int(p): int(end) for p, end in json.loads(rest[0]).items()} if rest else {}
    settings = Settings()
    if kind == "relay":
        import asyncio

        from bench.relay import relay

        asyncio.run(relay(settings, Path(state_file)))
        return
    from processors.app import faust_worker
    from sigflow.logs import configure_logging

    configure_logging(settings.log_level, json=settings.log_json)
    if kind == "sigflow":
        import asyncio

        from processors.app import create_app, ensure_processor_topics

        app = create_app(settings)
        asyncio.run(ensure_processor_topics(settings, app))  # as `sigflow process` does
    elif kind == "naive":
        from bench.naive_agent import create_naive_app

        app = create_naive_app(settings)
    else:
        raise SystemExit(f"unknown worker kind {kind!r}: sigflow, naive or relay")
    app.sensors.add(DrainSensor(settings.topic("trades"), ends, Path(state_file)))
    faust_worker(app, settings).execute_from_commandline()  # as `sigflow process` runs it


if __name__ == "__main__":
    main(sys.argv[1:])
