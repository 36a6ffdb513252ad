"""Regenerate docs/cli.md: run every example with the installed ``daskperiment`` command in a
fresh directory and write the real output under it.

    python docs/cli_examples.py            # rewrites docs/cli.md
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "cli.md"

SCRIPT = """\
import daskperiment
import numpy as np

ex = daskperiment.Experiment(id="quickstart_pj")
a = ex.parameter("a")
b = ex.parameter("b")


@ex.persist
def prepare_data(a, b):
    return a + b


@ex.result
def calculate_score(s):
    for i in range(10):
        ex.save_metric("dummy_score", epoch=i, value=100 - i * s)
    return 10 / s


s = calculate_score(prepare_data(a, b))
"""

INTRO = """\
# The `daskperiment` command

`daskperiment` (or `python -m daskperiment`) reads and shares the experiments recorded in a
store. Every example below was run by `docs/cli_examples.py` in a fresh directory, and the
output shown is what the command printed (regenerate with `python docs/cli_examples.py`).

## Stores

By default the commands read `./daskperiment_cache`, the directory where
`daskperiment.Experiment(id)` keeps one store per experiment (`daskperiment_cache/<id>`).
`--store PATH|URL` (before or after the command name) reads elsewhere:

- a URL (`s3://bucket/prefix`, `memory://...`, any fsspec URL) or a local path holding a
  `config` file is **one store**, holding any number of experiments by id;
- any other local path is a **directory of stores**: experiment `EXP` lives in `PATH/EXP`.

The same rule applies to the `URL` of `push` and `pull`.

## Exit status and errors

- `0`: success.
- `1`: an expected failure (unknown experiment or trial, missing or corrupt object, a
  conflict, a bad bundle file, an unreachable store) — one line on stderr, no traceback
  (`--debug` adds the traceback) — and `diff --exit-code` when the trials differ.
- `2`: a usage error (unknown command or option, malformed argument): one line on stderr.
- `daskperiment run` behaves as `python SCRIPT`: a failing trial prints its traceback.

Output is plain text meant for pipes (`| grep`, `| head` are fine); `--format json` (and
`csv` for tables) is there for programs. Colour is used only by `diff`, and only on a
terminal (`--color always|never` overrides; `NO_COLOR` is honoured).

"""


class Doc:
    """Runs commands in one directory and collects markdown."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.parts: list[str] = [INTRO]
        self.env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR",)}
        self.env["COLUMNS"] = "100"

    def text(self, markdown: str) -> None:
        self.parts.append(markdown.rstrip("\n") + "\n\n")

    def run(self, command: str, *, merge: bool = True, show_status: bool = False) -> str:
        """Run ``command`` (a shell line starting with daskperiment) and document it."""
        argv = shlex.split(command)
        if argv[0] == "daskperiment":
            argv[0] = shutil.which("daskperiment") or sys.exit("daskperiment is not installed")
        done = subprocess.run(
            argv,
            cwd=self.workdir,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if merge else subprocess.DEVNULL,
            text=True,
            timeout=300,
        )
        lines = [f"$ {command}"]
        if done.stdout.strip():
            lines.append(done.stdout.rstrip())
        if show_status or done.returncode:
            lines.append(f"(exit status {done.returncode})")
        self.parts.append("```console\n" + "\n".join(lines) + "\n```\n\n")
        return done.stdout

    def write(self, path: Path) -> None:
        path.write_text("".join(self.parts).rstrip("\n") + "\n")


def oid_of(doc: Doc, *path: str) -> str:
    """Look up a digest with the command itself (``show --format json``)."""
    argv = [shutil.which("daskperiment") or "daskperiment", "show", "quickstart_pj", "3"]
    record = json.loads(
        subprocess.run(
            [*argv, "--format", "json"], cwd=doc.workdir, capture_output=True, text=True
        ).stdout
    )
    value = record
    for key in path:
        value = value[key]
    return value


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="daskperiment-cli-") as tmp:
        workdir = Path(tmp)
        (workdir / "quickstart_script.py").write_text(SCRIPT)
        doc = Doc(workdir)
        sections(doc, workdir)
        doc.write(OUT)
    print(f"wrote {OUT}")


