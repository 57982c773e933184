"""A BM25 index over the FAQ (its wordings and its answers), the lexical side of FAQ retrieval.

Dense search misses what only the words give away: a rare keyword ("PayPal", "AppleCare", "W-9"),
a product name, a word the encoder maps elsewhere. BM25 (`bm25s`: sparse matrices, no service to
run) scores two documents per FAQ: all its wordings together (question and paraphrases, the words
customers use for it) and its answer (the words the shop uses). The fusion model
(retrieval/fusion.py) reads both.

On disk: a folder with bm25s' own files (`faqs/`, `answers/`) plus `lexical.json` (the wordings and
answers, the tokenizer version and a content hash that ties it to the dense FAQ index built from
the same wordings); written to a temporary folder and renamed into place, like the vector indexes.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Sequence

import bm25s
import numpy as np
from bm25s.tokenization import STOPWORDS_EN

from core.atomic import replace_dir, share_like_umask, temp_dir_beside
from core.errors import ArtifactError

logger = logging.getLogger(__name__)
logging.getLogger("bm25s").setLevel(logging.WARNING)   # it logs every index build at DEBUG

FORMAT_VERSION = 1
TOKENIZER = "words-light-stem-v1"   # change when `tokenize` changes: saved indexes must be rebuilt
META_FILE = "lexical.json"
_WORD = re.compile(r"[a-z0-9]+")
_STOPWORDS = frozenset(STOPWORDS_EN)
_SUFFIXES = (("ies", "y"), ("ing", ""), ("ed", ""), ("es", ""), ("s", ""))


@lru_cache(maxsize=50_000)
def _stem(word: str) -> str:
    """A light English suffix strip ("returns", "returned", "returning" -> "return"): no extra dependency,
    and on short customer messages it joins the forms that matter without Porter's surprises."""
    for suffix, repl in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)] + repl
            if len(word) > 3 and word[-1] == word[-2] and word[-1] not in "aeiouls":
                word = word[:-1]   # "shipping" -> "shipp" -> "ship"
            break
    return word


def tokenize(text: str) -> list[str]:
    """Lower-cased words without English stop words and stray letters ("paypal's" -> "paypal"), lightly stemmed."""
    return [_stem(w) for w in _WORD.findall(str(text).lower())
            if w not in _STOPWORDS and (len(w) > 1 or w.isdigit())]


def content_hash(entries: Iterable[tuple[str, str, str]]) -> str:
    """A hash of (entry id, FAQ id, text) triples, order-free: the same wordings give the same hash."""
    h = hashlib.sha256()
    for eid, fid, text in sorted(entries):
        h.update(json.dumps([eid, fid, text], ensure_ascii=False).encode("utf-8"))
    return h.hexdigest()


def _bm25(docs: Sequence[list[str]]) -> bm25s.BM25:
    retriever = bm25s.BM25()
    # bm25s refuses an empty corpus or document; a placeholder token keeps an emptied index usable
    retriever.index([d or [""] for d in docs] or [[""]], show_progress=False)
    return retriever


def _scores(retriever: bm25s.BM25, vocab: set[str] | dict, keys: Sequence[str], text: str) -> dict[str, float]:
    query = [t for t in tokenize(text) if t in vocab and t]
    if not query or not keys:
        return {k: 0.0 for k in keys}
    return dict(zip(keys, np.asarray(retriever.get_scores(query), dtype=np.float64)[: len(keys)].tolist()))


