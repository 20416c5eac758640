"""Real processes for the service tests: `bentoml serve`, a private Redis, a cuttable TCP link.

The outage tests stop and start their own Redis (never the shared one on 6379) and cut
the service's link to PostgreSQL with a small TCP relay, so that other users of the local
servers are not disturbed.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import psutil
import redis

from churn.settings import Settings
from serving.launch import running, serve_command, serve_env

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "e2e-test-key-0f1e2d3c4b5a6978"
AUTH = {"Authorization": f"Bearer {API_KEY}"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def service_env(settings: Settings, bentoml_home: Path, **extra: str) -> dict[str, str]:
    """The environment `churn serve` gives the service on `settings`, with the test key and this checkout first."""
    return serve_env(
        settings,
        PYTHONPATH=str(ROOT),
        CHURN_SERVING__API_KEYS=f'["{API_KEY}"]',
        BENTOML_HOME=str(bentoml_home),
        **extra,
    )


@contextmanager
def bentoml_service(env: dict[str, str], log: Path, port: int | None = None, ready_within: float = 90):
    """A `bentoml serve serving.service:ChurnService` process; yields its base URL once it answers /healthz."""
    port = port or free_port()
    base = f"http://127.0.0.1:{port}"
    with running(serve_command("127.0.0.1", port), env, f"{base}/healthz", log, within=ready_within, cwd=ROOT):
        yield base


def _real_clock_env() -> dict[str, str]:
    """This environment without libfaketime: `faketime -f '+365d' make test` moves the engine's
    processes a year ahead, but redis-server under libfaketime does not start (its clock_gettime
    recursion check fails), and Redis's own clock is no business date of the engine's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAKETIME")}
    kept = [lib for lib in env.pop("LD_PRELOAD", "").split() if "faketime" not in lib]
    if kept:
        env["LD_PRELOAD"] = " ".join(kept)
    return env


def service_workers() -> list[psutil.Process]:
    """The BentoML worker processes started by this process (the service of a test module)."""
    return [
        child for child in psutil.Process().children(recursive=True)
        if "_bentoml_impl.worker.service" in " ".join(child.cmdline())
    ]


class RedisServer:
    """A private redis-server that a test can stop and start again on the same port, data kept on disk."""

    def __init__(self, port: int, workdir: Path):
        self.port = port
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port)

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.workdir),
             "--dbfilename", "dump.rdb", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, env=_real_clock_env(),
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                self.client().ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise AssertionError(f"redis-server on port {self.port} did not start") from None
                time.sleep(0.1)

    def pause(self) -> None:
        """SIGSTOP: the server keeps its port and accepts connections, but answers nothing (a hung Redis)."""
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """Save to disk and stop (what a restart of a persistent Redis does)."""
        if self.proc is None:
            return
        try:
            self.client().shutdown(save=True)
        except redis.ConnectionError:
            pass  # the server closes the connection as it shuts down
        self.proc.wait(timeout=10)
        self.proc = None


class TcpRelay:
    """Forwards 127.0.0.1:<port> to a target; `cut()` drops the link and every open connection.

    `freeze()` black-holes it instead: connections stay open and what is sent is taken (TCP
    acknowledges it) but not passed on, as with a hung server or a silent network, until `thaw()`.
    """

    def __init__(self, port: int, target: tuple[str, int]):
        self.port = port
        self.target = target
        self._server: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._flowing = threading.Event()
        self._flowing.set()

    def freeze(self) -> None:
        self._flowing.clear()

    def thaw(self) -> None:
        self._flowing.set()

    def start(self) -> None:
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(64)
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return  # cut
            if self._server is not server:  # cut while this connection was arriving
                client.close()
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                self._flowing.wait()
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            try:
                server.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            except OSError:
                pass
            server.close()
        with self._lock:
            for sock in self._conns:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
            self._conns.clear()
