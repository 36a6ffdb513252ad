"""The history index kept encoded between flushes (daskperiment/indexchunk.py): the objects
are byte for byte those of encoding the whole value, and many rounds of flushes give the
index a rebuild from the records gives."""

from __future__ import annotations

import math
from typing import Any

import pytest

import daskperiment
import daskperiment_store as store
from daskperiment import history
from daskperiment import record as trial_record
from daskperiment.indexchunk import EncodedChunk, EncodedRoot
from daskperiment_store import Link, codec


def row(n: int, **extra: Any) -> dict[str, Any]:
    base = {
        "trial_id": n,
        "global_id": f"{n:032x}",
        "record": f"{n + 1:032x}",
        "status": "success",
        "interrupted": False,
        "params": {"a": n, "name": f"run {n}"},
        "result": n / 3,
        "result_type": "<class 'float'>",
        "finished": 1.7e9 + n,
        "process_time": 0.001 * n,
        "description": None,
        "seed": n * 7919,
        "digests": {"parameters": None, "code": f"{n:032x}"},
        "reused": [],
        "parameter_order": ["a", "name"],
    }
    return {**base, **extra}


#: Values that take an escape or an unusual text in canonical JSON.
ODD_VALUES = [
    (1, 2, "three"),
    math.nan,
    -math.inf,
    -0.0,
    1e16,
    2**3000,
    -(2**2049),
    {"$only": "key"},
    {"$a": 1, "$b": 2},
    'ünïcödé \u2028 "quoted" \\ back',
    [Link("ab" * 16), {"nested": [(1,), {"x": None}]}],
    True,
    "",
    [],
    {},
]


def whole(rows: dict[int, dict[str, Any]]) -> bytes:
    enc = codec.encode(history.chunk_of(rows.values()))
    assert enc.kind == "json"
    return b"".join(bytes(c) for c in enc.chunks)


def body(enc: store.Encoded) -> bytes:
    return b"".join(bytes(c) for c in enc.chunks)


def test_a_chunk_grown_in_rounds_is_the_chunk_encoded_whole():
    chunk = EncodedChunk.of(history.ROW_FIELDS, {})
    rows: dict[int, dict[str, Any]] = {}
    for start in range(0, 256, 32):
        new = {n: row(n) for n in range(start, start + 32)}
        chunk = chunk.with_rows(new)
        rows.update(new)
        assert body(chunk.encoded()) == whole(rows)
    assert chunk.rows == rows


def test_odd_values_encode_as_in_the_whole_chunk():
    rows = {n: row(n, result=value, params={"v": value}) for n, value in enumerate(ODD_VALUES)}
    chunk = EncodedChunk.of(history.ROW_FIELDS, {})
    for n in sorted(rows):  # one row per round
        chunk = chunk.with_rows({n: rows[n]})
    assert body(chunk.encoded()) == whole(rows)


def test_rows_before_the_last_and_replaced_rows_reencode_the_chunk():
    chunk = EncodedChunk.of(history.ROW_FIELDS, {n: row(n) for n in (10, 20, 30)})
    chunk = chunk.with_rows({15: row(15), 40: row(40)})  # one in the middle
    chunk = chunk.with_rows({20: row(20, description="changed")})  # replaced
    chunk = chunk.with_rows({5: row(5)})  # before the first
    expected = {n: row(n) for n in (5, 10, 15, 30, 40)} | {20: row(20, description="changed")}
    assert body(chunk.encoded()) == whole(expected)
    assert sorted(chunk.rows) == [5, 10, 15, 20, 30, 40]


def test_rows_without_a_newer_field_are_written_with_null_as_before():
    old = {n: {k: v for k, v in row(n).items() if k != "parameter_order"} for n in range(3)}
    chunk = EncodedChunk.of(history.ROW_FIELDS, old).with_rows({3: row(3)})
    assert body(chunk.encoded()) == whole({**old, 3: row(3)})


def test_data_that_is_not_plain_json_is_refused_with_a_clear_error():
    chunk = EncodedChunk.of(history.ROW_FIELDS, {1: row(1)})
    with pytest.raises(store.EncodeError, match="not plain JSON data"):
        chunk.with_rows({2: row(2, result={1, 2})})
    with pytest.raises(store.EncodeError):
        chunk.with_rows({2: row(2, description="lone \ud800 surrogate")})


def test_a_root_with_links_changed_in_rounds_is_the_root_encoded_whole():
    root = EncodedRoot.of({})
    links: dict[str, Link] = {}
    for k in [0, 1, 2, 10, 3, 100, 11, 2, 0]:  # string order differs from number order
        link = Link(codec.digest(k * 31 + len(links)))
        root = root.with_links({str(k): link})
        links[str(k)] = link
        expected = codec.encode({"type": history.INDEX_TYPE, "version": 1, "chunks": links})
        assert body(root.encoded(history.INDEX_TYPE, 1)) == body(expected)
    assert root.links == links


