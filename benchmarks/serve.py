"""A loopback HTTP file server that honours ``Range: bytes=a-b`` (python's own does not), for
remote-read tests and benchmarks: only 127.0.0.1, stopped when the ``with`` block ends.

Example:
    >>> import tempfile, urllib.request
    >>> folder = tempfile.mkdtemp(); _ = (Path(folder) / "a.bin").write_bytes(b"0123456789")
    >>> with serve_directory(folder) as url:
    ...     request = urllib.request.Request(f"{url}/a.bin", headers={"Range": "bytes=2-4"})
    ...     urllib.request.urlopen(request).read()
    b'234'
"""

from __future__ import annotations

import functools
import http.server
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["serve_directory"]


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """``SimpleHTTPRequestHandler`` plus single byte ranges (a positioned read, not the whole file)."""

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        path = Path(self.translate_path(self.path))
        wanted = self.headers.get("Range")
        if not path.is_file() or not wanted:
            return super().do_GET()
        size = path.stat().st_size
        first, _, last = wanted.removeprefix("bytes=").partition("-")
        start, stop = int(first), min(size, int(last) + 1 if last else size)
        with open(path, "rb") as file:
            data = os.pread(file.fileno(), max(0, stop - start), start)
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{stop - 1}/{size}")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        self.wfile.write(data)


@contextmanager
def serve_directory(directory: str | os.PathLike) -> Iterator[str]:
    """Serve ``directory`` on 127.0.0.1 (a free port) for the ``with`` block; yields its base URL."""
    handler = functools.partial(RangeHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="range-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
