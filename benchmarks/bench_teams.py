"""Team sharing and the searchable log.

1. **Push of 1,000 trials of which 500 are already there.** An experiment runs ``--trials``
   trials (default 1,000; a persisted 64 KiB array per trial, odd trials distinct, even trials
   one shared array, plus a metric); the first half is pushed to an empty local store first,
   then the whole experiment is pushed: seconds and objects/bytes copied by that second push,
   then a third push (everything there). Runs on any version of daskperiment, so the same
   script measures the code before global identity (``PYTHONPATH=<old checkout>``).
2. **``daskperiment log --where`` on 10,000 trials in a fresh process.** ``--log-trials``
   records (copies of one real trial with other parameters and global ids, indexed as a
   writer process indexes them), then ``daskperiment log EXP --where 'a=3 lr>0.5' --sort
   lr:desc -n 20`` in a new process: its wall time, and the time inside the process from
   the first import of daskperiment to the output, beside the same command on the DataFrame
   path (``DASKPERIMENT_LOG_PATH=frame``; ``--no-log`` skips this part). Only this figure:

    python benchmarks/bench_teams.py --no-push [--log-trials 10000] [--repeat 5]

3. **Pull of 1,000 trials into a moto S3 store where 500 numbers are taken** (``--s3-pull``
   or ``--only s3-pull``): a local store of ``--trials`` synthetic trials (copies of one real
   trial with other parameters and global ids) is pulled into a fresh S3 bucket (the tests'
   moto server on 127.0.0.1) already holding trials 1 to ``--trials / 2``; side by side, the
   placement of the trials one at a time (the code before batched placement, kept below as
   :func:`place_one_at_a_time`) and the batched placement with claims
   (daskperiment/placement.py): seconds of the whole pull and of placing alone, medians of
   ``--repeat`` runs, their ratio and the load average. Once as moto answers (its writes
   one at a time, each a few ms of its CPU: request count decides) and once with 20 ms added
   to every request (``--latency-ms``; S3's round trip: requests in flight decide).

    python benchmarks/bench_teams.py [--trials 1000] [--log-trials 10000] [--repeat 5]
    python benchmarks/bench_teams.py --only s3-pull [--trials 1000] [--repeat 3] \
        [--latency-ms 0 20]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import daskperiment
from daskperiment import sharing

ITEMS = (64 << 10) // 8
#: Whether the moto server runs writes one at a time (the tests' setting, for conditional
#: writes); ``--parallel-moto`` lets it serve them concurrently, as S3 does.
SERIALIZE = True
EXP = "bench_team"


def run_trials(ex: Any, step: Any, first: int, last: int) -> None:
    for n in range(first, last + 1):
        ex.set_parameters(i=n)
        step.compute(seed=1)


def experiment(path: Path) -> tuple[Any, Any]:
    ex = daskperiment.Experiment(EXP, backend=path)
    i = ex.parameter("i")

    @ex.persist
    def make_data(i):
        return np.random.default_rng(i if i % 2 else 0).random(ITEMS)

    @ex.result
    def score(data):
        ex.save_metric("mean", epoch=0, value=float(data.mean()))
        return float(data[0])

    return ex, score(make_data(i))


def bench_push(root: Path, trials: int) -> dict[str, Any]:
    ex, step = experiment(root / "src")
    half = trials // 2
    run_trials(ex, step, 1, half)
    sharing.push_trials(ex.store, EXP, str(root / "team"))
    run_trials(ex, step, half + 1, trials)
    started = time.perf_counter()
    second = sharing.push_trials(ex.store, EXP, str(root / "team"))
    elapsed = time.perf_counter() - started
    started = time.perf_counter()
    third = sharing.push_trials(ex.store, EXP, str(root / "team"))
    again = time.perf_counter() - started
    return {
        "trials": trials,
        "already_there": half,
        "seconds": round(elapsed, 3),
        "trials_added": len(second.trials_added),
        "objects_copied": second.objects_copied,
        "bytes_copied": second.bytes_copied,
        "resend_seconds": round(again, 3),
        "resend_objects": third.objects_copied,
    }


def build_log_store(root: Path, trials: int) -> Path:
    """A cache directory whose experiment has ``trials`` indexed trials."""
    from daskperiment import history

    work = root / "log"
    ex = daskperiment.Experiment(EXP, backend=work / "daskperiment_cache" / EXP)
    a = ex.parameter("a")
    lr = ex.parameter("lr")

    @ex.result
    def fit(a, lr):
        return a * lr

    ex.set_parameters(a=0, lr=0.0)
    fit(a, lr).compute(seed=1)
    st = ex.store
    base = dict(st.get(st.refs.get(f"experiments/{EXP}/trials/1")))
    rows = []
    for n in range(2, trials + 1):
        params = {"a": n % 7, "lr": n / trials}
        record = dict(base, trial_id=n, global_id=f"{n:032x}", params=params)
        oid = st.put(record)
        st.refs.create(f"experiments/{EXP}/trials/{n}", oid)
        rows.append(history.row_of(record, oid, n))
    history.flush_index(st, EXP, rows)
    return work


_TIMED = """
import sys, time
started = time.perf_counter()
from daskperiment.cli import main
code = main(sys.argv[1:])
sys.stderr.write(f"INSIDE {time.perf_counter() - started:.4f}\\n")
sys.exit(code)
"""


def bench_log(work: Path, repeat: int) -> dict[str, Any]:
    """``log --where`` in fresh processes: the plain path (what ``log`` does) beside the
    DataFrame path (``DASKPERIMENT_LOG_PATH=frame``, the same text through pandas), rounds
    interleaved so the machine's load hits both."""
    args = ["log", EXP, "--where", "a=3 lr>0.5", "--sort", "lr:desc", "-n", "20"]
    repo = str(Path(__file__).resolve().parents[1])
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")])),
    }
    env.pop("DASKPERIMENT_LOG_PATH", None)
    runs: dict[str, dict[str, list[float]]] = {"plain": {}, "frame": {}}
    outputs = {}
    for _ in range(repeat):
        for path in runs:
            run_env = dict(env, DASKPERIMENT_LOG_PATH=path)
            started = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-c", _TIMED, *args], cwd=work, capture_output=True, text=True,
                env=run_env,
            )  # fmt: skip
            wall = time.perf_counter() - started
            if done.returncode != 0:
                raise SystemExit(done.stderr)
            runs[path].setdefault("wall", []).append(wall)
            runs[path].setdefault("inside", []).append(float(done.stderr.rsplit("INSIDE ", 1)[1]))
            outputs[path] = done.stdout
    if outputs["plain"] != outputs["frame"]:
        raise SystemExit("log --where: the plain path and the DataFrame path print different text")
    m = statistics.median
    print(f"log --where on {EXP} ({' '.join(args[2:])}), fresh processes, medians of {repeat}; "
          f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")  # fmt: skip
    plain, frame = m(runs["plain"]["wall"]), m(runs["frame"]["wall"])
    print(f"  daskperiment log --where (wall)   {plain:7.3f} s   DataFrame path {frame:7.3f} s   "
          f"ratio {plain / frame:4.2f}x   goal <= 0.5 s")  # fmt: skip
    return {
        "rows_shown": outputs["plain"].count("\n") - 2,
        "wall_median_s": round(plain, 3),
        "inside_median_s": round(m(runs["plain"]["inside"]), 3),
        "dataframe_path_wall_median_s": round(frame, 3),
        "dataframe_path_inside_median_s": round(m(runs["frame"]["inside"]), 3),
    }


# ---------------------------------------------------------------------------------------
# Pull into S3 with half the numbers taken: one at a time vs batched
# ---------------------------------------------------------------------------------------


def synthetic_store(path: Path, trials: int, first: int = 1, tag: str = "a") -> Any:
    """A local store of ``trials`` finished trials numbered from ``first``: copies of one
    real trial with other parameters and global ids (distinct records, shared objects)."""
    import daskperiment_store as store
    from daskperiment import history

    ex = daskperiment.Experiment(EXP, backend=path)
    a = ex.parameter("a")

    @ex.result
    def fit(a):
        return a * 2

    ex.set_parameters(a=0)
    fit(a).compute(seed=1)
    st = ex.store
    base = dict(st.get(st.refs.get(f"experiments/{EXP}/trials/1")))
    rows = []
    for n in range(first, first + trials):
        record = dict(base, trial_id=n, global_id=f"{tag}{n:031x}", params={"a": n})
        oid = st.put(record)
        st.refs.set(f"experiments/{EXP}/trials/{n}", oid)
        rows.append(history.row_of(record, oid, n))
    history.flush_index(st, EXP, rows)
    return store.open(str(path), create=False)


def place_one_at_a_time(st: Any, experiment_id: str, arriving: Any, source: str, taken=None):
    """The placement before batches and claims, as it was: one listing, then per trial a
    ref create per candidate number and its origin, one after the other."""
    import daskperiment_store as store
    from daskperiment import identity
    from daskperiment.ids import parse_trial_id
    from daskperiment.placement import Placement
    from daskperiment.record import origin_ref, trial_ref, trials_prefix

    prefix = trials_prefix(experiment_id)
    names = st.refs.names(prefix)
    taken = {n for n in (parse_trial_id(x[len(prefix) :]) for x in names) if n is not None}
    out = Placement()
    for number in sorted(arriving):
        oid, record = arriving[number]
        candidate = number if number not in taken else max(taken) + 1
        while True:
            try:
                st.refs.create(trial_ref(experiment_id, candidate), store.Oid(oid))
                break
            except store.errors.RefExists:
                taken.add(candidate)
                candidate = max(taken) + 1
        taken.add(candidate)
        out.added[number] = candidate
        origin = st.put(identity.origin_object(oid, record, source, number, candidate))
        st.refs.set(origin_ref(experiment_id, candidate), origin)
    return out


def bench_s3_pull(root: Path, trials: int, repeat: int, latency: float) -> dict[str, Any]:
    """Seconds to pull ``trials`` trials into an S3 store holding ``trials // 2`` others,
    every request to it taking ``latency`` seconds more."""
    import uuid

    import boto3

    import daskperiment_store as store
    from daskperiment import placement

    url, server = _moto(latency)
    try:
        source = synthetic_store(root / "pull-src", trials, tag="a")
        taken = synthetic_store(root / "pull-taken", trials // 2, tag="b")
        runs: dict[str, dict[str, list[float]]] = {}
        for _ in range(repeat):
            for name, fn in (("one_at_a_time", place_one_at_a_time), ("batched", placement.place)):
                bucket = f"bench-{uuid.uuid4().hex[:12]}"
                boto3.client("s3").create_bucket(Bucket=bucket)
                dst = store.open(f"s3://{bucket}/store", create=True)
                sharing.push_trials(taken, EXP, dst)  # numbers 1..trials/2 taken
                placing: list[float] = []

                def timed(*args: Any, fn: Any = fn, placing: list = placing, **kw: Any) -> Any:
                    started = time.perf_counter()
                    try:
                        return fn(*args, **kw)
                    finally:
                        placing.append(time.perf_counter() - started)

                sharing.place = timed  # type: ignore[assignment]
                try:
                    started = time.perf_counter()
                    report = sharing.pull_trials(dst, EXP, str(root / "pull-src"))
                    total = time.perf_counter() - started
                finally:
                    sharing.place = placement.place
                assert len(report.trials_added) == trials, report
                assert len(report.renumbered) == trials, report  # each keeps its order
                entry = runs.setdefault(name, {"pull_s": [], "place_s": []})
                entry["pull_s"].append(total)
                entry["place_s"].append(sum(placing))
        med = {n: {k: statistics.median(v) for k, v in e.items()} for n, e in runs.items()}
        return {
            "trials": trials,
            "numbers_taken": trials // 2,
            "repeat": repeat,
            "latency_ms": latency * 1000,
            **{f"{n}_{k}": round(v, 3) for n, e in med.items() for k, v in e.items()},
            "pull_ratio": round(med["one_at_a_time"]["pull_s"] / med["batched"]["pull_s"], 2),
            "place_ratio": round(med["one_at_a_time"]["place_s"] / med["batched"]["place_s"], 2),
            "loadavg": [round(x, 2) for x in os.getloadavg()],
            "source_store": source.url,
        }
    finally:
        server.stop()


_LATENT_SERVER = """
import sys, time
sys.path.insert(0, sys.argv[1])
import s3server
from werkzeug.serving import WSGIRequestHandler, make_server

latency, serialize = float(sys.argv[2]), sys.argv[3] == "1"
app = s3server._app(serialize)

def latent(environ, start_response):
    time.sleep(latency)  # the network's round trip, outside moto's write lock
    return app(environ, start_response)

class Quiet(WSGIRequestHandler):
    def log_request(self, *a, **k):
        pass

server = make_server("127.0.0.1", 0, latent, threaded=True, request_handler=Quiet)
print(f"PORT {server.server_port}", flush=True)
server.serve_forever()
"""


class _LatentServer:
    """The tests' moto app behind ``latency`` seconds per request (S3's round trip)."""

    def __init__(self, tests: Path, latency: float) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _LATENT_SERVER, str(tests), str(latency), str(int(SERIALIZE))],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )

    def start(self) -> str:
        from s3server import _wait_for_port

        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("PORT "):
            self.stop()
            raise SystemExit(f"the moto server did not start ({line!r})")
        port = int(line.split()[1])
        _wait_for_port(port, 30)
        return f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def _moto(latency: float = 0.0) -> tuple[str, Any]:
    """The tests' moto server on 127.0.0.1 (``latency``: seconds added to every request),
    with this process's AWS settings pointing at it."""
    tests = Path(__file__).resolve().parent.parent / "tests"
    sys.path.insert(0, str(tests))
    from s3server import S3Server

    server: Any = _LatentServer(tests, latency) if latency else S3Server(serialize=SERIALIZE)
    endpoint = server.start()
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL=endpoint,
        AWS_ENDPOINT_URL_S3=endpoint,
    )
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()  # one made for an earlier server would be reused
    return endpoint, server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--log-trials", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-log", action="store_true")
    parser.add_argument("--no-push", action="store_true")
    parser.add_argument(
        "--s3-pull", action="store_true", help="also the pull into moto S3 (numbers taken)"
    )
    parser.add_argument("--only", choices=["push", "log", "s3-pull"], help="one section only")
    parser.add_argument(
        "--latency-ms",
        type=float,
        nargs="+",
        default=[0.0, 20.0],
        help="extra milliseconds per S3 request, each a run (default: 0 and 20, S3's order)",
    )
    parser.add_argument(
        "--parallel-moto", action="store_true", help="moto serves writes concurrently (as S3)"
    )
    args = parser.parse_args()
    global SERIALIZE
    SERIALIZE = not args.parallel_moto
    if args.only:
        args.no_push, args.no_log = args.only != "push", args.only != "log"
        args.s3_pull = args.only == "s3-pull"
    logging.getLogger("daskperiment").setLevel(logging.WARNING)
    print(f"daskperiment from {os.path.dirname(daskperiment.__file__)}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if not args.no_push:
            print("push:", bench_push(root, args.trials))
        if not args.no_log:
            work = build_log_store(root, args.log_trials)
            print("log --where:", bench_log(work, args.repeat))
        if args.s3_pull:
            for latency in args.latency_ms:
                got = bench_s3_pull(root / f"l{latency}", args.trials, args.repeat, latency / 1000)
                print("pull into S3, half the numbers taken:", got)


if __name__ == "__main__":
    main()