def test_put_encoded_stores_the_same_object_as_put():
    st = store.open(store.MemoryBackend())
    rows = {n: row(n) for n in range(40)}
    chunk = EncodedChunk.of(history.ROW_FIELDS, dict(list(rows.items())[:8])).with_rows(
        dict(list(rows.items())[8:])
    )
    oid = st.put_encoded(chunk.encoded())
    assert oid == st.put(history.chunk_of(rows.values()))
    assert history.rows_of_chunk(st.get(oid)) == rows
    assert st.fsck().ok


def test_put_encoded_refuses_an_unknown_kind_and_writes_nothing():
    st = store.open(store.MemoryBackend())
    with pytest.raises(ValueError, match="unknown object kind 'jsonish'"):
        st.put_encoded(store.Encoded("jsonish", [b"{}"], 2))
    assert list(st.iter_oids()) == []


# -- flushes over many rounds against a rebuild --------------------------------------------


def rebuilt_root(st: store.Store, exp_id: str) -> str:
    """The oid of the index root a rebuild from every final record gives (whole values)."""
    by_chunk: dict[str, list[dict[str, Any]]] = {}
    for n in history.HistoryReader(exp_id).trial_ids(st):
        oid, record = history.load_trial(st, exp_id, n)
        by_chunk.setdefault(str(n // history.CHUNK_SIZE), []).append(history.row_of(record, oid))
    chunks = {k: Link(st.put(history.chunk_of(rows))) for k, rows in by_chunk.items()}
    return st.put({"type": history.INDEX_TYPE, "version": 1, "chunks": chunks})


def pipeline(ex: daskperiment.Experiment) -> Any:
    a = ex.parameter("a")

    @ex
    def prepare(a):
        return {"x": a, "t": (a, -a)}

    @ex.result
    def score(d):
        return d["x"] / 7 if d["x"] % 5 else float("nan")

    return score(prepare(a))


def test_many_rounds_of_flushes_give_the_index_a_rebuild_gives():
    st = store.open(store.MemoryBackend())
    ex = daskperiment.Experiment("rounds_pj", backend=st)
    result = pipeline(ex)
    total = 2 * history.CHUNK_SIZE + 70  # three chunks, flushed every 32 trials
    for i in range(total):
        ex.set_parameters(a=i)
        result.compute(scheduler="sync")
    ex._flush_index()
    name = trial_record.index_ref(ex.id)
    assert st.refs.get(name) == rebuilt_root(st, ex.id)
    fresh = daskperiment.Experiment("rounds_pj", backend=store.open(st.backend, create=False))
    table = fresh.get_history(verbose=True)
    st.refs.delete(name)  # without an index every row is read from its record
    from_records = daskperiment.Experiment(
        "rounds_pj", backend=store.open(st.backend, create=False)
    ).get_history(verbose=True)
    assert len(table) == total
    assert table.equals(from_records)


def test_a_flush_after_another_writer_merges_with_what_that_writer_wrote():
    """The chunks and root kept encoded are only used for the oids they were written as: a
    root another writer moved is read, and the rows of both writers end up indexed."""
    st = store.open(store.MemoryBackend())
    history.flush_index(st, "two_pj", [row(n) for n in range(0, 32)])
    # another process: nothing of this one's encoded chunks, same store
    kept = dict(history._WRITTEN_CHUNKS), dict(history._WRITTEN_ROOTS)
    history._WRITTEN_CHUNKS.clear()
    history._WRITTEN_ROOTS.clear()
    history.flush_index(st, "two_pj", [row(n) for n in range(32, 40)] + [row(300)])
    history._WRITTEN_CHUNKS.update(kept[0])
    history._WRITTEN_ROOTS.update(kept[1])
    history.flush_index(st, "two_pj", [row(n) for n in range(40, 64)])
    reader = history.HistoryReader("two_pj")
    indexed = reader._load_index(st)
    assert sorted(indexed) == [*range(64), 300]
    expected = {
        "0": Link(st.put(history.chunk_of(row(n) for n in range(64)))),
        "1": Link(st.put(history.chunk_of([row(300)]))),
    }
    root = st.put({"type": history.INDEX_TYPE, "version": 1, "chunks": expected})
    assert st.refs.get(trial_record.index_ref("two_pj")) == root


def test_rows_that_are_not_plain_json_are_indexed_as_before():
    st = store.open(store.MemoryBackend())
    odd = row(2, description="lone \ud800 surrogate")
    history.flush_index(st, "odd_pj", [row(1), odd])
    root = st.get(st.refs.get(trial_record.index_ref("odd_pj")))
    (link,) = history.chunk_links(root).values()
    assert link.oid == st.put(history.chunk_of([row(1), odd]))  # as put() stores it
