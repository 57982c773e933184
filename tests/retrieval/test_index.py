"""VectorIndex on synthetic vectors: build, search, add/remove, atomic save, checked load."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import retrieval.index as index_mod
from core.errors import ArtifactError
from retrieval.index import (
    INDEX_FILE,
    META_FILE,
    TOMBSTONE_REBUILD_FRACTION,
    VectorIndex,
)

DIM = 32
N = 400


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(42)
    vecs = unit(rng.normal(size=(N, DIM)))
    ids = [f"doc{i}" for i in range(N)]
    metas = [{"n": i, "text": f"document {i}"} for i in range(N)]
    return ids, vecs, metas


def build(data, kind, **kw):
    ids, vecs, metas = data
    return VectorIndex.build(ids, vecs, metas, fingerprint="fp-A", kind=kind, **kw)


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_search_finds_each_vector_first(data, kind):
    ids, vecs, metas = data
    ix = build(data, kind)
    assert ix.kind == kind and len(ix) == N and ix.dim == DIM
    results = ix.search(vecs[:20], 5)
    assert [r[0].id for r in results] == ids[:20]
    for r in results:
        assert r[0].score == pytest.approx(1.0, abs=1e-4)
        assert [h.score for h in r] == sorted((h.score for h in r), reverse=True)
    assert results[3][0].meta == {"n": 3, "text": "document 3"}


def test_single_vector_query_and_k_larger_than_index(data):
    ids, vecs, _ = data
    small = VectorIndex.build(ids[:3], vecs[:3], None, fingerprint="fp")
    hits = small.search(vecs[0], 10)
    assert len(hits) == 1 and len(hits[0]) == 3 and hits[0][0].id == ids[0]


def test_kind_follows_size_and_is_recorded(data, tmp_path):
    assert build(data, None, exact_max=N).kind == "flat"
    big = build(data, None, exact_max=N - 1)
    assert big.kind == "hnsw"
    big.save(tmp_path / "ix")
    meta = json.loads((tmp_path / "ix" / META_FILE).read_text())
    assert meta["kind"] == "hnsw" and meta["count"] == N and meta["dim"] == DIM and meta["fingerprint"] == "fp-A"


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivfpq"])
def test_save_load_roundtrip(data, kind, tmp_path):
    ids, vecs, _ = data
    ix = build(data, kind)
    before = [[(h.id, round(h.score, 5)) for h in r] for r in ix.search(vecs[:10], 5)]
    ix.save(tmp_path / "ix")
    loaded = VectorIndex.load(tmp_path / "ix", expected_fingerprint="fp-A")
    assert loaded.kind == kind and len(loaded) == N and loaded.params == ix.params
    after = [[(h.id, round(h.score, 5)) for h in r] for r in loaded.search(vecs[:10], 5)]
    assert after == before
    assert loaded.meta("doc7")["n"] == 7


def test_ivfpq_is_approximate_but_useful(data):
    ids, vecs, _ = data
    ix = build(data, "ivfpq")
    top5 = ix.search(vecs[:50], 5)
    assert sum(ids[i] in {h.id for h in r} for i, r in enumerate(top5)) >= 40


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivfpq"])
def test_add_and_remove_without_rebuild(data, kind, tmp_path):
    ids, vecs, _ = data
    ix = build(data, kind)
    new = unit(np.random.default_rng(7).normal(size=(2, DIM)))
    ix.add(["new1", "new2"], new, [{"n": -1}, {"n": -2}])
    assert len(ix) == N + 2 and ix.search(new[1], 1)[0][0].id == "new2"
    assert ix.remove(["doc0", "doc1", "unknown"]) == 2
    assert len(ix) == N
    top = ix.search(vecs[:2], 10)
    assert all(h.id not in {"doc0", "doc1"} for r in top for h in r)
    ix.add(["doc5"], vecs[5], [{"n": 5, "updated": True}])  # upsert keeps one entry per id
    assert len(ix) == N and ix.meta("doc5")["updated"]
    ix.save(tmp_path / "ix")
    loaded = VectorIndex.load(tmp_path / "ix")
    assert len(loaded) == N and "doc0" not in loaded
    assert all(h.id != "doc1" for h in loaded.search(vecs[1], 10)[0])


def test_hnsw_tombstones_then_compaction(data):
    ids, vecs, _ = data
    ix = build(data, "hnsw")
    few = int(TOMBSTONE_REBUILD_FRACTION * N) - 5
    ix.remove(ids[:few])
    assert ix._index.ntotal == N                      # still in the graph, skipped when searching
    assert all(h.id not in set(ids[:few]) for r in ix.search(vecs[:few], 5) for h in r)
    ix.remove(ids[few:few + 10])                      # past the fraction: the graph is rebuilt
    assert ix._index.ntotal == len(ix) == N - few - 10
    assert ix.search(vecs[N - 1], 1)[0][0].id == ids[N - 1]


def test_save_is_atomic_and_leaves_no_temp_dirs(data, tmp_path):
    ix = build(data, "flat")
    ix.save(tmp_path / "ix")
    ix.remove(["doc0"])
    ix.save(tmp_path / "ix")                          # replaces the old one
    assert leftovers(tmp_path) == []
    assert len(VectorIndex.load(tmp_path / "ix")) == N - 1


def test_failed_save_keeps_the_old_index(data, tmp_path, monkeypatch):
    ix = build(data, "flat")
    ix.save(tmp_path / "ix")
    real = index_mod._write_synced

    def fail_on_meta(path, data_):
        if path.name == META_FILE:
            raise OSError("disk full")
        real(path, data_)

    monkeypatch.setattr(index_mod, "_write_synced", fail_on_meta)
    ix.remove(["doc0"])
    with pytest.raises(OSError):
        ix.save(tmp_path / "ix")
    assert leftovers(tmp_path) == []
    assert len(VectorIndex.load(tmp_path / "ix")) == N


def test_interrupted_save_is_recovered(data, tmp_path):
    build(data, "flat").save(tmp_path / "ix")
    (tmp_path / "ix").rename(tmp_path / ".ix.old-12345678")  # crash between the two renames
    assert len(VectorIndex.load(tmp_path / "ix")) == N


def _one_line_error(directory, **kw) -> str:
    with pytest.raises(ArtifactError) as err:
        VectorIndex.load(directory, **kw)
    msg = str(err.value)
    assert "\n" not in msg and "python -m retrieval.build --config" in msg
    return msg


def test_missing_index(tmp_path):
    assert "missing" in _one_line_error(tmp_path / "nothing-here")


def test_corrupt_index_file(data, tmp_path):
    build(data, "flat").save(tmp_path / "ix")
    path = tmp_path / "ix" / INDEX_FILE
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    assert "corrupt" in _one_line_error(tmp_path / "ix")


def test_truncated_index_file(data, tmp_path):
    build(data, "hnsw").save(tmp_path / "ix")
    path = tmp_path / "ix" / INDEX_FILE
    path.write_bytes(path.read_bytes()[:100])
    assert "corrupt" in _one_line_error(tmp_path / "ix")


def test_corrupt_meta_file(data, tmp_path):
    build(data, "flat").save(tmp_path / "ix")
    (tmp_path / "ix" / META_FILE).write_text("{not json")
    assert "corrupt" in _one_line_error(tmp_path / "ix")


def test_encoder_mismatch(data, tmp_path):
    build(data, "flat").save(tmp_path / "ix")
    assert "different encoder" in _one_line_error(tmp_path / "ix", expected_fingerprint="fp-B")
    assert len(VectorIndex.load(tmp_path / "ix", expected_fingerprint="fp-A")) == N


def test_custom_hint_names_the_config(tmp_path):
    with pytest.raises(ArtifactError, match="--config configs/shop.yaml"):
        VectorIndex.load(tmp_path / "x", hint="python -m retrieval.build --config configs/shop.yaml")


def test_bad_input_is_rejected(data):
    ids, vecs, metas = data
    with pytest.raises(ValueError, match="duplicate"):
        VectorIndex.build(["a", "a"], vecs[:2], None, fingerprint="fp")
    with pytest.raises(ValueError, match="dimension"):
        build(data, "flat").search(np.ones(DIM + 1, dtype=np.float32), 3)
