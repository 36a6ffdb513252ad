"""Fixtures for the dashboard's tests: a real store made by the real engine, a real server.

The experiments are recorded once per module (trials take a moment) into a directory laid
out like ``./daskperiment_cache`` (one store per experiment id). The server runs in a thread
on a free port; tests talk to it over HTTP with urllib, or through a real headless Chromium.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts" / "board"
SCRIPT_VALUE = "<script>alert('x')</script>"


@dataclass
class Reply:
    """One HTTP answer."""

    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()

    def json(self) -> Any:
        return json.loads(self.body)


def fetch(url: str, method: str = "GET", headers: dict[str, str] | None = None) -> Reply:
    """GET (or another method) ``url``; error statuses are returned, not raised."""
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return Reply(response.status, dict(response.headers), response.read())
    except urllib.error.HTTPError as exc:
        return Reply(exc.code, dict(exc.headers), exc.read())


def first_steps(ex: Any, a: Any, b: Any) -> Any:
    """The seed's first pipeline."""

    @ex
    def prepare_data(a, b):
        return a + b

    @ex.result
    def calculate_score(s):
        return 10 / s

    return calculate_score(prepare_data(a, b))


def second_steps(ex: Any, a: Any, b: Any, note: Any) -> Any:
    """The same steps changed: persisted, a ``note`` parameter, and a metric over epochs."""

    @ex.persist
    def prepare_data(a, b, note):
        return a + b

    @ex.result
    def calculate_score(s):
        for i in range(10):
            ex.save_metric("dummy_score", epoch=i, value=100 - i * s)
        return 10 / s

    return calculate_score(prepare_data(a, b, note))


def record_quickstart(cache: Path) -> dict[str, Any]:
    """Record the seed-like experiment ``quickstart_pj`` into ``cache/quickstart_pj``.

    Trials: 1 (a=1, b=2), 2 (b=3), 3 fails (b=-1), then the code changes (a parameter
    ``note`` joins) and trials 4 to 6 save a metric ``dummy_score`` over 10 epochs; trial 6's
    ``note`` is a value containing markup.
    """
    import daskperiment

    ex = daskperiment.Experiment(id="quickstart_pj", backend=cache / "quickstart_pj")
    a = ex.parameter("a")
    b = ex.parameter("b")
    s = first_steps(ex, a, b)
    ex.set_parameters(a=1, b=2)
    s.compute()
    ex.set_parameters(b=3)
    s.compute()
    ex.set_parameters(b=-1)
    with pytest.raises(ZeroDivisionError):
        s.compute()
    s = second_steps(ex, a, b, ex.parameter("note", default="-"))
    ex.set_parameters(a=1, b=2)
    s.compute()
    ex.set_parameters(a=3, b=4)
    s.compute()
    ex.set_parameters(a=2, b=2, note=SCRIPT_VALUE)
    s.compute()
    return {"id": ex.id, "trials": 6}


def record_second(cache: Path) -> None:
    """A second, small experiment in its own store, so the list shows two."""
    import daskperiment

    ex = daskperiment.Experiment(id="other-exp", backend=cache / "other-exp")
    lr = ex.parameter("lr")

    @ex.result
    def fit(lr):
        return float(np.log1p(lr))

    r = fit(lr)
    for value in (0.1, 0.01):
        ex.set_parameters(lr=value)
        r.compute()


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``daskperiment_cache``-like directory with two experiments, recorded once."""
    cache = tmp_path_factory.mktemp("board") / "daskperiment_cache"
    cache.mkdir()
    record_quickstart(cache)
    record_second(cache)
    return cache


@pytest.fixture(scope="session")
def board_fetch() -> Any:
    """The ``fetch(url, method=..., headers=...) -> Reply`` function."""
    return fetch


def record_many(cache: Path, trials: int) -> None:
    """Experiment ``many``: ``trials`` quick trials, enough for several pages of history."""
    import daskperiment

    ex = daskperiment.Experiment(id="many", backend=cache / "many")
    x = ex.parameter("x")

    @ex.result
    def cube(x):
        return x**3 % 1000

    result = cube(x)
    for value in range(1, trials + 1):
        ex.set_parameters(x=value)
        result.compute(scheduler="sync")


@pytest.fixture(scope="session")
def many_board(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A dashboard over a store with 120 trials (three pages of 50)."""
    cache = tmp_path_factory.mktemp("many") / "daskperiment_cache"
    record_many(cache, 120)
    running = RunningServer(str(cache))
    yield running
    running.stop()


class RunningServer:
    """A dashboard serving ``target`` from a background thread."""

    def __init__(self, target: Any) -> None:
        from daskperiment.board import make_server

        self.server = make_server(target, host="127.0.0.1", port=0)
        self.url = self.server.url.rstrip("/")
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def get(self, path: str, **kwargs: Any) -> Reply:
        return fetch(self.url + path, **kwargs)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)


@pytest.fixture(scope="session")
def board(cache_dir: Path) -> Iterator[RunningServer]:
    """A dashboard over the whole cache directory."""
    running = RunningServer(str(cache_dir))
    yield running
    running.stop()


@pytest.fixture
def serve() -> Iterator[Any]:
    """Start extra dashboards in a test: ``serve(target) -> RunningServer``."""
    started: list[RunningServer] = []

    def start(target: Any) -> RunningServer:
        running = RunningServer(target)
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()


