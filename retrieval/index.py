"""A persistent FAISS vector index with string ids, metadata and the encoder's fingerprint.

Scores are inner products of L2-normalised vectors, i.e. cosine similarities in [-1, 1].

Index type follows the size (recorded in `meta.json` as `kind`):

* ``flat``  (`IndexFlatIP`) up to ``exact_max`` vectors: exact, and at FAQ/catalogue sizes
  (hundreds to tens of thousands) a brute-force scan takes well under a millisecond.
* ``hnsw``  (`IndexHNSWFlat`, M=32) above it: graph search, ~0.95+ recall@10 at sub-millisecond
  latency on a million vectors, no training step, vectors kept in full precision.
* ``ivfpq`` (`IndexIVFPQ`) only when asked for: inverted lists + product quantisation, ~20x
  smaller than the float vectors but with much lower recall, for catalogues that would not
  fit in memory otherwise.

Add and remove work without a full rebuild. Flat and IVF-PQ remove vectors in place. HNSW
graphs cannot delete nodes, so removed entries become tombstones: searches skip them through a
FAISS `IDSelector` (so they cost no recall), and the graph is rebuilt from its own stored
vectors once tombstones exceed `TOMBSTONE_REBUILD_FRACTION` of it.

On disk an index is a folder with `index.faiss` and `meta.json` (ids, metas, kind, dim, count,
fingerprint, format version, sha256 of the index file). `save` writes a temporary folder and
renames it into place, so a reader never sees a half-written index.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import faiss
import numpy as np

from core.atomic import replace_dir, share_like_umask, temp_dir_beside
from core.errors import ArtifactError

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
INDEX_FILE = "index.faiss"
META_FILE = "meta.json"
KINDS = ("flat", "hnsw", "ivfpq")
BUILD_HINT = "python -m retrieval.build --config <your config>"
TOMBSTONE_REBUILD_FRACTION = 0.2  # HNSW: rebuild once a fifth of the graph is dead weight


@dataclass
class Hit:
    id: str
    score: float
    meta: dict


@dataclass
class IndexParams:
    """Tuning knobs; `None` means "derive from the size at build time"."""
    hnsw_m: int = 32
    ef_construction: int = 80
    ef_search: int = 128
    nlist: int | None = None      # IVF lists; default ~4*sqrt(n)
    pq_m: int | None = None       # PQ sub-quantisers; default 64 for 384-d (6 dims each)
    pq_nbits: int | None = None   # bits per code; 8, or fewer for tiny indexes
    nprobe: int | None = None     # lists visited per query; default max(8, nlist/64)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def choose_kind(n: int, exact_max: int) -> str:
    return "flat" if n <= exact_max else "hnsw"


def default_pq_m(dim: int) -> int:
    """Sub-quantisers for PQ: 64 for 384-d (6 dims each, 64 bytes a vector), fewer for small dims.

    64 rather than 48: on clustered 384-d data recall@10 rises from ~0.53 to ~0.61 for 16 more
    bytes a vector (benchmarks/faiss_scale_bench.py)."""
    for m in (64, 48, 32, 24, 16, 12, 8, 4, 2):
        if dim % m == 0 and dim // m >= 4:
            return m
    return 1


def create_faiss_index(kind: str, dim: int, n: int, params: IndexParams) -> faiss.Index:
    """An empty FAISS index of the given kind sized for about `n` vectors (fills `params`' blanks).

    Flat and HNSW are wrapped in `IndexIDMap2` so our int64 labels survive removals; IVF indexes
    take arbitrary ids natively (wrapping them would desynchronise the id map on removal).
    """
    metric = faiss.METRIC_INNER_PRODUCT
    if kind == "flat":
        return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    if kind == "hnsw":
        inner = faiss.IndexHNSWFlat(dim, params.hnsw_m, metric)
        inner.hnsw.efConstruction = params.ef_construction
        inner.hnsw.efSearch = params.ef_search
        return faiss.IndexIDMap2(inner)
    if kind == "ivfpq":
        if params.nlist is None:
            # ~4*sqrt(n) lists, but at least ~39 training points per list for k-means
            params.nlist = int(max(1, min(4 * math.sqrt(max(n, 1)), max(n, 1) // 39 or 1)))
        if params.pq_m is None:
            params.pq_m = default_pq_m(dim)
        if params.pq_nbits is None:
            # k-means wants ~39 training points per centroid: 8-bit codes from ~10k vectors up,
            # fewer centroids per sub-quantiser below that
            params.pq_nbits = max(1, min(8, int(math.log2(max(n, 78) / 39))))
        if params.nprobe is None:
            params.nprobe = min(params.nlist, max(8, params.nlist // 64))
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFPQ(quantizer, dim, params.nlist, params.pq_m, params.pq_nbits, metric)
        index.nprobe = params.nprobe
        return index  # faiss' Python wrapper keeps `quantizer` referenced by `index`
    raise ValueError(f"unknown index kind {kind!r} (expected one of {', '.join(KINDS)})")


def _as_matrix(vectors: Any, dim: int | None = None) -> np.ndarray:
    x = np.asarray(vectors, dtype=np.float32)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise ValueError(f"expected vectors of shape [n, dim] or [dim], got {x.shape}")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"vectors have dimension {x.shape[1]}, the index holds {dim}-d vectors")
    x = np.ascontiguousarray(x.copy())
    faiss.normalize_L2(x)  # inner product of unit vectors = cosine, whatever the caller passed
    return x


def _sha256_bytes(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


class VectorIndex:
    """Ids + metadata + a FAISS inner-product index, with atomic save and checked load."""

    def __init__(self, kind: str, dim: int, fingerprint: str, *, params: IndexParams | None = None,
                 index: faiss.Index | None = None, info: dict | None = None) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown index kind {kind!r} (expected one of {', '.join(KINDS)})")
        self.kind = kind
        self.dim = int(dim)
        self.fingerprint = fingerprint
        self.params = params or IndexParams()
        self.info: dict = info if info is not None else {}  # free-form, saved in meta.json
        self._index = index
        self._label_of: dict[str, int] = {}                 # id -> int64 label in FAISS
        self._entries: dict[int, tuple[str, dict]] = {}     # label -> (id, meta)
        self._tombstones: set[int] = set()                  # HNSW only: removed, still in the graph
        self._skip_tombstones: faiss.IDSelector | None = None  # cached selector over _tombstones
        self._next_label = 0

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def build(cls, ids: Sequence[str], vectors: Any, metas: Sequence[dict] | None = None, *, fingerprint: str,
              exact_max: int = 50_000, kind: str | None = None, params: IndexParams | None = None,
              info: dict | None = None) -> "VectorIndex":
        x = _as_matrix(vectors)
        ids = [str(i) for i in ids]
        if len(ids) != len(x):
            raise ValueError(f"{len(ids)} ids for {len(x)} vectors")
        if len(set(ids)) != len(ids):
            dup = sorted(i for i, c in Counter(ids).items() if c > 1)[:5]
            raise ValueError(f"duplicate ids: {', '.join(dup)}")
        kind = kind or choose_kind(len(x), exact_max)
        params = params or IndexParams()
        t0 = time.perf_counter()
        index = create_faiss_index(kind, x.shape[1], len(x), params)
        if kind == "ivfpq":
            index.train(_training_sample(x, params.nlist))
            index.set_direct_map_type(faiss.DirectMap.Hashtable)  # reconstruct by id, remove in place
        self = cls(kind, x.shape[1], fingerprint, params=params, index=index, info=info)
        self._add_matrix(ids, x, list(metas) if metas is not None else [{} for _ in ids])
        logger.info("built %s index: %d vectors of %d dims in %.2fs", kind, len(x), self.dim, time.perf_counter() - t0)
        return self

    def _add_matrix(self, ids: list[str], x: np.ndarray, metas: list[dict]) -> None:
        if len(metas) != len(ids):
            raise ValueError(f"{len(metas)} metas for {len(ids)} ids")
        labels = np.arange(self._next_label, self._next_label + len(ids), dtype=np.int64)
        if len(ids):
            self._index.add_with_ids(x, labels)
        for label, id_, meta in zip(labels.tolist(), ids, metas):
            self._label_of[id_] = label
            self._entries[label] = (id_, dict(meta or {}))
        self._next_label += len(ids)

    # ---- queries ------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, id_: str) -> bool:
        return id_ in self._label_of

    @property
    def ids(self) -> list[str]:
        return [id_ for id_, _ in self._entries.values()]

    def meta(self, id_: str) -> dict:
        return self._entries[self._label_of[id_]][1]

    def items(self) -> Iterable[tuple[str, dict]]:
        return iter(self._entries.values())

    def _search_params(self, k: int) -> faiss.SearchParameters | None:
        if self.kind == "hnsw":
            ef = max(self.params.ef_search, k)
            if self._tombstones:
                # filtered inside the graph walk, so removed entries cost no recall
                if self._skip_tombstones is None:
                    self._skip_tombstones = faiss.IDSelectorNot(
                        faiss.IDSelectorBatch(np.fromiter(self._tombstones, dtype=np.int64)))
                return faiss.SearchParametersHNSW(efSearch=ef, sel=self._skip_tombstones)
            return faiss.SearchParametersHNSW(efSearch=ef)
        if self.kind == "ivfpq":
            return faiss.SearchParametersIVF(nprobe=int(self.params.nprobe or 1))
        return None

    def search(self, vectors: Any, k: int) -> list[list[Hit]]:
        """Top-k hits per query vector (best first); fewer when the index holds fewer entries."""
        q = _as_matrix(vectors, self.dim)
        k = min(int(k), len(self._entries))
        if k <= 0:
            return [[] for _ in range(len(q))]
        params = self._search_params(k)
        scores, labels = self._index.search(q, k, params=params) if params is not None else self._index.search(q, k)
        out: list[list[Hit]] = []
        for row_s, row_l in zip(scores, labels):
            hits = []
            for s, label in zip(row_s.tolist(), row_l.tolist()):
                entry = self._entries.get(label)
                if entry is not None:  # -1 = not enough results; tombstones are filtered already
                    hits.append(Hit(entry[0], float(s), entry[1]))
            out.append(hits)
        return out

    def reconstruct(self, ids: Sequence[str]) -> np.ndarray:
        """The stored vectors for ids (exact for flat/HNSW, PQ-decoded for IVF-PQ)."""
        out = np.zeros((len(ids), self.dim), dtype=np.float32)
        for row, id_ in enumerate(ids):
            if id_ not in self._label_of:
                raise KeyError(id_)
            out[row] = self._index.reconstruct(int(self._label_of[id_]))
        return out

    # ---- updates ------------------------------------------------------------------------
    def add(self, ids: Sequence[str], vectors: Any, metas: Sequence[dict] | None = None) -> None:
        """Add entries; an id already present is replaced (upsert)."""
        ids = [str(i) for i in ids]
        x = _as_matrix(vectors, self.dim)
        if len(ids) != len(x):
            raise ValueError(f"{len(ids)} ids for {len(x)} vectors")
        if len(set(ids)) != len(ids):
            raise ValueError("duplicate ids in one add() call")
        existing = [i for i in ids if i in self._label_of]
        if existing:
            self.remove(existing)
        self._add_matrix(ids, x, list(metas) if metas is not None else [{} for _ in ids])

    def remove(self, ids: Sequence[str]) -> int:
        """Remove entries by id (unknown ids are ignored); returns how many were removed."""
        labels = [self._label_of.pop(str(i)) for i in ids if str(i) in self._label_of]
        if not labels:
            return 0
        for label in labels:
            del self._entries[label]
        if self.kind == "hnsw":
            self._tombstones.update(labels)
            self._skip_tombstones = None
            if len(self._tombstones) > TOMBSTONE_REBUILD_FRACTION * self._index.ntotal:
                self._rebuild_hnsw()
        else:
            # IDSelectorArray: the only selector IVF's hash-table direct map can remove with
            self._index.remove_ids(faiss.IDSelectorArray(np.asarray(labels, dtype=np.int64)))
        return len(labels)

    def _rebuild_hnsw(self) -> None:
        labels = np.fromiter(self._entries.keys(), dtype=np.int64, count=len(self._entries))
        x = np.zeros((len(labels), self.dim), dtype=np.float32)
        for row, label in enumerate(labels.tolist()):
            x[row] = self._index.reconstruct(label)
        logger.info("rebuilding HNSW graph: %d tombstones, %d live vectors", len(self._tombstones), len(labels))
        index = create_faiss_index("hnsw", self.dim, len(labels), self.params)
        if len(labels):
            index.add_with_ids(x, labels)
        self._index = index
        self._tombstones.clear()
        self._skip_tombstones = None

    # ---- persistence --------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write `index.faiss` + `meta.json` into a temporary folder, then rename it into place."""
        directory = Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        blob = faiss.serialize_index(self._index)  # uint8 numpy array
        meta = {
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "dim": self.dim,
            "count": len(self._entries),
            "fingerprint": self.fingerprint,
            "index_file": INDEX_FILE,
            "index_sha256": _sha256_bytes(memoryview(blob)),
            "params": self.params.to_dict(),
            "next_label": self._next_label,
            "tombstones": sorted(self._tombstones),
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "info": self.info,
            "entries": [{"label": label, "id": id_, "meta": meta} for label, (id_, meta) in self._entries.items()],
        }
        tmp = temp_dir_beside(directory)
        try:
            _write_synced(tmp / INDEX_FILE, memoryview(blob))
            _write_synced(tmp / META_FILE, json.dumps(meta, ensure_ascii=False).encode("utf-8"))
            share_like_umask(tmp)  # mkdtemp makes it private; an index is shared like any file
            replace_dir(tmp, directory)  # the old index stays until the new one is in place
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        logger.info("saved %s index (%d entries) to %s", self.kind, len(self._entries), directory)
        return directory

    @classmethod
    def load(cls, directory: str | Path, expected_fingerprint: str | None = None, *,
             hint: str = BUILD_HINT) -> "VectorIndex":
        """Load a saved index; any problem is an ArtifactError naming the rebuild command (`hint`)."""
        directory = Path(directory)
        _recover_interrupted_save(directory)
        meta_path, index_path = directory / META_FILE, directory / INDEX_FILE
        if not meta_path.is_file() or not index_path.is_file():
            raise ArtifactError(f"index {directory} is missing; build it with: {hint}")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if not isinstance(meta, dict):
                raise ValueError("meta.json is not an object")
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise ArtifactError(f"index {directory} is corrupt ({META_FILE}: {_first_line(exc)}); rebuild it with: {hint}") from None
        if meta.get("format_version") != FORMAT_VERSION:
            raise ArtifactError(f"index {directory} has format version {meta.get('format_version')!r}, "
                                f"this code reads {FORMAT_VERSION}; rebuild it with: {hint}")
        if expected_fingerprint is not None and meta.get("fingerprint") != expected_fingerprint:
            raise ArtifactError(f"index {directory} was built by a different encoder "
                                f"(fingerprint {str(meta.get('fingerprint'))[:12]}…, current encoder "
                                f"{expected_fingerprint[:12]}…); rebuild it with: {hint}")
        try:
            data = np.fromfile(index_path, dtype=np.uint8)
            if _sha256_bytes(memoryview(data)) != meta.get("index_sha256"):
                raise ValueError(f"{INDEX_FILE} does not match the checksum in {META_FILE}")
            index = faiss.deserialize_index(data)
            params = IndexParams(**meta.get("params", {}))
            self = cls(meta["kind"], int(meta["dim"]), meta["fingerprint"], params=params, index=index,
                       info=meta.get("info") or {})
            for e in meta["entries"]:
                label = int(e["label"])
                self._label_of[str(e["id"])] = label
                self._entries[label] = (str(e["id"]), dict(e.get("meta") or {}))
            self._tombstones = {int(t) for t in meta.get("tombstones", [])}
            self._next_label = int(meta["next_label"])
            if index.d != self.dim or index.ntotal != len(self._entries) + len(self._tombstones):
                raise ValueError(f"{INDEX_FILE} holds {index.ntotal} vectors of {index.d} dims, "
                                 f"{META_FILE} lists {len(self._entries)} of {self.dim}")
            if self.kind == "ivfpq":
                faiss.extract_index_ivf(index).nprobe = int(params.nprobe or 1)
        except (OSError, RuntimeError, ValueError, KeyError, TypeError) as exc:
            raise ArtifactError(f"index {directory} is corrupt ({_first_line(exc)}); rebuild it with: {hint}") from None
        logger.info("loaded %s index (%d entries) from %s", self.kind, len(self), directory)
        return self


def _training_sample(x: np.ndarray, nlist: int | None, seed: int = 0) -> np.ndarray:
    n_train = min(len(x), max(64 * int(nlist or 1), 20_000))
    if n_train >= len(x):
        return x
    rng = np.random.default_rng(seed)
    return x[np.sort(rng.choice(len(x), n_train, replace=False))]


def _write_synced(path: Path, data: bytes | memoryview) -> None:
    with path.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _recover_interrupted_save(directory: Path) -> None:
    """A save interrupted between its two renames leaves only `.NAME.old-*`: put it back."""
    if directory.exists() or not directory.parent.is_dir():
        return
    olds = sorted(directory.parent.glob(f".{directory.name}.old-*"), key=lambda p: p.stat().st_mtime)
    if olds:
        logger.warning("restoring %s from an interrupted save (%s)", directory, olds[-1].name)
        olds[-1].rename(directory)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__
