"""The dashboard's HTTP server: Python's ``ThreadingHTTPServer``, GET only, read-only.

A stdlib server keeps the board light (no framework to install or keep up with) and is
plenty for its audience: one person, or a few, looking at a local store. Each request runs in
its own thread; the expensive part (the history table) is cached per experiment.
"""

from __future__ import annotations

import http
import ipaddress
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from daskperiment.errors import NotFound, PickleRefused
from daskperiment.reads import MALFORMED

from . import pages, routes
from .catalog import Catalog
from .errors import BadRequest, BoardError, PageNotFound

logger = logging.getLogger("daskperiment.board")

STATIC = Path(__file__).with_name("static")

# No inline scripts, nothing fetched from anywhere but this server. Bokeh injects <style>
# elements into its shadow DOM, hence 'unsafe-inline' for styles only.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def _static_files() -> dict[str, tuple[Path, str]]:
    """The only files the server ever reads from disk, by URL name."""
    files = {
        "board.js": (STATIC / "board.js", "text/javascript; charset=utf-8"),
        "parallel.js": (STATIC / "parallel.js", "text/javascript; charset=utf-8"),
        "board.css": (STATIC / "board.css", "text/css; charset=utf-8"),
        "favicon.svg": (STATIC / "favicon.svg", "image/svg+xml"),
    }
    try:
        import bokeh

        js = Path(bokeh.__file__).parent / "server" / "static" / "js"
        files["bokeh.min.js"] = (js / "bokeh.min.js", "text/javascript; charset=utf-8")
    except ImportError:  # pages still work, plots say bokeh is missing
        pass
    return files


class BoardServer(ThreadingHTTPServer):
    """An HTTP server bound to one :class:`Catalog`."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, catalog: Catalog, host: str = "127.0.0.1", port: int = 5000) -> None:
        self.catalog = catalog
        self.static_files = _static_files()
        self.loopback = _is_loopback(host)
        super().__init__((host, port), BoardHandler)

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Serve until ``shutdown()``; histories are read in the background meanwhile, so
        the first page a user opens is answered from memory."""
        threading.Thread(target=self._warm, name="daskperiment-board-warm", daemon=True).start()
        super().serve_forever(poll_interval)

    def _warm(self) -> None:
        try:
            self.catalog.warm()
            import bokeh.plotting  # noqa: F401 - the first plot request would pay for it
        except Exception:  # noqa: BLE001 - requests report errors; warming is best effort
            logger.debug("warming the dashboard failed", exc_info=True)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A browser that navigates away closes its connections mid-answer: not an error.
        import sys

        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return
        logger.exception("error answering %s", client_address)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else str(host)
        if ":" in shown:
            shown = f"[{shown}]"
        return f"http://{shown}:{port}/"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_name(header: str) -> str:
    """The host of a ``Host`` header without its port (``[::1]:5000`` -> ``::1``)."""
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0]


