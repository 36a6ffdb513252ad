"""The store's CPU per trial, before and after a change: alternating runs of two checkouts.

    python benchmarks/bench_storecpu.py --before REV [--rounds 5] [--trials 400]
        [--only pertrial,breakdown,flush]

``--before REV`` is a git revision of this repository (its files are extracted with
``git archive`` into a temporary directory); the other side is this checkout. Each round runs,
in fresh interpreters and alternating between the two sides:

- ``pertrial``: ``benchmarks/bench_pertrial.py --stores memory,shm`` (the seed's pipeline as
  trials beside plain ``dask.delayed``, interleaved trial by trial); medians over the rounds
  of its median, mean and CPU figures and of their ratios to plain dask.
- ``breakdown``: CPU per trial (process time, 1,024 trials on ``memory://`` after 64) spent
  in the store's calls, measured by wrapping them: ``Store.put``, ``codec.encode``,
  ``compress.compress``, ``compress.decompress``, and the batched flush
  (``ExperimentState._flush_index``: ``purity.flush`` and ``history.flush_index``, every
  32 trials, shown per trial). Wrapping adds ~0.3 us per call to each figure.

``instructions`` (needs valgrind; a few minutes): instructions per trial on ``memory://``
counted by callgrind, which the machine's load does not change: a run with 200 trials less a
run with none (same start-up and 10 warm-up trials), for each side.

``flush`` (this checkout only, in this process): one history index flush of 32 rows into a
chunk holding 0..224 rows, in an index of 1 or 391 chunks (100,000 trials), next to the same
flush done by encoding the whole chunk and root (how every flush was done before chunks were
kept encoded). Load averages are printed: rerun on a quiet machine for the exact figures.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

BREAKDOWN = r"""
import json, logging, sys, time
sys.path.insert(0, "benchmarks")
from bench_experiment import pipeline
import daskperiment
from daskperiment import history, purity, session
import daskperiment_store.store as store_mod
from daskperiment_store import codec, compress
logging.getLogger("daskperiment").setLevel(logging.WARNING)
spent = {}
def wrap(owner, name, label):
    real = getattr(owner, name)
    def timed(*args, **kwargs):
        t0 = time.process_time()
        try:
            return real(*args, **kwargs)
        finally:
            spent[label] = spent.get(label, 0.0) + time.process_time() - t0
    setattr(owner, name, timed)
wrap(store_mod.Store, "put", "Store.put")
wrap(codec, "encode", "codec.encode")
store_mod.codec.encode = codec.encode
wrap(compress, "compress", "compress.compress")
wrap(compress, "decompress", "compress.decompress")
wrap(session.ExperimentState, "_flush_index", "flush: all")
wrap(purity, "flush", "flush: purity refs")
wrap(history, "flush_index", "flush: history index")
ex = daskperiment.Experiment(id="breakdown_pj", backend="memory://breakdown")
result = pipeline(ex)
TRIALS, WARMUP = 1024, 64
for i in range(WARMUP + TRIALS):
    if i == WARMUP:
        spent.clear()
        c0 = time.process_time()
    ex.set_parameters(a=i, b=2)
    result.compute(scheduler="sync")
spent["trial (whole)"] = time.process_time() - c0
print(json.dumps({k: v / TRIALS * 1e6 for k, v in spent.items()}))
"""

INSTRUCTIONS = r"""
import logging, sys
sys.path.insert(0, "benchmarks")
from bench_experiment import pipeline
import daskperiment
logging.getLogger("daskperiment").setLevel(logging.WARNING)
ex = daskperiment.Experiment(id="ir_pj", backend="memory://ir")
result = pipeline(ex)
for i in range(10 + int(sys.argv[1])):
    ex.set_parameters(a=i, b=2)
    result.compute(scheduler="sync")
