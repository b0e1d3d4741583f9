"""``transferkit serve`` in a child process on a free 127.0.0.1 port, for tests and load tests: :func:`local_server`.

The child is the real command (``python -m transferkit serve ...``) with this interpreter and this ``sys.path``
(``PYTHONPATH`` carries it, so a source checkout serves its own code). Readiness is decided by polling ``GET /health``
a bounded number of times (the child's death ends the wait at once, with its log); the child is stopped (SIGTERM,
then SIGKILL) when the ``with`` block ends, whatever happens inside it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass
class LocalServer:
    """A running child server: its base URL, process and log file."""

    url: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def log_text(self) -> str:
        try:
            return self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the child may lose it to a race: it is then retried)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def local_server(model: str | os.PathLike[str], *flags: str, tries: int = 600, interval: float = 0.1,
                 attempts: int = 3) -> Iterator[LocalServer]:
    """Start ``transferkit serve MODEL --port <free> FLAGS`` and yield once ``/health`` answers 200.

    Waits at most ``tries`` polls ``interval`` seconds apart (60 s by default: loading torch and the model on a loaded
    machine), tries ``attempts`` ports if the chosen one was taken meanwhile.

    Raises:
        RuntimeError: the server exited or never answered; the message holds the end of its log.
    """
    import httpx

    env = dict(os.environ)
    paths = [p for p in sys.path if p and os.path.isdir(p)]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys([*paths, *filter(None, env.get("PYTHONPATH", "").split(
        os.pathsep))]))
    last = ""
    for _ in range(attempts):
        port = free_port()
        log_fd, log_name = tempfile.mkstemp(prefix="transferkit-serve-", suffix=".log")
        log = Path(log_name)
        with os.fdopen(log_fd, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "transferkit", "serve", os.fspath(model), "--host", "127.0.0.1", "--port",
                 str(port), *flags], stdout=out, stderr=subprocess.STDOUT, env=env,
            )
        server = LocalServer(f"http://127.0.0.1:{port}", port, proc, log)
        try:
            ready = False
            with httpx.Client(timeout=5.0) as client:
                for _ in range(tries):
                    if proc.poll() is not None:
                        break
                    try:
                        ready = client.get(f"{server.url}/health").status_code == 200
                    except httpx.TransportError:
                        ready = False
                    if ready:
                        break
                    time.sleep(interval)
            if ready:
                yield server
                return
            last = server.log_text()
            if proc.poll() is None:
                raise RuntimeError(f"transferkit serve did not answer /health after {tries} tries; its log:\n"
                                   f"{last[-3000:]}")
            if "address already in use" not in last.lower():
                raise RuntimeError(f"transferkit serve exited with status {proc.returncode}; its log:\n{last[-3000:]}")
        finally:
            _stop(proc)
            with contextlib.suppress(OSError):
                log.unlink()
    raise RuntimeError(f"transferkit serve found no free port in {attempts} attempts; its last log:\n{last[-3000:]}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)
