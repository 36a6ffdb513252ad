"""Digests are forever: pinned values, and the same digests in every process.

The hex strings below are the digests this version gives to fixed values. They are part of the
store format: every store written so far names its objects by them, and daskperiment compares
them across trials to detect changes. A failure here means an encoding changed; that must not
happen silently (a new encoding needs a new kind or a new format version, see
docs/store-format.md). Do not update the strings to make the test pass.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from daskperiment_store.codec import Link, digest

REPO = Path(__file__).resolve().parents[2]


def golden_values() -> dict[str, Any]:
    """Fixed values, built with explicit dtypes so their construction cannot drift."""
    return {
        "dict": {"lr": 0.01, "layers": [64, 32], "name": "baseline", "dropout": None, "bn": True},
        "tuple": (1, ("x", -0.0), 2**70),
        "nan": float("nan"),
        "link": {"parent": Link("0123456789abcdef0123456789abcdef"), "$kind": "trial"},
        "int array": np.arange(12, dtype="<i8").reshape(3, 4),
        "str array": np.array(["a", "bc", "déf"], dtype="<U3"),
        "datetime array": np.array(["2020-01-01T00:00", "NaT"], dtype="<M8[ns]"),
        "dataframe": pd.DataFrame(
            {
                "x": pd.Series([1.5, 2.5], dtype="float64"),
                "s": pd.Series(["a", None], dtype=object),
                "c": pd.Categorical.from_codes(
                    [0, 1], categories=pd.Index(["u", "v"], dtype=object)
                ),
            },
            index=pd.Index([10, 20], dtype="int64", name="i"),
            columns=pd.Index(["x", "s", "c"], dtype=object),
        ),
        "bytes": b"\x00daskperiment\xff",
    }


GOLDEN = {
    "dict": "0c5f3c6901028a6d6abd01aead9e6111",
    "tuple": "a029e1ab404f85aab66119c3ba9edc65",
    "nan": "acb32d16987059e8376383836daadc43",
    "link": "7187fbb811cf4c32731034b054b75a46",
    "int array": "078f32736cec93cc7a799203d1553294",
    "str array": "75f7b85bc460c4cee5307b9062056ac9",
    "datetime array": "0856648b8dddb5df6ac2d7d9b6bd8531",
    "dataframe": "fbb2d2a54530a854e78287223cfa03a0",
    "bytes": "1479f8f62dcd773b1769a0e67fdf12a0",
}


@pytest.mark.parametrize("name", GOLDEN)
def test_digest_of_fixed_value_never_changes(name):
    assert digest(golden_values()[name]) == GOLDEN[name]


def hash_order_sensitive_values() -> dict[str, Any]:
    """Values whose construction order follows set iteration, which PYTHONHASHSEED changes."""
    words = {"alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"}
    return {
        "dict from set order": dict.fromkeys(words, 1),
        "nested dict from set order": {w: {v: w for v in words} for w in words},
    }


def digests_here() -> dict[str, str]:
    values = {**golden_values(), **hash_order_sensitive_values()}
    return {name: digest(value) for name, value in values.items()}


_CHILD = """
import json
from tests.store.test_digest_golden import digests_here
print(json.dumps(digests_here()))
"""


@pytest.mark.parametrize("seed", ["0", "1", "random"])
def test_digests_are_the_same_in_processes_with_other_hash_seeds(seed):
    env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-c", _CHILD], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == digests_here()