def sections(doc: Doc, workdir: Path) -> None:
    doc.text("## run: record trials from a script\n")
    doc.text(
        "`daskperiment run SCRIPT [name=value ...] [--seed N]` executes the script (with "
        "`__name__ == '__daskperiment__'`), sets the parameters and computes one trial of the "
        "`@ex.result` it builds, then prints the result. The script used here "
        "(`quickstart_script.py`; `examples/my_experiment.py` is another, runnable example: "
        "`daskperiment run examples/my_experiment.py n=500 noise=0.5 --seed 1`):\n\n"
        "```python\n" + SCRIPT + "```"
    )
    doc.run("daskperiment run quickstart_script.py a=1 b=2 --seed 1")
    doc.run("daskperiment run quickstart_script.py a=1 b=3 --seed 2")
    script = workdir / "quickstart_script.py"
    script.write_text(SCRIPT.replace("return 10 / s", "return 10 / s + 1"))
    doc.text(
        "Then `calculate_score` is edited (`return 10 / s + 1`) and the same parameters run again:"
    )
    doc.run("daskperiment run quickstart_script.py a=1 b=3 --seed 2")

    doc.text("## list: experiments in the store\n")
    doc.run("daskperiment list")
    doc.run("daskperiment list --format json")

    doc.text("## log: the history of an experiment\n")
    doc.text(
        "The table is `get_history()`'s without `Result Type` and `Process Time`: "
        "`--verbose` adds them, with status, seed, digests, reused steps, global id and "
        "origin; `--columns` picks any of them; `--format csv|json`. "
        "`--uses PATH|DIGEST` lists instead the trials whose steps read a file (any version) "
        "or used a digest: see [lineage](provenance.md#lineage)."
    )
    doc.run("daskperiment log quickstart_pj")
    doc.run("daskperiment log quickstart_pj --format csv")
    doc.run("daskperiment log quickstart_pj --verbose --format json")

    doc.text("## show: one trial\n")
    doc.run("daskperiment show quickstart_pj 3")

    doc.text("## diff: what changed between two trials\n")
    doc.text(
        "Rendered like `git diff`. Everything is decided from digests first: parts whose "
        "digests are equal are never read. Files: `parameters`, `trial` (seed, status, "
        "description), one per changed step's source, `steps` (input and output digests), "
        "`result`, `metrics/<key>` (summary statistics), `environment/<category>`. "
        "`--code`, `--params`, `--env` select parts; `--stat` summarises; `--exit-code` exits "
        "with 1 when the trials differ (0 when not); `--format json` for programs."
    )
    doc.run("daskperiment diff quickstart_pj 1 2")
    doc.run("daskperiment diff quickstart_pj 2 3 --code")
    doc.run("daskperiment diff quickstart_pj 1 3 --stat")
    doc.run("daskperiment diff quickstart_pj 2 3 --params --exit-code", show_status=True)

    doc.text("## code: the code a trial ran\n")
    doc.text(
        "Decorator lines are left out, as `ex.get_code()` shows it; TRIAL defaults to the last."
    )
    doc.run("daskperiment code quickstart_pj 1")

    doc.text("## cat: an object by digest\n")
    doc.text(
        "JSON objects are printed as stored (links to other objects appear as "
        '`{"$link": oid}`), text as is, arrays and tables as numpy/pandas print them, bytes raw. '
        "**Pickle objects are not loaded** unless `--unpickle-runs-code` is given: loading a "
        "pickle runs code chosen by whoever stored it. `--info` shows kind and sizes only."
    )
    doc.run(f"daskperiment cat {oid_of(doc, 'record')}")
    tree = doc.run(f"daskperiment cat {oid_of(doc, 'digests', 'code')}")
    doc.text("A step's source, linked from the code tree above, is text:")
    doc.run(f"daskperiment cat {json.loads(tree)['steps'][0][1]['$link']}")
    doc.run(f"daskperiment cat {oid_of(doc, 'metrics', 'dummy_score')}")
    doc.run(f"daskperiment cat {oid_of(doc, 'digests', 'code')} --info")
    pickled = subprocess.run(
        [
            sys.executable,
            "-c",
            "import daskperiment_store as store; print(store.open('daskperiment_cache/quickstart_pj').put({1, 2}))",
        ],
        cwd=workdir,
        capture_output=True,
        text=True,
    ).stdout.strip()
    doc.text("An object only pickle can hold (here a set) is refused without the flag:")
    doc.run(f"daskperiment cat {pickled}")

    doc.text("## export and import: bundle files\n")
    doc.text(
        "`export EXP [TRIAL...] -o FILE` writes the trials (default: every finished one) and "
        "every object they reach into one file. `import FILE [--as NEW_ID]` verifies every "
        "object before writing it and never unpickles anything. See docs/sharing.md for the "
        "rules."
    )
    doc.run("daskperiment export quickstart_pj 1 3 -o trials.dpb")
    doc.text("Importing into the store the trials came from changes nothing:")
    doc.run("daskperiment import trials.dpb")
    doc.text(
        "Into a store whose `quickstart_pj` has trials of its own, the arriving trials whose "
        "numbers are taken get the next free ones; their origin is kept (docs/sharing.md):"
    )
    other = workdir / "colleague"
    other.mkdir()
    (other / "quickstart_script.py").write_text(SCRIPT)
    subprocess.run(
        [
            shutil.which("daskperiment") or "daskperiment",
            "run",
            "quickstart_script.py",
            "a=5",
            "b=5",
        ],
        cwd=other,
        capture_output=True,
    )
    doc.run("daskperiment import trials.dpb --store colleague/daskperiment_cache")
    doc.run("daskperiment show quickstart_pj 2 --store colleague/daskperiment_cache")
    doc.text("Or under another experiment id:")
    doc.run(
        "daskperiment import trials.dpb --store colleague/daskperiment_cache --as quickstart_alice"
    )
    doc.run("daskperiment list --store colleague/daskperiment_cache")

    doc.text("## push and pull: between stores\n")
    doc.text(
        "`push EXP URL` copies the experiment's finished trials and the objects the other "
        "store lacks; a second push copies nothing. `pull EXP URL` is the other way."
    )
    doc.run("daskperiment push quickstart_pj team_stores")
    doc.run("daskperiment push quickstart_pj team_stores")
    doc.run("daskperiment pull quickstart_pj team_stores --store laptop")

    doc.text("## tag, untag, note, archive, unarchive, delete: managing trials\n")
    doc.text(
        "Annotations are their own objects: records never change. Tags and notes travel with "
        "push, pull and bundles and merge as a union; every change is kept with who made it "
        "and when (`ex.get_annotations(n)`). A trial is named by its number or by a prefix of "
        "its global id (`log -v` shows them)."
    )
    doc.run("daskperiment tag quickstart_pj 2 baseline")
    doc.run("daskperiment note quickstart_pj 2 'b=3 looks best so far'")
    doc.run("daskperiment archive quickstart_pj 1")
    doc.run("daskperiment log quickstart_pj")
    doc.run("daskperiment log quickstart_pj --all --columns b,result,tags")
    doc.run("daskperiment unarchive quickstart_pj 1")

    doc.text("## log --where, --sort, -n, --columns, --tag: searching the history\n")
    doc.text(
        "`--where` takes the dashboard's filter language: space-separated terms that must all "
        "hold, `name OP value` with `= != > < >= <=` or `~` (contains), column names in any "
        "case (`id` is the trial number), and bare words searched in every cell. `--sort "
        "COL[:desc]`, `-n N` (the last N trials; with `--sort`, the first N rows after sorting), `--columns a,b`, `--tag T` (repeatable), "
        "`--all` (archived trials too)."
    )
    doc.run("daskperiment log quickstart_pj --where 'b>=3' --sort result:desc -n 2")
    doc.run("daskperiment log quickstart_pj --tag baseline --format json")
    doc.run("daskperiment log quickstart_pj --where 'b>=3 nosuch=1'")
    doc.text(
        "`delete` asks first (`--yes` for scripts); `gc` then reclaims what no other trial, "
        "cache entry or ref reaches:"
    )
    doc.run("daskperiment delete quickstart_pj 3")
    doc.run("daskperiment delete quickstart_pj 3 --yes")

    doc.text("## fsck and gc: maintenance\n")
    doc.text(
        "`fsck` verifies every object against its digest, every ref and every link (exit "
        "status 1 when something is wrong). `gc` removes objects no ref reaches and leftover "
        "temp files older than `--grace` seconds (default 3600, so running writers are safe); "
        "`--dry-run` only lists them."
    )
    doc.run("daskperiment fsck")
    doc.run("daskperiment gc --dry-run")

    doc.text("## board: the dashboard\n")
    doc.run("daskperiment board --help")

    doc.text("## Errors\n")
    doc.run("daskperiment log quickstart")
    doc.run("daskperiment show quickstart_pj 12")
    doc.run("daskperiment diff quickstart_pj one 2")

    doc.text("## Help\n")
    doc.text("Every command has `--help` with an example:")
    doc.run("daskperiment --help")
    doc.run("daskperiment diff --help")


if __name__ == "__main__":
    main()
