"""A real local EVM node: Foundry's anvil, from the npm registry, for tests and trials.

``deploy/local/anvil/package.json`` pins the version and ``package-lock.json`` the exact
tarballs; the first start runs ``npm ci`` into a cache directory named after the lock
file, so later starts (and other checkouts sharing the cache) reuse it. A missing npm is
a `ConfigError`; an install or start that fails is a `StackError` with npm's or anvil's
last output lines.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import platform
import shutil
import subprocess
import time
from pathlib import Path

import httpx

import sigflow
from sigflow.exceptions import ConfigError, StackError
from sigflow.stack.process import BackgroundProcess, port_in_use

__all__ = ["PACKAGE_DIR", "AnvilNode"]

logger = logging.getLogger(__name__)

PACKAGE_DIR = Path(sigflow.__file__).resolve().parent.parent / "deploy" / "local" / "anvil"
_HOST = "127.0.0.1"
_INSTALL_TIMEOUT_SECONDS = 600.0
_PLATFORMS = {"Linux": "linux", "Darwin": "darwin"}
_ARCHES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def _binary_package() -> str:
    system, machine = platform.system(), platform.machine().lower()
    if system not in _PLATFORMS or machine not in _ARCHES:
        raise ConfigError(f"anvil from npm has no binary for {system}/{machine}")
    return f"anvil-{_PLATFORMS[system]}-{_ARCHES[machine]}"


class AnvilNode:
    """One anvil on 127.0.0.1:``port``; pid and ``anvil.log`` live in ``run_dir``."""

    def __init__(
        self,
        run_dir: Path,
        port: int = 8545,
        *,
        chain_id: int = 31337,
        cache_dir: Path | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.port = port
        self.chain_id = chain_id
        lock = PACKAGE_DIR / "package-lock.json"
        digest = hashlib.sha256(lock.read_bytes()).hexdigest()[:12] if lock.is_file() else "none"
        self.cache_dir = Path(cache_dir) if cache_dir else PACKAGE_DIR / "cache" / digest
        self._process: BackgroundProcess | None = None

    def __repr__(self) -> str:
        return f"AnvilNode({self.url!r}, chain_id={self.chain_id})"

    @property
    def url(self) -> str:
        """The node's JSON-RPC endpoint."""
        return f"http://{_HOST}:{self.port}"

    @property
    def binary(self) -> Path:
        """Where `npm ci` puts the platform's anvil executable."""
        return self.cache_dir / "node_modules" / "@foundry-rs" / _binary_package() / "bin" / "anvil"

    def install(self) -> Path:
        """`npm ci` the pinned anvil into the cache unless it is there; its binary."""
        if self.binary.is_file():
            return self.binary
        npm = shutil.which("npm")
        if npm is None:
            raise ConfigError("npm not found on PATH: the local EVM node (anvil) installs with npm")
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with (self.cache_dir / ".lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # two processes installing at once
            if not self.binary.is_file():
                for name in ("package.json", "package-lock.json"):
                    shutil.copyfile(PACKAGE_DIR / name, self.cache_dir / name)
                self._npm_ci(npm)
        if not self.binary.is_file():
            raise StackError(f"npm ci finished but {self.binary} is missing")
        return self.binary

    def _npm_ci(self, npm: str) -> None:
        command = [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"]
        try:
            result = subprocess.run(
                command,
                cwd=self.cache_dir,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=_INSTALL_TIMEOUT_SECONDS,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise StackError(
                f"npm ci of anvil did not finish within {_INSTALL_TIMEOUT_SECONDS:g} s"
            ) from exc
        if result.returncode != 0:
            output = "\n".join((result.stderr or result.stdout).strip().splitlines()[-15:])
            raise StackError(
                f"npm ci of anvil failed (exit status {result.returncode}) in {self.cache_dir}:"
                f"\n{output}"
            )

    def start(self, timeout: float = 30.0) -> None:
        """Install if needed, start, and return once it answers JSON-RPC."""
        if port_in_use(_HOST, self.port):
            raise StackError(f"port {self.port} is in use: cannot start anvil on it")
        binary = self.install()
        process = BackgroundProcess(
            "anvil",
            self.run_dir,
            [binary, "--host", _HOST, "--port", str(self.port), "--chain-id", str(self.chain_id)],
        )
        process.start()
        self._process = process
        process.wait_for_port(_HOST, self.port, timeout)
        deadline = time.monotonic() + timeout
        while True:
            try:
                reply = httpx.post(
                    self.url,
                    json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []},
                    timeout=2,
                ).json()
                if int(reply["result"], 16) == self.chain_id:
                    return
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            if time.monotonic() >= deadline:
                raise StackError(
                    f"anvil on {self.url} did not answer eth_chainId within {timeout:g} s; "
                    f"last lines of {process.log_file}:\n{process.log_tail()}"
                )
            time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the node; safe when it is not running."""
        if self._process is not None:
            self._process.stop(timeout)
            self._process = None
