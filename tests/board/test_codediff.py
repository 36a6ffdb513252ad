"""Classifying git-style diff text into coloured, numbered lines (daskperiment.board.codediff)."""

from __future__ import annotations

from daskperiment.board.codediff import classify, diff_stat, split_files

DIFF = """\
diff --git a/prepare_data b/prepare_data
--- a/prepare_data
+++ b/prepare_data
@@ -1,3 +1,3 @@
-@ex
+@ex.persist
 def prepare_data(a, b):
     return a + b
diff --git a/calculate_score b/calculate_score
--- a/calculate_score
+++ b/calculate_score
@@ -10,2 +10,3 @@ def calculate_score(s):
 def calculate_score(s):
+    x = '--- not a header'
--- removed line that looks like a header
"""


def test_lines_are_classified_like_git_colours_them():
    kinds = [(line.kind, line.text) for line in classify(DIFF)]
    assert kinds[:8] == [
        ("file", "diff --git a/prepare_data b/prepare_data"),
        ("meta", "--- a/prepare_data"),
        ("meta", "+++ b/prepare_data"),
        ("hunk", "@@ -1,3 +1,3 @@"),
        ("del", "-@ex"),
        ("add", "+@ex.persist"),
        ("context", " def prepare_data(a, b):"),
        ("context", "     return a + b"),
    ]
    # inside a hunk, lines starting with --- / +++ are content, not headers
    assert kinds[-1] == ("del", "--- removed line that looks like a header")
    assert diff_stat(classify(DIFF)) == (2, 2)


def test_files_are_split_and_numbered_from_hunk_headers():
    files = split_files(classify(DIFF))
    assert [f.name for f in files] == ["prepare_data", "calculate_score"]
    first = [(line.kind, line.old, line.new) for line in files[0].lines]
    assert first == [
        ("hunk", None, None),
        ("del", 1, None),
        ("add", None, 1),
        ("context", 2, 2),
        ("context", 3, 3),
    ]
    second = [(line.kind, line.old, line.new) for line in files[1].lines]
    assert second == [
        ("hunk", None, None),
        ("context", 10, 10),
        ("add", None, 11),
        ("del", 11, None),
    ]


def test_text_without_file_headers_is_one_unnamed_file():
    files = split_files(classify("parameters changed\n-a = 1\n+a = 2\n"))
    assert len(files) == 1 and files[0].name == ""
    assert [line.kind for line in files[0].lines] == ["context", "del", "add"]


def test_empty_diff_has_no_lines():
    assert classify("") == [] and split_files([]) == []