class BoardHandler(BaseHTTPRequestHandler):
    """Routes GET/HEAD requests; every other method is refused (the board never writes)."""

    server: BoardServer
    server_version = "daskperiment-board"
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._send(self._respond(), head=False)

    def do_HEAD(self) -> None:
        self._send(self._respond(), head=True)

    def _refuse(self) -> None:
        body = b"the dashboard is read-only: only GET and HEAD are allowed\n"
        self._send(
            routes.Response(body, "text/plain; charset=utf-8", 405, {"Allow": "GET, HEAD"}),
            head=False,
        )

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse

    def _respond(self) -> routes.Response:
        parts = urlsplit(self.path)
        is_api = parts.path.startswith("/api/")
        try:
            if not self._host_allowed():
                raise BadRequest(
                    "unexpected Host header; open the dashboard through 127.0.0.1 or localhost"
                )
            if parts.path.startswith("/static/"):
                return self._static(parts.path[len("/static/") :])
            if parts.path == "/favicon.ico":
                return self._static("favicon.svg")
            found = routes.match(parts.path)
            if found is None:
                raise PageNotFound(f"no page at {unquote(parts.path)!r}")
            handler, path_params = found
            params = dict(parse_qsl(parts.query, keep_blank_values=True))
            return handler(self.server.catalog, path_params, params)
        except NotFound as exc:
            return self._error(404, str(exc), is_api)
        except BadRequest as exc:
            return self._error(400, str(exc), is_api)
        except BoardError as exc:
            return self._error(500, str(exc), is_api)
        except (*MALFORMED, PickleRefused) as exc:  # type: ignore[misc]  # never decoded
            logger.warning("%s: %s", self.path, exc)
            return self._error(500, str(exc), is_api)
        except Exception as exc:  # a broken record must not take the server down
            logger.exception("error serving %s", self.path)
            return self._error(500, f"{type(exc).__name__}: {exc}", is_api)

    def _host_allowed(self) -> bool:
        # A page on another site could point a DNS name at 127.0.0.1 (DNS rebinding); a
        # loopback-bound board only answers requests addressed to a loopback name.
        if not self.server.loopback:
            return True
        return _is_loopback(_host_name(self.headers.get("Host") or ""))

    def _static(self, name: str) -> routes.Response:
        entry = self.server.static_files.get(name)
        if entry is None:
            raise PageNotFound(f"no static file {name!r}")
        path, content_type = entry
        return routes.Response(
            path.read_bytes(), content_type, 200, {"Cache-Control": "max-age=600"}
        )

    def _error(self, status: int, message: str, is_api: bool) -> routes.Response:
        if is_api:
            return routes.json_response({"error": message, "status": status}, status)
        reason = http.HTTPStatus(status).phrase
        text = pages.error_page(status, reason, message, self.server.catalog.label)
        return routes.html_response(text, status)

    def _send(self, response: routes.Response, head: bool) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in {**SECURITY_HEADERS, **response.headers}.items():
            self.send_header(name, value)
        self.end_headers()
        if not head:
            self.wfile.write(response.body)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s - %s", self.address_string(), format % args)


def make_server(target: Any, host: str = "127.0.0.1", port: int = 5000) -> BoardServer:
    """A dashboard server for ``target`` (store path/URL, directory of stores, Store or
    Experiment), bound but not yet serving. ``port=0`` picks a free port (see ``.url``)."""
    require_extra()
    catalog = target if isinstance(target, Catalog) else Catalog(target)
    catalog.check()
    return BoardServer(catalog, host, port)


def require_extra() -> None:
    """Fail with the install command when the ``board`` extra is missing."""
    try:
        import bokeh  # noqa: F401
        import jinja2  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            f"the dashboard needs bokeh ({exc.name} is missing): pip install 'daskperiment[board]'"
        ) from exc


class Dashboard:
    """A dashboard serving in a background thread (Jupyter); ``stop()`` shuts it down."""

    def __init__(self, server: BoardServer) -> None:
        self.server = server
        self.url = server.url
        self._thread = threading.Thread(
            target=server.serve_forever, name="daskperiment-board", daemon=True
        )

    def start(self) -> Dashboard:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)

    def __repr__(self) -> str:
        return f"Dashboard(url={self.url!r})"

    def _repr_html_(self) -> str:
        import html

        url = html.escape(self.url)
        return f'<a href="{url}" target="_blank">daskperiment dashboard: {url}</a>'


def in_jupyter_kernel() -> bool:
    """True inside a Jupyter (IPython kernel) session, where blocking would freeze the cell."""
    import sys

    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    shell = ipython.get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def serve(target: Any, host: str = "127.0.0.1", port: int = 5000) -> None:
    """Serve the dashboard for ``target`` until interrupted (Ctrl+C)."""
    server = make_server(target, host, port)
    print(
        f"daskperiment dashboard on {server.url} (store: {server.catalog.label}); Ctrl+C stops it",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def start(
    target: Any, port: int = 5000, host: str = "127.0.0.1", *, block: bool | None = None
) -> Dashboard | None:
    """Start the dashboard: in the background inside Jupyter (returns a :class:`Dashboard`),
    blocking until Ctrl+C in a script (returns None). ``block`` overrides the detection."""
    if block is None:
        block = not in_jupyter_kernel()
    if block:
        serve(target, host, port)
        return None
    dashboard = Dashboard(make_server(target, host, port)).start()
    print(f"daskperiment dashboard on {dashboard.url}", flush=True)
    return dashboard


__all__ = ["BoardServer", "Dashboard", "in_jupyter_kernel", "make_server", "serve", "start"]
