"""Detached background processes for the local stack: brokers, the warehouse, demo roles.

A `BackgroundProcess` runs one command in a session of its own, with its output in
``<run_dir>/<name>.log`` and its pid in ``<run_dir>/<name>.pid``. It therefore outlives the
Python process that started it (``sigflow stack up`` returns, the broker keeps running),
and another process (``sigflow stack down``) finds it again through the pid file.

The pid file holds the pid on its first line and the command on its second (JSON), so a
pid reused by an unrelated program after a crash or reboot is never taken for ours.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from sigflow.exceptions import ConfigError, StackError

__all__ = ["BackgroundProcess", "free_port", "port_in_use"]

_POLL_SECONDS = 0.05
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # colours in logs of tools that ignore isatty
_KILL_GRACE_SECONDS = 5.0


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (for services started on demand)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_in_use(host: str, port: int) -> bool:
    """True when something accepts TCP connections on host:port.

    Checked before a start because a server that fails to bind exits, while the port
    still answers (served by the other program) and would look like a successful start.
    """
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class BackgroundProcess:
    """One command run detached from the caller, found again later through its pid file.

    ``argv`` may be left empty to only look after a process started earlier (status, stop),
    for example from ``sigflow stack down`` when the command is expensive to work out.
    """

    def __init__(
        self,
        name: str,
        run_dir: Path,
        argv: Sequence[str | os.PathLike[str]] = (),
        *,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.run_dir = Path(run_dir)
        self.argv = [os.fspath(arg) for arg in argv]
        self.env = dict(env or {})
        self.pid_file = self.run_dir / f"{name}.pid"
        self.log_file = self.run_dir / f"{name}.log"
        self._child_pid: int | None = None  # set when this process spawned it
        self._exit_status: int | None = None

    def __repr__(self) -> str:
        return f"BackgroundProcess({self.name!r}, pid={self.pid})"

    @property
    def pid(self) -> int | None:
        """Pid of the running process, or None when it is not running."""
        recorded = self._read_pid_file()
        if recorded is None:
            return None
        pid, argv = recorded
        return pid if self._is_alive(pid) and self._runs(pid, argv) else None

    @property
    def exit_code(self) -> int | None:
        """Exit status of the process this object started, once `stop()` returned or it
        was seen gone (negative: killed by that signal); None while it runs or when
        another process started it."""
        return self._exit_status

    def is_running(self) -> bool:
        """True when the recorded pid is alive and still runs the recorded command."""
        return self.pid is not None

    def start(self) -> int:
        """Start the command unless it already runs; return its pid.

        Starting twice is safe; starting while a different command runs under this name
        is refused, since silently keeping the old one would hide a settings change.
        """
        if not self.argv:
            raise ValueError(f"{self.name}: no command to start")
        argv = [self._resolve_executable(self.argv[0]), *self.argv[1:]]
        recorded = self._read_pid_file()
        running = self.pid
        if running is not None and recorded is not None:
            if recorded[1] in (None, argv):
                return running
            raise StackError(
                f"{self.name} already runs (pid {running}) with another command; stop it first\n"
                f"  running: {_format_argv(recorded[1] or [])}\n  wanted:  {_format_argv(argv)}"
            )

        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.pid_file.unlink(missing_ok=True)
        if self.log_file.exists():
            # One previous run is kept: its end is usually why this start happens.
            self.log_file.replace(self.log_file.with_name(self.log_file.name + ".1"))
        pid = self._spawn(argv)
        self._child_pid, self._exit_status = pid, None
        tmp = self.pid_file.with_name(self.pid_file.name + ".tmp")
        tmp.write_text(f"{pid}\n{json.dumps(argv)}\n", encoding="utf-8")
        tmp.replace(self.pid_file)
        return pid

    def stop(self, timeout: float = 30.0) -> bool:
        """SIGTERM, up to ``timeout`` seconds for a clean exit, then SIGKILL.

        Returns whether it was running. Stopping a process that is not running (twice,
        or after it crashed) only removes the stale pid file.
        """
        pid = self.pid
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        # The whole process group: a wrapper script's children go down with it.
        self._signal(pid, signal.SIGTERM)
        if not self._wait_gone(pid, timeout):
            self._signal(pid, signal.SIGKILL)
            if not self._wait_gone(pid, _KILL_GRACE_SECONDS):
                raise StackError(f"{self.name} (pid {pid}) survived SIGKILL")
        self._wait_reaped(pid, _KILL_GRACE_SECONDS)
        self.pid_file.unlink(missing_ok=True)
        return True

    def wait_for_port(self, host: str, port: int, timeout: float) -> None:
        """Return once host:port accepts connections; raise `StackError` with the log tail
        if the process exits first or the port stays closed for ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            pid = self.pid
            if pid is None:
                status = "" if self._exit_status is None else f" with status {self._exit_status}"
                raise StackError(
                    f"{self.name} exited{status} before listening on {host}:{port}"
                    f"{self._log_excerpt()}"
                )
            try:
                with socket.create_connection((host, port), timeout=0.5):
                    return
            except OSError:
                pass
            if time.monotonic() >= deadline:
                raise StackError(
                    f"{self.name} (pid {pid}) did not listen on {host}:{port} within "
                    f"{timeout:g} s{self._log_excerpt()}"
                )
            time.sleep(_POLL_SECONDS)

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the log of the current (or last) run."""
        try:
            with self.log_file.open("rb") as log:
                log.seek(0, os.SEEK_END)
                log.seek(max(0, log.tell() - 64 * 1024))
                text = log.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(_ANSI_ESCAPE.sub("", text).splitlines()[-lines:])

    # -- internals ---------------------------------------------------------------------

    def _log_excerpt(self) -> str:
        tail = self.log_tail()
        if not tail:
            return f" (log {self.log_file} is empty)"
        return f"; last lines of {self.log_file}:\n{tail}"

    def _resolve_executable(self, program: str) -> str:
        path = shutil.which(program) if os.sep not in program else program
        if path is None or not os.access(path, os.X_OK):
            raise ConfigError(f"{self.name}: executable {program!r} not found or not executable")
        return os.path.abspath(path)

    def _spawn(self, argv: list[str]) -> int:
        # posix_spawn instead of subprocess.Popen: a Popen object for a child meant to
        # outlive us would warn (ResourceWarning) when collected while the child runs.
        truncate = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        file_actions = [
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, str(self.log_file), truncate, 0o644),
            (os.POSIX_SPAWN_DUP2, 1, 2),
        ]
        env = {**os.environ, **self.env}
        # Python ignores SIGPIPE and SIGXFSZ; a child must get the defaults back.
        defaults = {signal.SIGPIPE, getattr(signal, "SIGXFSZ", signal.SIGPIPE)}
        try:
            try:
                return os.posix_spawn(
                    argv[0], argv, env, file_actions=file_actions, setsid=True,
                    setsigdef=defaults, setsigmask=(),
                )  # fmt: skip
            except NotImplementedError:  # no POSIX_SPAWN_SETSID (older macOS): own group
                return os.posix_spawn(
                    argv[0], argv, env, file_actions=file_actions, setpgroup=0,
                    setsigdef=defaults, setsigmask=(),
                )  # fmt: skip
        except OSError as exc:
            raise StackError(f"could not start {self.name} ({_format_argv(argv)}): {exc}") from exc

    def _read_pid_file(self) -> tuple[int, list[str] | None] | None:
        try:
            lines = self.pid_file.read_text(encoding="utf-8").splitlines()
            pid = int(lines[0])
        except (FileNotFoundError, IndexError, ValueError):
            return None
        argv: list[str] | None = None
        if len(lines) > 1:
            with contextlib.suppress(ValueError):
                argv = json.loads(lines[1])
        return pid, argv

    def _reap(self, pid: int) -> None:
        # Only our own child can be reaped; without it, a dead child stays a zombie.
        if pid != self._child_pid:
            return
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            self._child_pid = None
            return
        if done:
            self._exit_status = os.waitstatus_to_exitcode(status)
            self._child_pid = None

    def _is_alive(self, pid: int) -> bool:
        self._reap(pid)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # alive, owned by someone else; the command check decides
        state = _process_state(pid)
        return state is not None and state not in ("Z", "X")

    def _runs(self, pid: int, argv: list[str] | None) -> bool:
        if argv is None:
            return True
        actual = _process_argv(pid)
        # Empty while the kernel is still inside execve() of a process just spawned.
        for _ in range(50):
            if actual != []:
                break
            time.sleep(0.01)
            actual = _process_argv(pid)
        if not actual:
            return False
        if isinstance(actual, str):  # only `ps` output: arguments joined by spaces
            return actual.strip() == " ".join(argv)
        return actual == argv

    def _signal(self, pid: int, signum: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            if _process_group(pid) == pid:
                os.killpg(pid, signum)
            else:
                os.kill(pid, signum)

    def _wait_reaped(self, pid: int, timeout: float) -> None:
        """Collect our child's exit status: its main thread shows as a zombie while other
        threads are still exiting, and it cannot be reaped until they are gone."""
        deadline = time.monotonic() + timeout
        while pid == self._child_pid and time.monotonic() < deadline:
            self._reap(pid)
            if pid == self._child_pid:
                time.sleep(_POLL_SECONDS)

    def _wait_gone(self, pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self._is_alive(pid):
            if time.monotonic() >= deadline:
                return False
            time.sleep(_POLL_SECONDS)
        return True


def _format_argv(argv: Sequence[str]) -> str:
    return shlex.join(argv)


def _process_state(pid: int) -> str | None:
    """One-letter process state (R, S, Z, ...), or None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
        return stat.rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        if Path("/proc/self/stat").exists():
            return None  # Linux: the process is gone
    except (IndexError, OSError):
        return None
    output = _ps(pid, "stat=")
    if output is None or not output.strip():
        return None
    return output.strip()[0]


def _process_argv(pid: int) -> list[str] | str | None:
    """The command line of pid: a list from /proc, a joined string from `ps` elsewhere."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        if Path("/proc/self/cmdline").exists():
            return None
        return _ps(pid, "args=")
    except OSError:
        return None
    return [part.decode("utf-8", errors="surrogateescape") for part in raw.split(b"\0")[:-1]]


def _process_group(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def _ps(pid: int, field: str) -> str | None:
    try:
        result = subprocess.run(
            ["ps", "-ww", "-o", field, "-p", str(pid)],
            capture_output=True,
            text=True,
            check=False,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout if result.returncode == 0 else None
