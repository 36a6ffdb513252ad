"""Step caching benchmarks: figures for docs/performance.md, measured side by side in one run.

    python benchmarks/bench_cache.py [--dir DIR] [--rounds 3] [--mb 100] [--seconds 2]
        [--trials 200] [--json FILE]

* **Repeat vs first trial**: a cached step that takes ``--seconds`` s and returns a ``--mb`` MB
  array (random, so incompressible: the worst case for reading it back), consumed by an
  uncached result step. The first trial runs and stores it; the repeat (a new seed) loads it.
  Also the repeat when nothing downstream needs the array (a cached chain: nothing is read).
  Each round uses a fresh store; medians over ``--rounds``. Goal: repeat <= 5% of first.
* **Cost of a miss**: the quickstart's two-step scalar pipeline with its first step
  ``@ex.persist`` vs ``@ex.persist(cache=True)`` under a new parameter value every trial (so
  every lookup misses and an entry is written), run in interleaved blocks of trials;
  medians, and the spread of the no-cache block medians as the noise. Also the same pipeline
  when every cached step hits. Goal: a miss within the noise of no caching.

The ``daskperiment`` log records are discarded so the terminal shows only the figures.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import daskperiment

MB = 1 << 20
FIGURES: dict[str, Any] = {}


def quiet_log() -> None:
    logging.getLogger("daskperiment").addHandler(logging.NullHandler())


def timed(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# --- repeat vs first --------------------------------------------------------------------------


def big_pipeline(ex: Any, seconds: float, mb: int, chain: bool) -> Any:
    """``make(n)`` (cached, slow, ``mb`` MB) -> [``summary`` (cached)] -> ``score``."""
    n = ex.parameter("n")

    @ex.persist(cache=True)
    def make(n):
        started = time.perf_counter()
        data = np.random.default_rng(n).random(mb * MB // 8)
        time.sleep(max(0.0, seconds - (time.perf_counter() - started)))
        return data

    @ex.persist(cache=True)
    def summary(data):
        return float(data[:1000].sum())

    @ex.result
    def score(x):
        return float(x[:1000].sum()) if isinstance(x, np.ndarray) else x

    return score(summary(make(n)) if chain else make(n))


def bench_repeat(base: Path, rounds: int, seconds: float, mb: int) -> None:
    print(f"\nCached step of {seconds:g} s giving a {mb} MB array (sync scheduler)", flush=True)
    firsts, repeats, chains = [], [], []
    for r in range(rounds):
        for chain, out in ((False, repeats), (True, chains)):
            ex = daskperiment.Experiment(
                id=f"repeat_{r}_{int(chain)}", backend=base / f"r{r}{chain}"
            )
            result = big_pipeline(ex, seconds, mb, chain)
            ex.set_parameters(n=r)
            first = timed(lambda result=result: result.compute(scheduler="sync"))
            if not chain:
                firsts.append(first)
            out.append(timed(lambda result=result: result.compute(scheduler="sync")))
            assert ex.get_trial(2)["steps"]["make"]["reused"]
    first, repeat, chain = (statistics.median(v) for v in (firsts, repeats, chains))
    FIGURES["repeat"] = {
        "first_s": first,
        "repeat_s": repeat,
        "repeat_chain_s": chain,
        "repeat_ratio": repeat / first,
        "rounds": rounds,
        "mb": mb,
    }
    print(f"  first trial (runs + stores)            {first * 1000:9.1f} ms")
    print(
        f"  repeat, result reads the array          {repeat * 1000:9.1f} ms   "
        f"{repeat / first:6.2%} of first   goal <= 5%  {'ok' if repeat / first <= 0.05 else 'MISSED'}"
    )
    print(
        f"  repeat, cached chain (nothing read)     {chain * 1000:9.1f} ms   {chain / first:6.2%}"
    )


# --- cost of a miss -----------------------------------------------------------------------------


def scalar_pipeline(ex: Any, cache: bool) -> Any:
    a = ex.parameter("a")
    b = ex.parameter("b")

    @ex.persist(cache=cache)
    def prepare_data(a, b):
        return a + b

    @ex.result
    def calculate_score(s):
        return 10 / s

    return calculate_score(prepare_data(a, b))


def one_trial(ex: Any, result: Any, scheduler: str, a: int) -> float:
    ex.set_parameters(a=a, b=2)
    return timed(lambda: result.compute(scheduler=scheduler, seed=1))


def median_diff_ci(x: list[float], y: list[float], n: int = 2000) -> tuple[float, float]:
    """95% bootstrap interval of ``median(x) - median(y)``."""
    rng = np.random.default_rng(0)
    xs, ys = np.asarray(x), np.asarray(y)
    diffs = np.median(rng.choice(xs, (n, xs.size)), axis=1) - np.median(
        rng.choice(ys, (n, ys.size)), axis=1
    )
    low, high = np.percentile(diffs, [2.5, 97.5])
    return float(low), float(high)


def bench_miss(base: Path, trials: int, scheduler: str) -> None:
    """Configurations run trial by trial in turn, so load from other processes hits all alike.

    "no cache (control)" is a second, identical no-cache experiment: the difference between
    the two no-cache medians shows what noise alone does.
    """
    print(f"\nTwo-step scalar pipeline, per trial ({scheduler} scheduler)", flush=True)
    configs = {  # label: (cache option, new parameter value every trial)
        "no cache": (False, True),
        "no cache (control)": (False, True),
        "cache, every trial a miss": (True, True),
        "cache, every trial a hit": (True, False),
    }
    pipes = {}
    for i, (label, (cache, _)) in enumerate(configs.items()):
        ex = daskperiment.Experiment(id=f"miss_{scheduler}_{i}", backend=base / f"m{scheduler}{i}")
        pipes[label] = (ex, scalar_pipeline(ex, cache))
    times: dict[str, list[float]] = {label: [] for label in configs}
    for t in range(10 + trials):  # the first 10 warm up (imports, thread pools)
        for label, (_, vary) in configs.items():
            ex, result = pipes[label]
            took = one_trial(ex, result, scheduler, t + 1 if vary else 1)
            if t >= 10:
                times[label].append(took)
    ms = {label: statistics.median(v) * 1000 for label, v in times.items()}
    base_med = ms["no cache"]
    out: dict[str, Any] = {"trials": trials, "median_ms": ms}
    for label in configs:
        low, high = median_diff_ci(times[label], times["no cache"])
        extra = ""
        if label != "no cache":
            extra = (
                f"   {ms[label] - base_med:+6.2f} ms vs no cache "
                f"(95% CI {low * 1000:+.2f} .. {high * 1000:+.2f})"
            )
            out[label + " ci_ms"] = [low * 1000, high * 1000]
        print(f"  {label:<28} median {ms[label]:7.2f} ms{extra}")
    low, high = out["cache, every trial a miss ci_ms"]
    control = abs(ms["no cache (control)"] - base_med)
    miss = ms["cache, every trial a miss"] - base_med
    within = low <= 0 <= high or abs(miss) <= control
    print(
        f"  miss overhead {miss:+.2f} ms ({miss / base_med:+.1%}); no cache vs its control "
        f"{control:.2f} ms   goal: within noise  {'ok' if within else 'MISSED'}"
    )
    write = entry_write_ms(base / f"w{scheduler}")
    out["entry_write_ms"] = write
    print(f"  for scale: writing one entry (object + ref) on this filesystem now: {write:.2f} ms")
    FIGURES[f"miss_{scheduler}"] = out


def entry_write_ms(path: Path, n: int = 200) -> float:
    """Median time of what a miss adds: one small new object and one ref pointing at it."""
    import daskperiment_store as store

    st = store.open(path)
    times = []
    for i in range(n):
        entry = {"type": "daskperiment.cache-entry", "trial": i, "output": "x" * 32}
        times.append(timed(lambda i=i, e=entry: st.refs.set(f"bench/{i}", st.put(e))))
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=None, help="where the stores go (tmp)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    quiet_log()
    base = Path(tempfile.mkdtemp(prefix="bench_cache_", dir=args.dir))
    try:
        bench_repeat(base, args.rounds, args.seconds, args.mb)
        for scheduler in ("sync", "threads"):
            bench_miss(base, args.trials, scheduler)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(FIGURES, indent=2))


if __name__ == "__main__":
    main()
