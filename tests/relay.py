"""A TCP relay to the real test server that starts listening only after a delay.

It stands in for a database container that is still starting: connections are refused
until it opens, then every byte goes to the real PostgreSQL.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from pathlib import Path

from alembic_common.core.settings import Settings


def _target(url: str) -> socket.socket:
    conf = Settings("relay", url, "test")
    if conf.host.startswith("/"):
        sock = socket.socket(socket.AF_UNIX)
        sock.connect(str(Path(conf.host) / f".s.PGSQL.{conf.port}"))
        return sock
    return socket.create_connection((conf.host, conf.port))


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class DelayedRelay:
    """Listen on 127.0.0.1:port after ``delay`` seconds and relay to ``url``'s server."""

    def __init__(self, url: str, delay: float) -> None:
        self.url, self.delay, self.port = url, delay, free_port()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> DelayedRelay:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _serve(self) -> None:
        if self._stop.wait(self.delay):
            return
        with socket.socket() as listener:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", self.port))
            listener.listen()
            listener.settimeout(0.2)
            while not self._stop.is_set():
                try:
                    client, _ = listener.accept()
                except TimeoutError:
                    continue
                upstream = _target(self.url)
                for a, b in ((client, upstream), (upstream, client)):
                    threading.Thread(target=_pipe, args=(a, b), daemon=True).start()


class SilentServer:
    """A loopback port that accepts TCP connections and never answers: a hung server."""

    def __enter__(self) -> SilentServer:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)  # the kernel completes handshakes; nobody ever replies
        self.port = int(self._sock.getsockname()[1])
        return self

    def __exit__(self, *exc: object) -> None:
        self._sock.close()


class CuttingRelay:
    """A TCP relay on 127.0.0.1 to the real server that can cut every connection at once.

    It stands in for a network fault: ``cut()`` closes both ends of every relayed
    connection, as a dropped route or a load balancer restart would.
    """

    def __init__(self, url: str) -> None:
        self.url, self.port = url, free_port()
        self._stop = threading.Event()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> CuttingRelay:
        self._thread.start()
        self._ready.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.cut()
        self._thread.join(timeout=5)

    def cut(self) -> int:
        """Close every relayed connection; return how many there were."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for s in pair:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    s.close()
        return len(pairs)

    def _serve(self) -> None:
        with socket.socket() as listener:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", self.port))
            listener.listen()
            listener.settimeout(0.2)
            self._ready.set()
            while not self._stop.is_set():
                try:
                    client, _ = listener.accept()
                except TimeoutError:
                    continue
                upstream = _target(self.url)
                with self._lock:
                    self._pairs.append((client, upstream))
                for a, b in ((client, upstream), (upstream, client)):
                    threading.Thread(target=_pipe, args=(a, b), daemon=True).start()
