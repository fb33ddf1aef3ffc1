"""A processor worker whose one agent raises on its first batch, configured from the
`SIGFLOW_*` environment (run by test_processor_kafka_clients as
`python -m tests.integration.crashing_worker`)."""

from __future__ import annotations

from processors.app import AgentRunner, Step, faust_app, faust_worker
from processors.candle_stream import RawRecord
from sigflow.logs import configure_logging
from sigflow.settings import Settings


def explode(records: list[RawRecord]) -> Step:
    raise RuntimeError(f"a bug met {len(records)} records")


def main() -> None:
    settings = Settings()
    configure_logging(settings.log_level, json=settings.log_json)
    (settings.data_dir / "processor").mkdir(parents=True, exist_ok=True)
    app = faust_app(settings)
    AgentRunner(app, settings).add("explode", [settings.topic("trades")], explode)
    faust_worker(app, settings).execute_from_commandline()


if __name__ == "__main__":
    main()
