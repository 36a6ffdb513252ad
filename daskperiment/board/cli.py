"""Command line of the dashboard: ``daskperiment board [--store] [--host] [--port]``."""

from __future__ import annotations

import argparse
import errno
import sys
from collections.abc import Sequence

from .errors import BoardError

DEFAULT_STORE = "daskperiment_cache"

EPILOG = """example:
  daskperiment board --store daskperiment_cache --port 5000
  then open http://127.0.0.1:5000/ in a browser (Ctrl+C stops the server)"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the board's options to ``parser`` (for ``daskperiment board``)."""
    parser.add_argument(
        "--store",
        default=DEFAULT_STORE,
        help="a store (path or URL) or a directory of stores (default: ./daskperiment_cache)",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="interface to listen on (default 127.0.0.1: only this machine can connect)",
    )
    parser.add_argument(
        "--port", type=int, default=5000, help="port (default 5000; 0 picks a free one)"
    )


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted; one clear line and exit code 1 on an expected failure."""
    from .server import serve

    try:
        serve(args.store, host=args.host, port=args.port)
    except (BoardError, ImportError) as exc:
        print(f"daskperiment board: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            print(
                f"daskperiment board: port {args.port} is in use; pass --port N (0 picks a free one)",
                file=sys.stderr,
            )
            return 1
        # A host that does not resolve (socket.gaierror) or an address this machine does not
        # have (EADDRNOTAVAIL): the same one-line failure as every other command.
        print(
            f"daskperiment board: cannot listen on {args.host}:{args.port}: "
            f"{exc.strerror or exc}; pass --host 127.0.0.1 or an address of this machine",
            file=sys.stderr,
        )
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse ``argv`` (without the ``board`` word) and serve."""
    parser = argparse.ArgumentParser(
        prog="daskperiment board",
        description="Serve the read-only experiment dashboard in a browser.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))
