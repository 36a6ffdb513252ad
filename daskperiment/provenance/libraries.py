"""Which modules are the user's own and which come from installed distributions.

*Local* code is what the user can edit in the project: a module whose file lies outside the
standard library and every ``site-packages`` directory (so a package installed in editable
mode from a directory of its own counts as local: its source is what is being edited).
Code typed into a notebook or the main script (``__main__``) is always local; this library
itself never is.

*Libraries* are the installed distributions the local code uses, by distribution name and
version (``importlib.metadata``), e.g. ``{"numpy": "2.4.6", "scikit-learn": "1.7.0"}``.
Everything is computed once per process and cached. The module-to-distribution map is read
from ``top_level.txt`` files (cheap); only a module that map does not know makes
``importlib.metadata.packages_distributions()`` (which reads every ``RECORD``) run, once.
"""

from __future__ import annotations

import os
import site
import sys
import sysconfig
import types
from functools import lru_cache
from importlib import metadata

#: Top-level packages of this library itself: never the user's code, even from a checkout.
_OWN = frozenset({"daskperiment", "daskperiment_store"})


@lru_cache(maxsize=1)
def _system_dirs() -> tuple[str, ...]:
    """Directories holding the standard library and installed distributions."""
    found = set()
    paths = sysconfig.get_paths()
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        if paths.get(key):
            found.add(os.path.realpath(paths[key]))
    try:
        found.update(os.path.realpath(p) for p in site.getsitepackages())
    except AttributeError:  # pragma: no cover - virtualenvs of old style
        pass
    user = site.getusersitepackages() if hasattr(site, "getusersitepackages") else None
    if isinstance(user, str):
        found.add(os.path.realpath(user))
    return tuple(sorted(d.rstrip(os.sep) + os.sep for d in found))


def is_installed_path(path: str) -> bool:
    """Whether ``path`` is a file of the standard library or of an installed distribution."""
    real = os.path.realpath(path)
    if any(real.startswith(d) for d in _system_dirs()):
        return True
    parts = real.split(os.sep)
    return "site-packages" in parts or "dist-packages" in parts


@lru_cache(maxsize=1)
def _declared() -> dict[str, tuple[str, ...]]:
    """Top-level module -> distributions, from ``top_level.txt`` files and dist names.

    Cheap (one small file per distribution); :func:`_inferred` reads every ``RECORD`` file
    and is used only for a module this map does not know.
    """
    found: dict[str, set[str]] = {}
    try:
        dists = list(metadata.distributions())
    except Exception:  # noqa: BLE001 - broken metadata must not break a trial
        return {}
    for dist in dists:
        name = dist.metadata["Name"] if dist.metadata else None
        if not name:
            continue
        found.setdefault(name.lower().replace("-", "_").replace(".", "_"), set()).add(name)
        text = dist.read_text("top_level.txt") or ""
        for line in text.split():
            found.setdefault(line.strip(), set()).add(name)
    return {top: tuple(sorted(names)) for top, names in found.items()}


@lru_cache(maxsize=1)
def _inferred() -> dict[str, tuple[str, ...]]:
    try:
        return {k: tuple(sorted(set(v))) for k, v in metadata.packages_distributions().items()}
    except Exception:  # noqa: BLE001 - broken metadata must not break a trial
        return {}


def distributions_of(top: str) -> tuple[str, ...]:
    """The installed distributions providing top-level module ``top``."""
    return _declared().get(top) or _inferred().get(top, ())


@lru_cache(maxsize=4096)
def is_local_module_name(name: str, file: str | None) -> bool:
    """Whether module ``name`` loaded from ``file`` is the user's own code."""
    if name == "__main__":
        return True
    top = name.partition(".")[0]
    if not file or top in _OWN or top in sys.stdlib_module_names:
        return False
    if file.startswith("<"):  # exec'd or frozen
        return False
    return not is_installed_path(file)


def is_local_module(module: types.ModuleType) -> bool:
    """Whether ``module`` is the user's own code (see the module docstring)."""
    return is_local_module_name(module.__name__, getattr(module, "__file__", None))


def is_local_name(module_name: str | None) -> bool:
    """Whether the module called ``module_name`` (a ``__module__`` attribute) is local."""
    if not module_name:
        return False
    module = sys.modules.get(module_name)
    if module is None:
        # A script run by `daskperiment run` is no module once it ran.
        return module_name in ("__main__", "__daskperiment__")
    return is_local_module(module)


def is_local_function(func: types.FunctionType) -> bool:
    """Whether ``func`` is the user's own code, judged by the module it was defined in."""
    namespace = func.__globals__
    name = namespace.get("__name__")
    if not isinstance(name, str):
        return False
    file = namespace.get("__file__")
    return is_local_module_name(name, file if isinstance(file, str) else None)


@lru_cache(maxsize=4096)
def versions_of(top: str) -> tuple[tuple[str, str], ...]:
    """``((distribution, version), ...)`` providing top-level module ``top``; () if none."""
    if top in sys.stdlib_module_names or top in _OWN or not top or top.startswith("_"):
        return ()
    try:  # the usual case, and cheap: the distribution is named as its module (numpy)
        return ((top, metadata.version(top)),)
    except (metadata.PackageNotFoundError, ValueError):
        pass
    out = []
    for dist in distributions_of(top):
        try:
            out.append((dist, metadata.version(dist)))
        except metadata.PackageNotFoundError:
            continue
    return tuple(out)


def libraries(modules: set[str]) -> dict[str, str]:
    """``{distribution: version}`` of the installed distributions behind ``modules``."""
    found: dict[str, str] = {}
    for name in sorted(modules):
        for dist, version in versions_of(name.partition(".")[0]):
            found[dist] = version
    return dict(sorted(found.items()))
