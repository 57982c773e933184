"""FAQ retrieval: one vector per question and per paraphrase, hits aggregated per FAQ (max).

Indexing every paraphrase, not only the canonical question, lets a short or slangy message
("shiping fee??") meet the wording closest to it; taking the max per FAQ keeps the answer list
free of duplicates. The calibrated threshold says when the best FAQ is good enough to answer.

A lexical (BM25) index over the same wordings rides along (`lexical`, saved beside the dense one as
`<name>_lexical/`); with a fusion model attached (`fusion`, retrieval/fusion.py) a search that is
given the message's text re-ranks the dense candidates with the lexical evidence.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np

from retrieval.index import BUILD_HINT, Hit, VectorIndex
from retrieval.lexical import LexicalIndex, content_hash

if TYPE_CHECKING:
    from runtime.embedder import Embedder

logger = logging.getLogger(__name__)

LEXICAL_SUFFIX = "_lexical"   # `indexes/faq` -> `indexes/faq_lexical`


def lexical_dir(directory: str | Path) -> Path:
    """Where the lexical index of the dense FAQ index saved at `directory` lives."""
    directory = Path(directory)
    return directory.with_name(directory.name + LEXICAL_SUFFIX)


def _entry_texts(faq: dict) -> list[tuple[str, str, str]]:
    """(entry id, text, source) for one FAQ record: its question and each paraphrase."""
    fid = str(faq["id"])
    out = [(f"{fid}#q", str(faq["question"]), "question")]
    out += [(f"{fid}#p{i}", str(p), "paraphrase") for i, p in enumerate(faq.get("paraphrases") or []) if str(p).strip()]
    return out


def _wordings(index: VectorIndex) -> list[tuple[str, str, str]]:
    return [(eid, str(m.get("faq_id")), str(m.get("text", ""))) for eid, m in index.items()]


def _answers(faqs: dict[str, dict]) -> dict[str, str]:
    return {fid: str(f.get("answer", "")) for fid, f in faqs.items()}


class FaqIndex:
    """Search FAQs by embedding; `Hit.id` is the FAQ id and `Hit.meta` the FAQ record."""

    def __init__(self, index: VectorIndex, lexical: LexicalIndex | None = None) -> None:
        self.index = index
        self.faqs: dict[str, dict] = dict(index.info.get("faqs") or {})
        counts = Counter(m.get("faq_id") for _, m in index.items())
        self._per_faq = max(counts.values(), default=1)  # wordings per FAQ, to size the raw search
        self.lexical = lexical if lexical is not None else self._new_lexical()
        # A retrieval.fusion.FusionModel, set by retrieval.build.load_indexes when fusion is on (not imported
        # here: fusion reads the FAQ index, the index only calls the model's `candidates` and `rerank`).
        self.fusion: Any = None
        self._vectors_by_faq: dict[str, tuple[list[str], np.ndarray]] | None = None   # built on first use

    def _new_lexical(self) -> LexicalIndex:
        return LexicalIndex(self.wordings(), _answers(self.faqs))

    def wordings(self) -> list[tuple[str, str, str]]:
        """(entry id, FAQ id, text) of every indexed wording: what the lexical index holds."""
        return _wordings(self.index)

    @property
    def reads_text(self) -> bool:
        """Whether a search given the message's text ranks differently (a fusion model is attached)."""
        return self.fusion is not None

    @classmethod
    def build(cls, faqs: Sequence[dict], embedder: "Embedder", *, exact_max: int = 50_000,
              kind: str | None = None, show_progress: bool = False) -> "FaqIndex":
        entries = [(eid, text, src, str(f["id"])) for f in faqs for eid, text, src in _entry_texts(f)]
        vectors = embedder.encode([e[1] for e in entries], show_progress=show_progress)
        index = VectorIndex.build([e[0] for e in entries], vectors,
                                  [{"faq_id": fid, "text": text, "source": src} for _, text, src, fid in entries],
                                  fingerprint=embedder.fingerprint, exact_max=exact_max, kind=kind,
                                  info={"content": "faq", "encoder": embedder.name,
                                        "faqs": {str(f["id"]): dict(f) for f in faqs}})
        return cls(index)

    def __len__(self) -> int:
        return len(self.faqs)

    @property
    def fingerprint(self) -> str:
        return self.index.fingerprint

    def search(self, vector: Any, k: int = 5, text: str | None = None) -> list[Hit]:
        """The k best FAQs for one query vector, best first (score = best matching wording). Given the
        message's `text` and a fusion model, the dense candidates come re-ranked (the top keeps the best
        cosine, the others sit below it by their fused gap: retrieval.fusion.anchored_scores)."""
        return self.search_batch(np.asarray(vector, dtype=np.float32).reshape(1, -1), k,
                                 texts=None if text is None else [text])[0]

    def search_batch(self, vectors: Any, k: int = 5, *, exclude: Sequence[set[str]] | None = None,
                     texts: Sequence[str] | None = None) -> list[list[Hit]]:
        """Like `search` for several vectors; `exclude[i]` lists entry ids to ignore for query i (in the
        lexical index too); `texts[i]` is query i's message, read when a fusion model is attached."""
        if texts is not None and self.fusion is not None:
            vectors = np.asarray(vectors, dtype=np.float32).reshape(len(texts), -1)
            dense = self._dense_batch(vectors, max(k, self.fusion.candidates), exclude)
            out = []
            for qi, hits in enumerate(dense):
                skip = set(exclude[qi]) if exclude else set()
                sims = self.wording_similarities(vectors[qi], [h.id for h in hits], skip)
                out.append(self.fusion.rerank(hits, sims, self.lexical.without(skip), texts[qi], k))
            return out
        return self._dense_batch(vectors, k, exclude)

    def _dense_batch(self, vectors: Any, k: int, exclude: Sequence[set[str]] | None) -> list[list[Hit]]:
        vectors = np.asarray(vectors, dtype=np.float32)
        extra = max((len(e) for e in exclude), default=0) if exclude else 0
        # enough raw hits to see k distinct FAQs even if the best ones matched on every wording
        raw = self.index.search(vectors, k * self._per_faq + extra)
        out = []
        for qi, hits in enumerate(raw):
            skip = exclude[qi] if exclude else ()
            best: dict[str, float] = {}
            for h in hits:
                if h.id in skip:
                    continue
                fid = h.meta["faq_id"]
                if h.score > best.get(fid, -2.0):
                    best[fid] = h.score
            ranked = sorted(best.items(), key=lambda t: -t[1])[:k]
            out.append([Hit(fid, s, self.faqs.get(fid, {"id": fid})) for fid, s in ranked])
        return out

    def paraphrase_vectors(self, embedder: "Embedder", purpose: str) -> tuple[list[tuple[str, dict]], np.ndarray]:
        """(entry id, meta) of every indexed paraphrase and its vector: the queries of a leave-one-out
        (each searched with `exclude` = its own entry). ValueError naming `purpose` when there are none."""
        entries = [(eid, m) for eid, m in self.index.items() if m.get("source") == "paraphrase"]
        if not entries:
            raise ValueError(f"{purpose} needs FAQ paraphrases; the FAQ file has none")
        try:
            vectors = self.index.reconstruct([eid for eid, _ in entries])
        except RuntimeError:  # an index kind that cannot give vectors back: embed again
            vectors = embedder.encode([m["text"] for _, m in entries])
        return entries, vectors

    def prepare_wordings(self) -> None:
        """Group the wordings' vectors by FAQ once (the fusion reads them on every search): done when the
        fusion is attached, so the first customer turn does not pay for it."""
        if self._vectors_by_faq is None:
            by_faq: dict[str, list[str]] = {}
            for eid, m in self.index.items():
                by_faq.setdefault(str(m.get("faq_id")), []).append(eid)
            self._vectors_by_faq = {fid: (eids, self.index.reconstruct(eids)) for fid, eids in by_faq.items()}

    def wording_similarities(self, vector: Any, faq_ids: Sequence[str],
                             exclude: set[str] | frozenset[str] = frozenset()) -> dict[str, tuple[np.ndarray, float]]:
        """Per FAQ: the cosine of the query with each of its wordings (those in `exclude` left out), and with
        the FAQ's centroid (the mean of those wordings). The fusion reads how a FAQ matches as a whole,
        not only through its single best wording."""
        self.prepare_wordings()
        q = np.asarray(vector, dtype=np.float32).reshape(-1)
        q = q / max(float(np.linalg.norm(q)), 1e-12)
        out = {}
        for fid in faq_ids:
            eids, vecs = self._vectors_by_faq.get(fid, ([], np.zeros((0, len(q)), dtype=np.float32)))
            keep = [i for i, e in enumerate(eids) if e not in exclude]
            if not keep:
                out[fid] = (np.zeros(0), 0.0)
                continue
            v = vecs[keep]
            centroid = v.mean(axis=0)
            out[fid] = (v @ q, float(centroid @ q / max(float(np.linalg.norm(centroid)), 1e-12)))
        return out

    def add_faq(self, faq: dict, embedder: "Embedder") -> None:
        """Add or replace one FAQ without rebuilding the index."""
        fid = str(faq["id"])
        self.remove_faq(fid)
        entries = _entry_texts(faq)
        vectors = embedder.encode([t for _, t, _ in entries])
        self.index.add([e for e, _, _ in entries], vectors,
                       [{"faq_id": fid, "text": t, "source": s} for _, t, s in entries])
        self.faqs[fid] = dict(faq)
        self.index.info["faqs"] = self.faqs
        self._per_faq = max(self._per_faq, len(entries))
        self._vectors_by_faq = None
        self.lexical = self._new_lexical()   # BM25 has no in-place add; rebuilding takes milliseconds

    def remove_faq(self, faq_id: str) -> bool:
        ids = [eid for eid, m in self.index.items() if m.get("faq_id") == faq_id]
        self.index.remove(ids)
        found = self.faqs.pop(faq_id, None) is not None
        self.index.info["faqs"] = self.faqs
        if ids or found:
            self.lexical = self._new_lexical()
            self._vectors_by_faq = None
        return found or bool(ids)

    def save(self, directory: str | Path) -> Path:
        """The dense index at `directory`, its lexical index beside it (`lexical_dir`)."""
        self.index.info["faqs"] = self.faqs
        saved = self.index.save(directory)
        self.lexical.save(lexical_dir(directory))
        return saved

    @classmethod
    def load(cls, directory: str | Path, expected_fingerprint: str | None = None, *,
             hint: str = BUILD_HINT) -> "FaqIndex":
        """The dense index and its lexical index. A lexical folder that is missing (an index saved before
        there was one) is rebuilt from the dense index's wordings; one over other wordings is an error."""
        index = VectorIndex.load(directory, expected_fingerprint, hint=hint)
        if not lexical_dir(directory).exists():
            logger.info("%s has no lexical index beside it; building it from the FAQ wordings", directory)
            return cls(index)
        faqs = dict(index.info.get("faqs") or {})
        expected = LexicalIndex(_wordings(index), _answers(faqs)).content
        return cls(index, LexicalIndex.load(lexical_dir(directory), expected, hint=hint))


