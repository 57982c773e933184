"""JSON Lines, atomic writes and the artifact layout of the shared base."""
from __future__ import annotations

import os

import pytest

from core.atomic import (
    atomic_write_json,
    atomic_write_text,
    replace_dir,
    temp_dir_beside,
)
from core.errors import DataError
from core.jsonl import read_jsonl, write_jsonl
from core.layout import ArtifactLayout


def test_jsonl_round_trip_and_numbered(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [{"text": "hi", "intent": "greet"}, {"text": "é", "intent": "x"}])
    assert read_jsonl(path, ("text", "intent")) == [{"text": "hi", "intent": "greet"}, {"text": "é", "intent": "x"}]
    assert [n for n, _ in read_jsonl(path, numbered=True)] == [1, 2]


@pytest.mark.parametrize("content, message", [
    ('{"text": "a"}\n{oops\n', "line 2: not valid JSON"),
    ('[1, 2]\n', "line 1: expected a JSON object"),
    ('{"text": "a"}\n', "line 1: intent example without 'intent'"),
    (b"\xff\xfe\x00", "not UTF-8"),
])
def test_jsonl_errors_name_file_and_line(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(DataError) as err:
        read_jsonl(path, ("text", "intent"), "intent example")
    assert str(path) in str(err.value) and message in str(err.value)


def test_jsonl_missing_file(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_jsonl(tmp_path / "none.jsonl")


def test_atomic_write_leaves_no_temp_files_and_keeps_the_old_file_on_failure(tmp_path):
    target = tmp_path / "out" / "r.json"
    atomic_write_json(target, {"a": 1})
    assert target.read_text().startswith("{") and sorted(p.name for p in target.parent.iterdir()) == ["r.json"]

    class Boom(Exception):
        pass

    def failing(_tmp):
        raise Boom

    from core.atomic import atomic_write

    with pytest.raises(Boom):
        atomic_write(target, failing)
    assert '"a": 1' in target.read_text() and sorted(p.name for p in target.parent.iterdir()) == ["r.json"]
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
    assert oct(os.stat(target).st_mode & 0o077) != "0o0"   # readable like any other file, not 0600


def test_replace_dir_swaps_a_whole_folder(tmp_path):
    dst = tmp_path / "model"
    dst.mkdir()
    (dst / "old").write_text("1")
    src = temp_dir_beside(dst)
    (src / "new").write_text("2")
    replace_dir(src, dst)
    assert sorted(p.name for p in dst.iterdir()) == ["new"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_layout_serves_the_most_finished_model(tmp_path):
    layout = ArtifactLayout(tmp_path)
    assert layout.served_model_dir() is None
    for kind in ("teacher", "student"):
        layout.model(kind).mkdir()
        (layout.model(kind) / "attendant.json").write_text("{}")
    assert layout.served_model_dir() == layout.student
    layout.served.mkdir()
    assert layout.served_model_dir() == layout.student        # an empty folder is not a model
    (layout.served / "attendant.json").write_text("{}")
    assert layout.served_model_dir() == layout.served
    assert layout.run_dir(layout.teacher) == tmp_path / "runs" / "teacher"
    with pytest.raises(ValueError):
        layout.model("bogus")
