"""Start a DataFlow app as a real server (``python app.py``) on a free loopback port; talk HTTP to it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """``with Served(script, url, cwd) as app: app.http.get("/health")``; stops it with SIGTERM."""

    def __init__(self, script: Path, url: str, cwd: Path, env: dict[str, str] | None = None,
                 args: list[str] | None = None, url_env: str = "DATAFLOW_DATABASE_URL") -> None:
        self.script, self.url, self.cwd = Path(script), url, Path(cwd)
        self.extra_env, self.args, self.url_env = env or {}, args or [], url_env
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = self.cwd / f"server-{self.port}.log"

    def __enter__(self) -> "Served":
        env = {k: v for k, v in os.environ.items() if not k.startswith("DATAFLOW_") and k != "DATABASE_URL"}
        env.update({self.url_env: self.url}, DATAFLOW_HOST="127.0.0.1", DATAFLOW_PORT=str(self.port),
                   PYTHONPATH=os.pathsep.join([str(SRC), str(self.script.parent)]), **self.extra_env)
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, str(self.script), *self.args], cwd=self.cwd, env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        self.http = httpx.Client(base_url=self.base, timeout=60)
        deadline = time.monotonic() + 120
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.script.name} exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if self.http.get("/health").status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.script.name} did not answer /health:\n{self.output()}")
            time.sleep(0.1)

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text(errors="replace")[-5000:]

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Stop the server as Kubernetes does (SIGTERM); its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.http.close()
        self.log.close()
        return self.proc.returncode

    def __exit__(self, *exc: object) -> None:
        self.stop()
