"""A loopback HTTP file server that honours ``Range: bytes=a-b`` (python's own does not), for
remote-read tests and benchmarks: only 127.0.0.1, stopped when the ``with`` block ends.

It behaves as object stores do where that costs the client: HTTP/1.1 with persistent connections
(Python's server closes every connection after one answer by default), no Nagle delay between the
headers and the body (with persistent connections that stalled every answer ~40 ms behind the
client's delayed ACK), and a listen backlog for many concurrent requests (Python's is 5: a burst of
connections beyond it waited a second for a SYN retry).

Example:
    >>> import tempfile, urllib.request
    >>> folder = tempfile.mkdtemp(); _ = (Path(folder) / "a.bin").write_bytes(b"0123456789")
    >>> with serve_directory(folder) as url:
    ...     request = urllib.request.Request(f"{url}/a.bin", headers={"Range": "bytes=2-4"})
    ...     urllib.request.urlopen(request).read()
    b'234'
    >>> with serve_directory(folder, process=True) as url:
    ...     request = urllib.request.Request(f"{url}/a.bin", headers={"Range": "bytes=7-"})
    ...     urllib.request.urlopen(request).read()
    b'789'
"""

from __future__ import annotations

import functools
import http.server
import os
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["serve_directory"]


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """``SimpleHTTPRequestHandler`` plus single byte ranges (a positioned read, not the whole file)."""

    protocol_version = "HTTP/1.1"  # persistent connections (every answer says its Content-Length)

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        wanted = self.headers.get("Range")
        opened = self.server.open_file(self.translate_path(self.path)) if wanted else None
        if opened is None:
            return super().do_GET()
        descriptor, size = opened
        first, _, last = wanted.removeprefix("bytes=").partition("-")
        start, stop = int(first), min(size, int(last) + 1 if last else size)
        data = os.pread(descriptor, max(0, stop - start), start)
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{stop - 1}/{size}")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        self.wfile.write(data)


class _Server(http.server.ThreadingHTTPServer):
    request_queue_size = 256  # the listen backlog

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._files: dict[str, tuple[int, int, int, int]] = {}  # path -> (device, inode, size, descriptor)
        self._replaced: list[int] = []  # descriptors of replaced files: another thread may still read one
        self._lock = threading.Lock()

    def open_file(self, path: str) -> tuple[int, int] | None:
        """``(descriptor, size)`` of the regular file at ``path``, kept open while it is the same file
        (a replaced, grown or removed file is opened again, or is None); None if it is not one."""
        try:
            status = os.stat(path)
        except OSError:
            return None
        if not stat.S_ISREG(status.st_mode):
            return None
        with self._lock:
            kept = self._files.get(path)
            if kept is not None and kept[:3] == (status.st_dev, status.st_ino, status.st_size):
                return kept[3], kept[2]
            if kept is not None:
                self._replaced.append(kept[3])  # closed with the server, never under a reading thread
            descriptor = os.open(path, os.O_RDONLY)
            self._files[path] = (status.st_dev, status.st_ino, status.st_size, descriptor)
            return descriptor, status.st_size

    def server_close(self) -> None:
        super().server_close()
        with self._lock:
            for descriptor in [kept[3] for kept in self._files.values()] + self._replaced:
                os.close(descriptor)
            self._files.clear()
            self._replaced.clear()


@contextmanager
def serve_directory(directory: str | os.PathLike, process: bool = False) -> Iterator[str]:
    """Serve ``directory`` on 127.0.0.1 (a free port) for the ``with`` block; yields its base URL.

    ``process``: in a process of its own (``python -m benchmarks.serve DIR``), as a real server is
    (the loader benchmark: a server thread would share the benchmark process's interpreter lock);
    it ends when the block does, or when this process does (its standard input closes).
    """
    if process:
        with subprocess.Popen(
            [sys.executable, "-m", "benchmarks.serve", os.fspath(directory)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parents[1],
        ) as child:
            try:
                url = child.stdout.readline().strip()
                if not url.startswith("http://"):
                    raise RuntimeError(f"the server process did not start (exit status {child.poll()})")
                yield url
            finally:
                child.stdin.close()
                try:
                    child.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
        return
    handler = functools.partial(RangeHandler, directory=str(directory))
    server = _Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="range-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


if __name__ == "__main__":  # python -m benchmarks.serve DIR: serve until standard input closes
    with serve_directory(sys.argv[1]) as base_url:
        print(base_url, flush=True)
        sys.stdin.read()
