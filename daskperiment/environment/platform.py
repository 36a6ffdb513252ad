"""Operating system, Python interpreter, hardware, and the numpy/pandas builds.

None of these can change while a process runs (a package upgrade does not change the numpy
already imported), so each is read once per process by the caller's cache. Every value is
plain JSON data: dicts with string keys, lists, strings, integers, booleans and None.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import socket
import sys
from typing import Any


def platform_info() -> dict[str, Any]:
    """The operating system and machine architecture."""
    libc_name, libc_version = platform.libc_ver()
    return {
        "system": platform.system(),
        "release": platform.release(),
        "version": platform.version(),
        "machine": platform.machine(),
        "platform": platform.platform(),
        "libc": f"{libc_name} {libc_version}".strip() or None,
    }


def python_info() -> dict[str, Any]:
    """The interpreter: version, implementation, build and where it is."""
    build_no, build_date = platform.python_build()
    return {
        "version": platform.python_version(),
        "implementation": platform.python_implementation(),
        "compiler": platform.python_compiler(),
        "build": f"{build_no}, {build_date}",
        "executable": sys.executable,
    }


def hardware_info() -> dict[str, Any]:
    """Host name, CPUs (on the machine and usable by this process) and total memory."""
    try:
        usable: int | None = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on every platform
        usable = None
    return {
        "hostname": socket.gethostname(),
        "cpu_count": os.cpu_count(),
        "cpu_usable": usable,
        "cpu_model": _cpu_model(),
        "memory_total": _memory_total(),
    }


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _memory_total() -> int | None:
    """Physical memory in bytes, where ``sysconf`` can tell."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def numpy_info() -> dict[str, Any] | None:
    """numpy's version and build configuration (compilers, BLAS/LAPACK, SIMD), if installed."""
    if importlib.util.find_spec("numpy") is None:
        return None
    import numpy

    info: dict[str, Any] = {"version": numpy.__version__}
    try:
        # mode="dicts" (numpy >= 1.26) returns the configuration instead of printing it.
        info["config"] = jsonable(numpy.show_config(mode="dicts"))
    except Exception:  # older numpy, or a build without the configuration
        info["config"] = None
    return info


def pandas_info() -> dict[str, Any] | None:
    """pandas' version and the git revision it was built from, if installed."""
    if importlib.util.find_spec("pandas") is None:
        return None
    import pandas

    return {
        "version": pandas.__version__,
        "git_version": getattr(pandas, "__git_version__", None),
    }


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON data: tuples become lists, keys strings, other objects str."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return repr(value)  # the store's JSON keeps floats, but build info never needs them
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return str(value)
