"""The daskperiment dashboard: a small read-only web UI over a store.

``daskperiment board [--store PATH|URL] [--host 127.0.0.1] [--port 5000]`` on the command
line, ``ex.start_dashboard()`` from Python. Needs the ``board`` extra
(``pip install 'daskperiment[board]'``) for Bokeh.
"""

from __future__ import annotations

from .cli import main
from .server import Dashboard, make_server, serve, start

__all__ = ["Dashboard", "main", "make_server", "serve", "start"]
