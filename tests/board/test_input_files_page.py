"""The trial page lists the input files each step read, with their content digests."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import xxhash


def test_trial_page_lists_input_files(tmp_path: Path, serve: Any, monkeypatch: Any) -> None:
    import daskperiment

    monkeypatch.setenv("DASKPERIMENT_STAT_CACHE", str(tmp_path / "stat-cache.json"))
    data = tmp_path / "data <1>.csv"
    data.write_text("a,b\n1,2\n")
    ex = daskperiment.Experiment(id="files_pj", backend=tmp_path / "cache" / "files_pj")

    @ex.result
    def load():
        return data.read_text()

    load().compute(scheduler="sync", seed=1)
    text = serve(str(tmp_path / "cache")).get("/experiments/files_pj/trials/1").text
    assert 'id="files"' in text
    digest = xxhash.xxh3_128(b"a,b\n1,2\n").hexdigest()
    assert f"<td>load</td><td><code>{data}</code></td>" in html.unescape(text)
    assert f'<code class="oid">{digest}</code>' in text
    assert "data &lt;1&gt;.csv" in text  # escaped like every value on the page