@dataclass
class FaqCalibration:
    threshold: float
    balanced_accuracy: float
    true_positive_rate: float    # paraphrases that would be answered
    true_negative_rate: float    # non-FAQ messages that would not be
    n_positive: int
    n_negative: int
    loo_top1_accuracy: float     # leave-one-out: share of paraphrases whose top FAQ is right
    positive_scores: dict[str, float] = field(default_factory=dict)   # min / p10 / median
    negative_scores: dict[str, float] = field(default_factory=dict)   # median / p90 / max

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _quantiles(x: np.ndarray, names: Iterable[tuple[str, float]]) -> dict[str, float]:
    return {n: round(float(np.quantile(x, q)), 4) for n, q in names} if len(x) else {}


def calibrate_faq_threshold(faq_index: FaqIndex, embedder: "Embedder", intents: Sequence[dict]) -> FaqCalibration:
    """Pick the FAQ answer threshold that best separates FAQ questions from everything else.

    Positives: each paraphrase searched against the index *without its own vector*
    (leave-one-out, so it plays an unseen wording of a known FAQ); its top-1 score counts when
    the top FAQ is the right one. Negatives: top-1 scores of the intent examples that are not
    FAQ topics (intents not starting with ``faq_``): order questions, small talk, shopping.
    The threshold maximises balanced accuracy (classes are unbalanced, and both errors matter:
    answering a non-FAQ message, or handing a real question to the fallback).
    """
    entries, pvec = faq_index.paraphrase_vectors(embedder, "calibration")
    hits = faq_index.search_batch(pvec, 1, exclude=[{eid} for eid, _ in entries])
    pos, correct = [], 0
    for (eid, m), h in zip(entries, hits):
        if h and h[0].id == m["faq_id"]:
            correct += 1
            pos.append(h[0].score)
    negatives = [str(r["text"]) for r in intents if not str(r.get("intent", "")).startswith("faq_")]
    if not negatives:
        raise ValueError("calibration needs non-FAQ intent examples (intents not starting with 'faq_')")
    nvec = embedder.encode(negatives)
    neg = [h[0].score for h in faq_index.search_batch(nvec, 1) if h]
    pos_a, neg_a = np.asarray(pos, dtype=np.float64), np.asarray(neg, dtype=np.float64)
    threshold, bacc, tpr, tnr = _best_threshold(pos_a, neg_a)
    cal = FaqCalibration(
        threshold=round(threshold, 4), balanced_accuracy=round(bacc, 4), true_positive_rate=round(tpr, 4),
        true_negative_rate=round(tnr, 4), n_positive=len(pos), n_negative=len(neg),
        loo_top1_accuracy=round(correct / len(entries), 4),
        positive_scores=_quantiles(pos_a, [("min", 0), ("p10", 0.1), ("median", 0.5)]),
        negative_scores=_quantiles(neg_a, [("median", 0.5), ("p90", 0.9), ("max", 1)]),
    )
    logger.info("FAQ threshold %.3f: balanced accuracy %.3f (answers %.0f%% of unseen paraphrases, "
                "declines %.0f%% of other messages)", cal.threshold, bacc, 100 * tpr, 100 * tnr)
    return cal


def _best_threshold(pos: np.ndarray, neg: np.ndarray) -> tuple[float, float, float, float]:
    """Sweep midpoints between sorted scores; among equally good ones take the middle (margin both ways)."""
    if not len(pos):
        return 1.0, 0.5, 0.0, 1.0
    if not len(neg):
        return float(pos.min()), 1.0, 1.0, 1.0
    s = np.unique(np.concatenate([pos, neg]))
    cands = np.concatenate([[s[0] - 1e-4], (s[:-1] + s[1:]) / 2, [s[-1] + 1e-4]])
    tpr = (pos[None, :] >= cands[:, None]).mean(axis=1)
    tnr = (neg[None, :] < cands[:, None]).mean(axis=1)
    bacc = (tpr + tnr) / 2
    best = np.flatnonzero(bacc >= bacc.max() - 1e-12)
    i = int(best[len(best) // 2])  # middle of the plateau: margin on both sides
    return float(cands[i]), float(bacc[i]), float(tpr[i]), float(tnr[i])