class LexicalIndex:
    """BM25 over FAQs: one document per FAQ made of all its wordings (question and paraphrases: the
    words customers use for it), and one per FAQ answer (the words the shop uses: "PayPal", "AppleCare").
    Entries are (entry id, FAQ id, text), as in the dense FAQ index; `answers` maps FAQ id -> answer."""

    def __init__(self, entries: Sequence[tuple[str, str, str]], answers: dict[str, str] | None = None, *,
                 _tokens: list[list[str]] | None = None, _answer_index: tuple | None = None,
                 _retrievers: tuple[bm25s.BM25, bm25s.BM25] | None = None) -> None:
        self.entries = [(str(e), str(f), str(t)) for e, f, t in entries]
        self.answers = {str(k): str(v) for k, v in (answers or {}).items()}
        self._tokens = _tokens if _tokens is not None else [tokenize(t) for _, _, t in self.entries]
        docs: dict[str, list[str]] = {}
        for (_, fid, _), toks in zip(self.entries, self._tokens):
            docs.setdefault(fid, []).extend(toks)
        self.faq_ids = sorted(docs)
        self._faq_vocab = {t for d in docs.values() for t in d}
        faq_bm25 = _retrievers[0] if _retrievers else _bm25([docs[f] for f in self.faq_ids])
        if _answer_index is None:   # the answers are shared by every `without` copy: built once
            answer_ids = sorted(self.answers)
            answer_docs = [tokenize(self.answers[f]) for f in answer_ids]
            _answer_index = (answer_ids, {t for d in answer_docs for t in d},
                             _retrievers[1] if _retrievers else _bm25(answer_docs))
        self._faq_bm25 = faq_bm25
        self._answer_index = _answer_index
        self._without_cache: dict[frozenset[str], LexicalIndex] = {}

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def content(self) -> str:
        return content_hash(self.entries + [(f"{fid}#answer", fid, a) for fid, a in self.answers.items()])

    def without(self, entry_ids: set[str] | frozenset[str]) -> "LexicalIndex":
        """This index with some wordings removed (leave-one-out scoring); cached, the build asks per paraphrase."""
        key = frozenset(entry_ids)
        if not key:
            return self
        if key not in self._without_cache:
            if len(self._without_cache) > 4096:
                self._without_cache.clear()
            keep = [i for i, e in enumerate(self.entries) if e[0] not in key]
            self._without_cache[key] = LexicalIndex([self.entries[i] for i in keep], self.answers,
                                                    _tokens=[self._tokens[i] for i in keep],
                                                    _answer_index=self._answer_index)
        return self._without_cache[key]

    def faq_scores(self, text: str) -> dict[str, float]:
        """BM25 of each FAQ's wordings (together) for the message; FAQs with no shared word score 0."""
        return _scores(self._faq_bm25, self._faq_vocab, self.faq_ids, text)

    def answer_scores(self, text: str) -> dict[str, float]:
        """BM25 of each FAQ's answer for the message."""
        ids, vocab, retriever = self._answer_index
        return _scores(retriever, vocab, ids, text)

    # ---- persistence --------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        tmp = temp_dir_beside(directory)
        try:
            self._faq_bm25.save(str(tmp / "faqs"), show_progress=False)
            self._answer_index[2].save(str(tmp / "answers"), show_progress=False)
            meta = {"format_version": FORMAT_VERSION, "tokenizer": TOKENIZER, "content": self.content,
                    "bm25s_version": bm25s.__version__, "answers": self.answers,
                    "entries": [{"id": e, "faq_id": f, "text": t} for e, f, t in self.entries]}
            (tmp / META_FILE).write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
            share_like_umask(tmp)
            replace_dir(tmp, directory)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        logger.info("saved lexical FAQ index (%d wordings) to %s", len(self.entries), directory)
        return directory

    @classmethod
    def load(cls, directory: str | Path, expected_content: str | None = None, *, hint: str) -> "LexicalIndex":
        """Load a saved index; a corrupt one, one from another tokenizer, or one over other wordings than
        `expected_content` (the dense FAQ index's) is an ArtifactError naming the rebuild command."""
        directory = Path(directory)
        meta_path = directory / META_FILE
        if not meta_path.is_file():
            raise ArtifactError(f"lexical FAQ index {directory} is missing; build it with: {hint}")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if meta.get("format_version") != FORMAT_VERSION or meta.get("tokenizer") != TOKENIZER:
                raise ValueError(f"format {meta.get('format_version')!r} / tokenizer {meta.get('tokenizer')!r}, "
                                 f"this code reads {FORMAT_VERSION} / {TOKENIZER}")
            entries = [(str(e["id"]), str(e["faq_id"]), str(e["text"])) for e in meta["entries"]]
            answers = {str(k): str(v) for k, v in dict(meta.get("answers") or {}).items()}
            retrievers = tuple(bm25s.BM25.load(str(directory / part), show_progress=False)
                               for part in ("faqs", "answers"))
            self = cls(entries, answers, _retrievers=retrievers)
            if self.content != meta.get("content"):
                raise ValueError("its wordings do not match its own content hash")
            for retriever, n in zip(retrievers, (len(self.faq_ids), len(answers))):
                if int(retriever.scores["num_docs"]) != max(n, 1):
                    raise ValueError(f"a BM25 index holds {retriever.scores['num_docs']} documents for {n}")
        except ArtifactError:
            raise
        except Exception as exc:   # bm25s/numpy raise many kinds on a damaged folder
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise ArtifactError(f"lexical FAQ index {directory} is unreadable ({first}); "
                                f"rebuild it with: {hint}") from None
        if expected_content is not None and self.content != expected_content:
            raise ArtifactError(f"lexical FAQ index {directory} was built from other FAQ wordings than the FAQ index "
                                f"beside it; rebuild both with: {hint}")
        return self