"""

ROWS = ("trial (whole)", "Store.put", "codec.encode", "compress.compress",
        "compress.decompress", "flush: all", "flush: purity refs", "flush: history index")  # fmt: skip
PERTRIAL_LINE = re.compile(
    r"\s+(plain dask.delayed|trial, memory://|trial, /dev/shm \(tmpfs\)|trial, \S+ \(disk\))"
    r"\s+([\d.]+)ms\s+([\d.]+)x\s+([\d.]+)ms\s+([\d.]+)x\s+([\d.]+)ms\s+([\d.]+)x"
)
PERTRIAL_NAMES = {"plain dask.delayed": "plain", "trial, memory://": "memory://",
                  "trial, /dev/shm (tmpfs)": "/dev/shm", "disk": "disk"}  # fmt: skip


def extract(rev: str, into: Path) -> Path:
    """The files of ``rev`` in a new directory under ``into``."""
    target = into / "before"
    target.mkdir()
    archive = subprocess.run(["git", "archive", rev], cwd=ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target


def run_in(tree: Path, args: list[str]) -> str:
    env = dict(os.environ, PYTHONPATH=str(tree))
    done = subprocess.run([sys.executable, *args], cwd=tree, env=env, capture_output=True,
                          text=True, check=True)  # fmt: skip
    return done.stdout


def pertrial(tree: Path, trials: int, disk: str | None = None) -> dict[str, tuple[float, ...]]:
    stores = ["--stores", "memory,shm,disk", "--dir", disk] if disk else ["--stores", "memory,shm"]
    out = run_in(tree, ["benchmarks/bench_pertrial.py", "--trials", str(trials), *stores])
    return {
        PERTRIAL_NAMES["disk" if m[1].endswith("(disk)") else m[1]]: tuple(
            float(m[i]) for i in range(2, 8)
        )
        for m in map(PERTRIAL_LINE.match, out.splitlines())
        if m
    }


def breakdown(tree: Path) -> dict[str, float]:
    import json

    return json.loads(run_in(tree, ["-c", BREAKDOWN]).strip().splitlines()[-1])


def instructions(tree: Path, trials: int = 200) -> float:
    """Instructions per trial (callgrind): ``trials`` trials less none."""
    counts = []
    for n in (0, trials):
        env = dict(os.environ, PYTHONPATH=str(tree))
        done = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
                               sys.executable, "-c", INSTRUCTIONS, str(n)], cwd=tree, env=env,
                              capture_output=True, text=True, check=True)  # fmt: skip
        found = re.search(r"Collected : (\d+)", done.stderr)
        if found is None:
            raise RuntimeError(f"no callgrind count in: {done.stderr[-500:]}")
        counts.append(int(found[1]))
    return (counts[1] - counts[0]) / trials


def report_pertrial(sides: dict[str, list[dict[str, tuple[float, ...]]]]) -> None:
    print(f"\nPer trial (bench_pertrial, medians of {len(next(iter(sides.values())))} rounds)")
    print(f"  {'':<22}{'median':>9}{'ratio':>7}{'mean':>9}{'ratio':>7}{'CPU':>9}{'ratio':>7}")
    for kind in PERTRIAL_NAMES.values():
        if kind not in next(iter(sides.values()))[0]:
            continue
        for side, runs in sides.items():
            f = [statistics.median(run[kind][i] for run in runs) for i in range(6)]
            print(f"  {kind + ', ' + side:<22}{f[0]:7.3f}ms{f[1]:6.2f}x{f[2]:7.3f}ms{f[3]:6.2f}x"
                  f"{f[4]:7.3f}ms{f[5]:6.2f}x")  # fmt: skip


def report_breakdown(sides: dict[str, list[dict[str, float]]]) -> None:
    names = list(sides)
    print("\nStore CPU per trial, us (memory://, wrapped calls, medians of the rounds)")
    print(f"  {'':<24}" + "".join(f"{n:>10}" for n in names))
    for row in ROWS:
        values = [statistics.median(run.get(row, 0.0) for run in sides[n]) for n in names]
        print(f"  {row:<24}" + "".join(f"{v:10.1f}" for v in values))


def flush_figures() -> None:
    """One flush of 32 rows, kept-encoded against whole re-encoding, in this process."""
    import daskperiment_store as store
    from daskperiment import history
    from daskperiment.record import index_ref
    from daskperiment_store import Link

    def row(n: int) -> dict[str, Any]:
        return {"trial_id": n, "global_id": f"{n:032x}", "record": f"{n + 1:032x}",
                "status": "success", "interrupted": False, "params": {"a": n, "b": 2},
                "parameter_order": ["a", "b"], "result": n / 7, "result_type": "float",
                "finished": 1.7e9 + n, "process_time": 0.0012, "description": None,
                "seed": 1000 + n, "reused": [],
                "digests": {k: f"{n + 2:032x}" for k in ("parameters", "code",
                                                          "environment", "result")}}  # fmt: skip

    def whole_flush(st: store.Store, exp: str, rows: list[dict[str, Any]], kept: dict) -> None:
        """A flush as done before: the root read and decoded, the chunk's rows taken from
        the ones this process wrote last (``kept``), the whole chunk and root encoded."""
        try:
            chunks = dict(history.chunk_links(st.get(st.refs.get(index_ref(exp)))))
        except store.errors.RefNotFound:
            chunks = {}
        k = str(rows[0]["trial_id"] // history.CHUNK_SIZE)
        merged = dict(kept.get(chunks[k].oid, {})) if k in chunks else {}
        merged.update((r["trial_id"], r) for r in rows)
        chunks[k] = Link(st.put(history.chunk_of(merged.values())))
        kept[chunks[k].oid] = merged
        st.refs.set(index_ref(exp), st.put({"type": history.INDEX_TYPE, "version": 1,
                                            "chunks": chunks}))  # fmt: skip

    def chunk_rows(st: store.Store, exp: str) -> dict:
        """The rows of every chunk, by chunk oid (what the flush before kept in memory)."""
        root = st.get(st.refs.get(index_ref(exp)))
        return {
            link.oid: history.rows_of_chunk(st.get(link.oid))
            for link in history.chunk_links(root).values()
        }

    print(f"\nOne index flush of 32 rows, ms (load average {os.getloadavg()[0]:.1f})")
    print(f"  {'chunks in the index, rows in the chunk':<42}{'kept encoded':>14}{'whole':>9}")
    for chunks in (1, 391):
        for fill in (0, 96, 224):
            base = (chunks - 1) * history.CHUNK_SIZE
            times = {"kept": [], "whole": []}
            for rep in range(7):
                for how in ("kept", "whole"):
                    st = store.open(store.MemoryBackend())
                    exp = f"flush_{how}_{rep}"
                    early = [row(n) for n in range(0, base, 8)]  # one row per 8: a big root
                    history.flush_index(st, exp, early + [row(base + n) for n in range(fill)])
                    rows = [row(base + fill + n) for n in range(32)]
                    kept = chunk_rows(st, exp) if how == "whole" and (early or fill) else {}
                    t0 = time.process_time()
                    if how == "kept":
                        history.flush_index(st, exp, rows)
                    else:
                        whole_flush(st, exp, rows, kept)
                    times[how].append(time.process_time() - t0)
            kept, whole = (statistics.median(times[h]) * 1000 for h in ("kept", "whole"))
            label = f"{chunks} chunk(s), {fill} rows before"
            print(f"  {label:<42}{kept:12.3f}ms{whole:7.3f}ms")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", help="git revision to compare with (pertrial, breakdown)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--trials", type=int, default=400)
    parser.add_argument("--disk", help="pertrial: also trials on a store in this directory")
    parser.add_argument("--only", default="pertrial,breakdown,flush",
                        help="any of pertrial, breakdown, flush, instructions")  # fmt: skip
    args = parser.parse_args(argv)
    only = set(args.only.split(","))
    print(f"load average at the start: {os.getloadavg()[0]:.1f}")
    if only & {"pertrial", "breakdown", "instructions"}:
        if not args.before:
            parser.error("pertrial, breakdown and instructions compare two checkouts: "
                         "give --before REV")  # fmt: skip
        with tempfile.TemporaryDirectory(prefix="bench-storecpu-") as tmp:
            trees = {"before": extract(args.before, Path(tmp)), "after": ROOT}
            runs: dict[str, dict[str, list[Any]]] = {"pertrial": {}, "breakdown": {}}
            for _ in range(args.rounds):
                for side, tree in trees.items():
                    if "pertrial" in only:
                        runs["pertrial"].setdefault(side, []).append(
                            pertrial(tree, args.trials, args.disk)
                        )
                    if "breakdown" in only:
                        runs["breakdown"].setdefault(side, []).append(breakdown(tree))
            if "instructions" in only:
                counts = {side: instructions(tree) for side, tree in trees.items()}
                print(
                    "\nInstructions per trial (callgrind, memory://, 200 trials): "
                    + ", ".join(f"{side} {n / 1e6:.2f} M" for side, n in counts.items())
                )
            if "pertrial" in only:
                report_pertrial(runs["pertrial"])
            if "breakdown" in only:
                report_breakdown(runs["breakdown"])
    if "flush" in only:
        sys.path.insert(0, str(ROOT))
        flush_figures()
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
