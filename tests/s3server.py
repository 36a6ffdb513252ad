"""A real S3-compatible server for the tests: moto's server on 127.0.0.1, in its own process.

``python tests/s3server.py`` binds a free port, prints ``PORT <n>`` once it accepts
connections, and serves until killed. :class:`S3Server` starts and stops it from a fixture.

Why mutating requests are serialised: moto checks ``If-None-Match`` / ``If-Match`` and then
writes in two separate steps with no lock held in between (``put_object`` in
``moto/s3/responses.py``), and its server is threaded, so two conditional writes racing for
the same key could both pass the check. Real S3 evaluates the condition and the write as one
atomic step. Running every PUT/POST/DELETE one at a time (reads stay concurrent) gives the
tests S3's guarantee, so they test our client logic against the semantics S3 promises.
Pass ``--no-serialize`` to see moto's own behaviour. ``--ignore-conditions`` drops the
conditional headers before moto sees them, which makes it behave like an S3-compatible server
without conditional-write support (the backend must then refuse create-if-absent and swap).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import threading
import time
from typing import Any

_MUTATING = {"PUT", "POST", "DELETE"}


def _app(serialize: bool, ignore_conditions: bool = False) -> Any:
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    moto_app = DomainDispatcherApplication(create_backend_app)

    def app(environ: dict, start_response: Any) -> Any:
        if ignore_conditions:
            environ.pop("HTTP_IF_NONE_MATCH", None)
            environ.pop("HTTP_IF_MATCH", None)
        return moto_app(environ, start_response)

    if not serialize:
        return app
    lock = threading.Lock()

    def serialized(environ: dict, start_response: Any) -> Any:
        if environ.get("REQUEST_METHOD") not in _MUTATING:
            return app(environ, start_response)
        with lock:
            # Consume the whole response under the lock: the write happens while moto
            # builds it.
            return list(app(environ, start_response))

    return serialized


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--no-serialize", action="store_true")
    parser.add_argument("--ignore-conditions", action="store_true")
    args = parser.parse_args(argv)
    from werkzeug.serving import WSGIRequestHandler, make_server

    class QuietHandler(WSGIRequestHandler):
        def log_request(self, *a: Any, **k: Any) -> None:
            pass

    server = make_server(
        "127.0.0.1",
        args.port,
        _app(not args.no_serialize, args.ignore_conditions),
        threaded=True,
        request_handler=QuietHandler,
    )
    print(f"PORT {server.server_port}", flush=True)
    server.serve_forever()


class S3Server:
    """The server process: ``start()`` returns the endpoint URL, ``stop()`` ends it."""

    def __init__(self, serialize: bool = True, ignore_conditions: bool = False) -> None:
        self.serialize = serialize
        self.ignore_conditions = ignore_conditions
        self.proc: subprocess.Popen[str] | None = None
        self.endpoint_url = ""

    def start(self, timeout: float = 30.0) -> str:
        cmd = [sys.executable, os.path.abspath(__file__)]
        if not self.serialize:
            cmd.append("--no-serialize")
        if self.ignore_conditions:
            cmd.append("--ignore-conditions")
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # blocks until the port is bound (or the exit)
        if not line.startswith("PORT "):
            self.stop()
            raise RuntimeError(f"the moto S3 server did not start (printed {line!r})")
        port = int(line.split()[1])
        _wait_for_port(port, timeout)
        self.endpoint_url = f"http://127.0.0.1:{port}"
        return self.endpoint_url

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def _wait_for_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


if __name__ == "__main__":
    main()
