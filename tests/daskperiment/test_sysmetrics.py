"""System metrics (daskperiment/sysmetrics.py): sampled while steps run, stored as metrics."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

import daskperiment

pytest.importorskip("psutil")


def busy(seconds: float) -> int:
    """Keep one core busy for ``seconds``."""
    end, n = time.perf_counter() + seconds, 0
    while time.perf_counter() < end:
        n += 1
    return n


def busy_experiment(tmp_path: Path, name: str, **options: Any) -> Any:
    ex = daskperiment.Experiment(name, backend=tmp_path / name, **options)
    seconds = ex.parameter("seconds")

    @ex.result
    def spin(seconds):
        return busy(seconds)

    return ex, spin(seconds)


@pytest.mark.parametrize("scheduler", ["sync", "processes"])
def test_a_busy_step_records_cpu_and_memory(tmp_path: Path, scheduler: str) -> None:
    ex, result = busy_experiment(tmp_path, f"sys_{scheduler}")
    ex.set_parameters(seconds=3.0)
    result.compute(scheduler=scheduler)
    keys = ex.get_metric_keys(1)
    assert {"sys/cpu", "sys/mem"} <= set(keys)
    assert not [k for k in keys if k.startswith("sys/gpu")] or _has_gpu_library()
    cpu = ex.load_metric("sys/cpu", trial_id=1)[1]
    mem = ex.load_metric("sys/mem", trial_id=1)[1]
    assert 2 <= len(cpu) <= 4 and len(mem) == len(cpu)
    # epochs are seconds since the trial started, increasing, within the trial's duration
    epochs = list(cpu.index)
    assert epochs == sorted(epochs) and 0 < epochs[0] and epochs[-1] < 5
    assert cpu.median() > 5  # a busy loop: well above idle, even on a crowded machine
    assert (mem > 10).all()  # MiB of a Python process with numpy and pandas


def test_sampling_can_be_turned_off_per_experiment(tmp_path: Path) -> None:
    ex, result = busy_experiment(tmp_path, "sys_off", system_metrics=False)
    ex.set_parameters(seconds=1.6)
    result.compute(scheduler="sync")
    assert ex.get_metric_keys(1) == []
    # the same instance with the option again keeps it; True turns it back on
    again, _ = busy_experiment(tmp_path, "sys_off", system_metrics=True)
    assert again is ex


def test_a_short_step_costs_no_points(tmp_path: Path) -> None:
    ex, result = busy_experiment(tmp_path, "sys_short")
    ex.set_parameters(seconds=0.01)
    result.compute(scheduler="sync")
    assert ex.get_metric_keys(1) == []


def _has_gpu_library() -> bool:
    try:
        import pynvml  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        return False
    return True


def test_trials_of_a_sweep_are_sampled(tmp_path: Path) -> None:
    ex, result = busy_experiment(tmp_path, "sys_sweep")
    ex.sweep(result, grid={"seconds": [1.6, 1.7]}, scheduler="sync")
    for trial_id in (1, 2):
        assert {"sys/cpu", "sys/mem"} <= set(ex.get_metric_keys(trial_id))
        assert len(ex.load_metric("sys/mem", trial_id=trial_id)[trial_id]) >= 1
