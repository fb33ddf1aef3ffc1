"""The correctness broker: Apache Kafka in KRaft mode, started by ``deploy/local/kafka/kafka.sh``.

The shell script is the one place that fetches the jars (Maven), formats storage, starts,
waits for and stops the broker; it also works without Python. This module only runs it
and turns its exit status into sigflow errors: 2 (missing java/mvn, bad setting) becomes
`ConfigError`, anything else `StackError`, both carrying the script's message and the
broker's last log lines.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path

import sigflow
from sigflow.exceptions import ConfigError, StackError

__all__ = ["LAUNCHER", "KafkaBroker", "java_available"]

logger = logging.getLogger(__name__)

# The repo root is the parent of the `sigflow` package (a checkout or an editable install).
LAUNCHER = (
    Path(sigflow.__file__).resolve().parent.parent / "deploy" / "local" / "kafka" / "kafka.sh"
)

_HOST = "127.0.0.1"
_FETCH_TIMEOUT_SECONDS = 900.0  # a cold Maven cache downloads ~45 MB
_SCRIPT_GRACE_SECONDS = 30.0  # formatting storage, or stopping a broker that never got ready
_CONFIG_EXIT_STATUS = 2


@lru_cache(maxsize=1)
def java_available(min_major: int = 17) -> bool:
    """True when a Java runtime new enough for Kafka 4 is installed (``--broker auto``).

    Uses ``$JAVA_HOME/bin/java`` when JAVA_HOME is set, like kafka.sh does.
    """
    java_home = os.environ.get("JAVA_HOME")
    java = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
    if java is None or not os.access(java, os.X_OK):
        return False
    try:
        result = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    match = re.search(r'version "(\d+)(?:\.(\d+))?', result.stderr + result.stdout)
    if match is None:
        return False
    major = int(match.group(1))
    if major == 1:  # "1.8.0_402" is Java 8
        major = int(match.group(2) or 0)
    return major >= min_major


class KafkaBroker:
    """One Kafka broker+controller on 127.0.0.1, keeping everything in ``data_dir``.

    ``data_dir`` holds storage, cluster id, pid file and ``kafka.log``; a broker started by
    one process is seen and stopped by another that uses the same ``data_dir``.

    With ``sasl_ssl_port`` the broker also listens for SASL_SSL clients there: TLS with the
    PEM ``keystore`` (PKCS#8 key + certificate chain), and each of ``sasl_users`` (name ->
    password) may log in with PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512. SCRAM users are
    written when the storage is formatted, so they are fixed at the first start.
    """

    def __init__(
        self,
        data_dir: Path,
        port: int = 9092,
        controller_port: int = 9093,
        version: str = "4.4.0",
        *,
        libs_dir: Path | None = None,
        sasl_ssl_port: int | None = None,
        keystore: Path | None = None,
        sasl_users: Mapping[str, str] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.port = port
        self.controller_port = controller_port
        self.version = version
        self.libs_dir = libs_dir  # None: kafka.sh's cache, deploy/local/kafka/libs/<version>
        self.sasl_ssl_port = sasl_ssl_port
        self.keystore = keystore
        self.sasl_users = dict(sasl_users or {})

    def __repr__(self) -> str:
        return f"KafkaBroker({self.data_dir!s}, port={self.port}, version={self.version!r})"

    @property
    def bootstrap(self) -> str:
        """Bootstrap servers for clients."""
        return f"{_HOST}:{self.port}"

    @property
    def sasl_ssl_bootstrap(self) -> str:
        """Bootstrap servers of the SASL_SSL listener."""
        if self.sasl_ssl_port is None:
            raise ConfigError(f"{self!r} has no SASL_SSL listener (no sasl_ssl_port)")
        return f"{_HOST}:{self.sasl_ssl_port}"

    @property
    def log_file(self) -> Path:
        """Output of the current (or last) broker run."""
        return self.data_dir / "kafka.log"

    def fetch(self, timeout: float = _FETCH_TIMEOUT_SECONDS) -> None:
        """Download the Kafka jars into the cache unless they are there (needs mvn)."""
        self._run("fetch", timeout)

    def start(self, timeout: float = 90) -> None:
        """Start the broker unless it runs, and return once it serves clients.

        ``timeout`` bounds the wait for the broker; fetching the jars (first run only) and
        formatting storage come on top.
        """
        self.fetch()
        self._run(
            "start",
            timeout + _SCRIPT_GRACE_SECONDS,
            KAFKA_START_TIMEOUT=str(math.ceil(timeout)),
        )

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; safe when it is not running."""
        self._run(
            "stop",
            timeout + _SCRIPT_GRACE_SECONDS,
            KAFKA_STOP_TIMEOUT=str(math.ceil(timeout)),
        )

    def is_running(self) -> bool:
        """True when the broker of this data dir is alive (``kafka.sh status``)."""
        return self._run("status", _SCRIPT_GRACE_SECONDS, check=False).returncode == 0

    def _run(
        self, command: str, timeout: float, *, check: bool = True, **extra_env: str
    ) -> subprocess.CompletedProcess[str]:
        bash = shutil.which("bash")
        if bash is None:
            raise ConfigError("bash not found on PATH: the Kafka launcher is a bash script")
        if not LAUNCHER.is_file():
            raise ConfigError(
                f"Kafka launcher {LAUNCHER} is missing: run sigflow from a source checkout "
                "(pip install -e .), or use the Tansu broker"
            )
        env = {
            **os.environ,
            "KAFKA_VERSION": self.version,
            "KAFKA_PORT": str(self.port),
            "KAFKA_CONTROLLER_PORT": str(self.controller_port),
            "KAFKA_DATA_DIR": str(self.data_dir),
            **extra_env,
        }
        if self.libs_dir is not None:
            env["KAFKA_LIBS_DIR"] = str(self.libs_dir)
        if self.sasl_ssl_port is not None:
            env["KAFKA_SASL_SSL_PORT"] = str(self.sasl_ssl_port)
            env["KAFKA_SSL_KEYSTORE"] = str(self.keystore or "")
            env["KAFKA_SASL_USERS"] = " ".join(f"{n}:{p}" for n, p in self.sasl_users.items())
        try:
            result = subprocess.run(
                [bash, str(LAUNCHER), command],
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise StackError(
                f"kafka.sh {command} did not finish within {timeout:g} s "
                f"(broker log: {self.log_file})"
            ) from exc
        for line in result.stdout.splitlines():
            logger.debug(line)
        if check and result.returncode != 0:
            output = result.stderr.strip() or result.stdout.strip() or "no output"
            # The script's first line says what failed; the broker's log lines follow.
            message = re.sub(r"^kafka\.sh: ", "", output, flags=re.MULTILINE)
            error = ConfigError if result.returncode == _CONFIG_EXIT_STATUS else StackError
            raise error(f"kafka.sh {command} failed (exit status {result.returncode}): {message}")
        return result