@pytest.fixture(scope="session")
def script_value() -> str:
    """The parameter value with markup that trial 6 of ``quickstart_pj`` ran with."""
    return SCRIPT_VALUE


def artifact(name: str) -> Path:
    """Where a test saves a screenshot (``test-artifacts/board/``, gitignored)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS / name


def copy_to_docs(path: Path) -> None:
    """With ``DASKPERIMENT_DOCS_SCREENSHOTS=1``, also refresh ``docs/img/<name>``, reduced
    to a 256-colour palette so the committed images stay small."""
    import os

    if os.environ.get("DASKPERIMENT_DOCS_SCREENSHOTS") != "1":
        return
    from PIL import Image

    docs = REPO / "docs" / "img"
    docs.mkdir(parents=True, exist_ok=True)
    with Image.open(path) as image:
        small = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
        small.save(docs / path.name, optimize=True)


@pytest.fixture
def shot() -> Any:
    """``shot(page, "name.png")``: save a full-page screenshot as a test artifact."""

    def take(page: Any, name: str) -> Path:
        path = artifact(name)
        page.screenshot(path=str(path), full_page=True)
        copy_to_docs(path)
        return path

    return take


# browser -------------------------------------------------------------------------------
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Debian's headless Chromium driven by Playwright, with a fresh profile."""
    import os

    if not os.path.exists(CHROMIUM):
        pytest.skip("needs Debian's chromium at /usr/bin/chromium (scripts/test installs it)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 860},
        )
        context.set_default_timeout(15_000)
        yield context
        context.close()


class Watched:
    """A page plus what went wrong on it: JS errors, console errors (CSP violations among
    them), requests leaving the dashboard, dialogs (an ``alert()`` that ran)."""

    def __init__(self, page: Any, base: str) -> None:
        self.page = page
        self.problems: list[str] = []
        self.expected: list[str] = []  # substrings of console errors a test provokes itself
        page.on("pageerror", lambda exc: self.problems.append(f"page error: {exc}"))
        page.on("console", self._console)
        page.on("dialog", self._dialog)
        page.on("request", lambda r: self._request(r.url, base))

    def _console(self, message: Any) -> None:
        if message.type == "error" and not any(e in message.text for e in self.expected):
            self.problems.append(f"console error: {message.text}")

    def _dialog(self, dialog: Any) -> None:
        self.problems.append(f"dialog: {dialog.message}")
        dialog.dismiss()

    def _request(self, url: str, base: str) -> None:
        if not url.startswith(base):
            self.problems.append(f"outside request: {url}")


@pytest.fixture
def open_page(chromium: Any) -> Iterator[Any]:
    """``open_page(server) -> Watched``: a new tab; the test fails if anything went wrong."""
    opened: list[Watched] = []

    def open_one(server: RunningServer) -> Watched:
        watched = Watched(chromium.new_page(), server.url)
        opened.append(watched)
        return watched

    yield open_one
    for watched in opened:
        watched.page.close()
    assert [p for w in opened for p in w.problems] == []


# comparison of many trials, parallel coordinates, system metrics ----------------------
SWEEP = [  # (lr, depth, optimizer): trials 1-5 share the optimizer, every trial the batch
    (0.0001, 2, "adam"),
    (0.001, 4, "adam"),
    (0.01, 2, "adam"),
    (0.1, 8, "adam"),
    (1.0, 4, "adam"),
    (0.003, 2, "sgd"),
    (0.03, 8, "sgd"),
    (0.3, 4, "sgd"),
]


def record_sweep(cache: Path) -> None:
    """Experiment ``sweep``: log-spaced ``lr``, ``depth``, a categorical ``optimizer`` and a
    ``batch`` equal in every trial; each trial saves ``loss`` over 5 epochs."""
    import daskperiment

    ex = daskperiment.Experiment(id="sweep", backend=cache / "sweep")
    lr, depth = ex.parameter("lr"), ex.parameter("depth")
    optimizer, batch = ex.parameter("optimizer"), ex.parameter("batch")

    @ex.result
    def fit(lr, depth, optimizer, batch):
        for epoch in range(5):
            ex.save_metric("loss", epoch=epoch, value=(1 + depth) / (1 + epoch * lr * 10))
        return float(np.log10(lr) + depth / 10 + (optimizer == "sgd"))

    result = fit(lr, depth, optimizer, batch)
    for lr_value, depth_value, opt in SWEEP:
        ex.set_parameters(lr=lr_value, depth=depth_value, optimizer=opt, batch=32)
        result.compute(scheduler="sync")


def record_busy(cache: Path) -> None:
    """Experiment ``busy``: one trial whose step keeps a core busy for 3 seconds."""
    import time

    import daskperiment

    ex = daskperiment.Experiment(id="busy", backend=cache / "busy")

    @ex.result
    def spin():
        end, n = time.perf_counter() + 3.0, 0
        while time.perf_counter() < end:
            n += 1
        return n

    spin().compute(scheduler="sync")


@pytest.fixture(scope="session")
def sweep_board(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A dashboard over ``sweep`` (8 trials) and ``busy`` (1 trial with system metrics)."""
    cache = tmp_path_factory.mktemp("sweep") / "daskperiment_cache"
    record_sweep(cache)
    record_busy(cache)
    running = RunningServer(str(cache))
    yield running
    running.stop()
