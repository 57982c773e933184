"""Training data: intents and FAQ loaded into `datasets`, validated with file:line errors.

Files are JSON Lines (one object a line) or CSV with a header. Every problem is a one-line
`DataError` that names the file and the line, so an operator can fix the data without reading
a traceback. Tokenisation goes through `datasets.map` and is cached on disk, keyed by the
content, the tokenizer and the maximum length.
"""
from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import random
import re
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import datasets
import numpy as np
import torch
from torch.utils.data import Sampler

from core.errors import DataError
from core.jsonl import read_jsonl

logger = logging.getLogger(__name__)

# "owner/name" or "owner/name:split": read from the Hugging Face hub when the path does not exist.
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+(:[\w.\[\]%:-]+)?$")
MAX_BAD_LINES_SHOWN = 3


@dataclass
class FaqRecord:
    id: str
    question: str
    answer: str
    paraphrases: list[str] = field(default_factory=list)
    category: str | None = None


@dataclass
class IntentSplits:
    """A stratified train/validation split and the label map (index = class id)."""
    train: datasets.Dataset
    validation: datasets.Dataset
    labels: list[str]

    @property
    def label2id(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.labels)}


# --------------------------------------------------------------------------- reading records

def _read_records(path: Path, what: str) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) for each record of a JSONL or CSV file; blank lines are skipped."""
    if not path.exists():
        raise DataError(f"{what} file not found: {path}")
    suffix = path.suffix.lower()
    records: list[tuple[int, dict[str, Any]]] = []
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            if suffix == ".csv":
                reader = csv.DictReader(fh)
                if not reader.fieldnames:
                    raise DataError(f"{path}: empty CSV file (expected a header line naming the columns)")
                for row in reader:
                    records.append((reader.line_num, {k: v for k, v in row.items() if k is not None}))
            elif suffix in (".jsonl", ".json", ".ndjson"):
                records = read_jsonl(path, (), what, numbered=True)
            else:
                raise DataError(f"{path}: unsupported {what} file type '{suffix}' (use .jsonl or .csv)")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read {what} file: {exc.strerror or exc}") from None
    if not records:
        raise DataError(f"{path}: the {what} file holds no records")
    return records


def _text_field(path: Path, number: int, obj: dict[str, Any], key: str, *, required: bool = True) -> str | None:
    value = obj.get(key)
    if value is None:
        if required:
            raise DataError(f"{path}:{number}: missing field '{key}'")
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and key == "id":
        value = str(value)  # numeric ids are fine; compare them as strings
    if not isinstance(value, str):
        raise DataError(f"{path}:{number}: field '{key}' must be a string, got {type(value).__name__}")
    if required and not value.strip():
        raise DataError(f"{path}:{number}: field '{key}' is empty")
    return value.strip()


# --------------------------------------------------------------------------- intents

def load_intents(
    source: str | Path,
    *,
    min_examples: int = 1,
    known_labels: Sequence[str] | None = None,
) -> datasets.Dataset:
    """Load `{"text", "intent"}` records into a Dataset with columns `text` and `intent`.

    `source` is a .jsonl/.csv path, or a hub dataset id (`owner/name[:split]`) when it is not a
    path. `known_labels` (for a validation or test file) makes an unseen intent an error;
    `min_examples` makes an intent with fewer examples an error.
    """
    path = Path(source)
    if not path.exists() and _HUB_ID.match(str(source)):
        ds = _load_hub_intents(str(source))
        lines = list(range(1, len(ds) + 1))
        texts, intents = list(ds["text"]), list(ds["intent"])
        where = str(source)
    else:
        texts, intents, lines = [], [], []
        for number, obj in _read_records(path, "intents"):
            texts.append(_text_field(path, number, obj, "text"))
            intents.append(_text_field(path, number, obj, "intent"))
            lines.append(number)
        where = str(path)
    for text, number in zip(texts, lines):
        if not text or not str(text).strip():
            raise DataError(f"{where}:{number}: field 'text' is empty")
    if known_labels is not None:
        known = set(known_labels)
        for intent, number in zip(intents, lines):
            if intent not in known:
                raise DataError(f"{where}:{number}: unknown intent '{intent}' (not in the training intents; "
                                "add examples of it to the training file)")
    counts = Counter(intents)
    few = sorted((n, k) for k, n in counts.items() if n < min_examples)
    if few:
        shown = ", ".join(f"{k} ({n})" for n, k in few[:5]) + (" ..." if len(few) > 5 else "")
        raise DataError(f"{where}: {len(few)} intent(s) have fewer than {min_examples} examples: {shown}; "
                        f"add examples or lower training.min_examples_per_intent")
    _warn_conflicts(where, texts, intents, lines)
    logger.info("loaded %d intent examples, %d intents from %s", len(texts), len(counts), where)
    return datasets.Dataset.from_dict({"text": [str(t).strip() for t in texts], "intent": intents})


def _warn_conflicts(where: str, texts: list[str], intents: list[str], lines: list[int]) -> None:
    # The same text under two intents is a labelling mistake the model cannot learn; say where.
    seen: dict[str, tuple[str, int]] = {}
    conflicts = []
    for text, intent, number in zip(texts, intents, lines):
        key = " ".join(str(text).lower().split())
        if key in seen and seen[key][0] != intent:
            conflicts.append(f"line {number} '{intent}' vs line {seen[key][1]} '{seen[key][0]}'")
        seen.setdefault(key, (intent, number))
    if conflicts:
        logger.warning("%s: %d text(s) appear under two intents, e.g. %s", where, len(conflicts),
                       "; ".join(conflicts[:MAX_BAD_LINES_SHOWN]))


def _load_hub_intents(source: str) -> datasets.Dataset:
    name, _, split = source.partition(":")
    try:
        ds = datasets.load_dataset(name, split=split or "train")
    except Exception as exc:  # the hub raises many types (offline, missing, auth); all mean "cannot load"
        raise DataError(f"cannot load hub dataset '{name}' (split '{split or 'train'}'): "
                        f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}; "
                        "use a local .jsonl file when offline") from None
    if "intent" not in ds.column_names and "label" in ds.column_names:
        feature = ds.features["label"]
        names = getattr(feature, "names", None)
        ds = ds.map(lambda b: {"intent": [names[i] if names else str(i) for i in b["label"]]}, batched=True)
    if "text" not in ds.column_names or "intent" not in ds.column_names:
        raise DataError(f"hub dataset '{name}' has columns {ds.column_names}; expected 'text' and 'intent' (or 'label')")
    return ds.select_columns(["text", "intent"])


def stratified_split(ds: datasets.Dataset, val_fraction: float, seed: int) -> tuple[datasets.Dataset, datasets.Dataset]:
    """Split per intent so every intent keeps its share in both parts (at least one training example)."""
    if not 0 <= val_fraction < 1:
        raise DataError(f"validation fraction must be in [0, 1), got {val_fraction}")
    rng = random.Random(seed)
    by_label: dict[str, list[int]] = defaultdict(list)
    for i, intent in enumerate(list(ds["intent"])):
        by_label[intent].append(i)
    train_idx, val_idx = [], []
    for intent in sorted(by_label):
        idx = by_label[intent][:]
        rng.shuffle(idx)
        n_val = int(round(len(idx) * val_fraction))
        if val_fraction > 0 and len(idx) >= 2:
            n_val = min(max(n_val, 1), len(idx) - 1)
        else:
            n_val = 0
        val_idx += idx[:n_val]
        train_idx += idx[n_val:]
    return ds.select(sorted(train_idx)), ds.select(sorted(val_idx))


def load_intent_splits(
    train_source: str | Path,
    *,
    validation_source: str | Path | None = None,
    held_out: Sequence[dict[str, str]] | None = None,
    val_fraction: float = 0.1,
    seed: int = 42,
    min_examples: int = 2,
) -> IntentSplits:
    """The training intents split into train/validation: a separate validation file, or `held_out`
    rows (another model's validation split: they are taken out of the training rows), or a
    stratified split of `val_fraction`."""
    full = load_intents(train_source, min_examples=min_examples)
    labels = sorted(set(list(full["intent"])))
    if len(labels) < 2:
        raise DataError(f"{train_source}: at least two intents are needed to train a classifier, found {labels}")
    if validation_source:
        val = load_intents(validation_source, known_labels=labels)
        return IntentSplits(full, val, labels)
    if held_out is not None:
        unknown = sorted({r["intent"] for r in held_out} - set(labels))
        if unknown:
            raise DataError(f"the held-out validation rows have intents not in {train_source}: {', '.join(unknown[:5])}")
        left = Counter((_key(r["text"]), r["intent"]) for r in held_out)
        keep = []
        for i, (text, intent) in enumerate(zip(full["text"], full["intent"])):
            if left[(_key(text), intent)] > 0:
                left[(_key(text), intent)] -= 1
            else:
                keep.append(i)
        val = datasets.Dataset.from_dict({"text": [str(r["text"]).strip() for r in held_out],
                                          "intent": [r["intent"] for r in held_out]})
        return IntentSplits(full.select(keep), val, labels)
    train, val = stratified_split(full, val_fraction, seed)
    return IntentSplits(train, val, labels)


def with_augmented_rows(train: datasets.Dataset, copies: int, seed: int) -> tuple[datasets.Dataset, int]:
    """`train` plus `copies` noisy copies of each row (training/augment.py), each with its row's intent."""
    from training.augment import augmented_copies

    texts, intents = list(train["text"]), list(train["intent"])
    extra = augmented_copies(texts, copies, seed)
    if not extra:
        return train, 0
    more = datasets.Dataset.from_dict({"text": [t for _, t in extra], "intent": [intents[i] for i, _ in extra]})
    return datasets.concatenate_datasets([train.select_columns(["text", "intent"]), more]), len(extra)


def rows_of(ds: datasets.Dataset) -> list[dict[str, str]]:
    """`{"text", "intent"}` rows of an intents Dataset (what a model folder's validation.jsonl holds)."""
    return [{"text": t, "intent": i} for t, i in zip(ds["text"], ds["intent"])]


def _key(text: str) -> str:
    return " ".join(str(text).lower().split())


# --------------------------------------------------------------------------- FAQ

def load_faq(path: str | Path) -> list[FaqRecord]:
    """FAQ records `{"id", "question", "answer", "paraphrases": [...], "category"?}`; ids must be unique."""
    path = Path(path)
    out: list[FaqRecord] = []
    first_line: dict[str, int] = {}
    for number, obj in _read_records(path, "FAQ"):
        rid = _text_field(path, number, obj, "id")
        if rid in first_line:
            raise DataError(f"{path}:{number}: duplicate FAQ id '{rid}' (first at line {first_line[rid]})")
        first_line[rid] = number
        paraphrases = obj.get("paraphrases") or []
        if isinstance(paraphrases, str):  # CSV: paraphrases separated by '|'
            paraphrases = [p for p in paraphrases.split("|")]
        if not isinstance(paraphrases, list) or not all(isinstance(p, str) for p in paraphrases):
            raise DataError(f"{path}:{number}: 'paraphrases' must be a list of strings")
        paraphrases = [p.strip() for p in paraphrases]
        if any(not p for p in paraphrases):
            raise DataError(f"{path}:{number}: 'paraphrases' holds an empty string")
        out.append(FaqRecord(
            id=rid,
            question=_text_field(path, number, obj, "question"),
            answer=_text_field(path, number, obj, "answer"),
            paraphrases=paraphrases,
            category=_text_field(path, number, obj, "category", required=False),
        ))
    return out


def with_dialog_paraphrases(config: Any, records: list[FaqRecord]) -> list[FaqRecord]:
    """The FAQ records with the written training dialogs' standalone FAQ turns added to their
    paraphrases when `retrieval.dialog_paraphrases` is on (the index holds the same wordings)."""
    from retrieval.build import dialog_paraphrases, with_paraphrases

    extra = dialog_paraphrases(config)
    if not extra:
        return records
    return [FaqRecord(**row) for row in with_paraphrases([asdict(r) for r in records], extra)]


def faq_pairs(records: Sequence[FaqRecord], *, max_pairs_per_faq: int = 20, seed: int = 42,
              augment_copies: int = 0) -> datasets.Dataset:
    """Positive pairs for the in-batch contrastive loss: (question, paraphrase) and (paraphrase, paraphrase).

    `group` is the FAQ's position, so the loss can mask pairs of the same FAQ that meet in one
    batch (they are not negatives of each other). Capped per FAQ so a long list does not dominate.
    `augment_copies`: also (question, noisy copy of a paraphrase) pairs (training/augment.py), on
    top of the cap, so a misspelt question lands next to its answer.
    """
    from training.augment import augmented_copies

    rng = random.Random(seed)
    anchors, positives, groups = [], [], []
    for g, rec in enumerate(records):
        pairs = [(rec.question, p) for p in rec.paraphrases]
        pairs += [(a, b) for i, a in enumerate(rec.paraphrases) for b in rec.paraphrases[i + 1:]]
        pairs = [(a, b) for a, b in pairs if a.strip().lower() != b.strip().lower()]
        rng.shuffle(pairs)
        pairs = pairs[:max_pairs_per_faq]
        if augment_copies:
            pairs += [(rec.question, noisy) for _, noisy in augmented_copies(rec.paraphrases, augment_copies, seed + g)]
        for a, b in pairs:
            anchors.append(a)
            positives.append(b)
            groups.append(g)
    return datasets.Dataset.from_dict({"anchor": anchors, "positive": positives, "group": groups})


# --------------------------------------------------------------------------- tokenisation

def _content_key(ds: datasets.Dataset, *parts: Any) -> str:
    h = hashlib.sha256()
    for column in ds.column_names:
        h.update(column.encode())
        h.update(json.dumps(list(ds[column]), ensure_ascii=False, default=str).encode())
    for p in parts:
        h.update(repr(p).encode())
    return h.hexdigest()[:20]


def tokenize_intents(
    ds: datasets.Dataset,
    tokenizer: Any,
    max_length: int,
    label2id: dict[str, int],
    cache_dir: str | Path | None = None,
) -> datasets.Dataset:
    """input_ids / attention_mask / labels / length via `datasets.map` (no padding: the collator pads)."""

    def encode(batch: dict[str, list]) -> dict[str, list]:
        enc = tokenizer(batch["text"], truncation=True, max_length=max_length)
        enc["labels"] = [label2id[i] for i in batch["intent"]]
        enc["length"] = [len(x) for x in enc["input_ids"]]
        return dict(enc)

    return _cached_map(ds, encode, tokenizer, max_length, cache_dir, "intents", ds.column_names)


def tokenize_pairs(ds: datasets.Dataset, tokenizer: Any, max_length: int, cache_dir: str | Path | None = None) -> datasets.Dataset:
    """anchor_* / positive_* token ids for contrastive pairs, plus `group` and `length`."""

    def encode(batch: dict[str, list]) -> dict[str, list]:
        a = tokenizer(batch["anchor"], truncation=True, max_length=max_length)
        p = tokenizer(batch["positive"], truncation=True, max_length=max_length)
        out = {f"anchor_{k}": v for k, v in a.items()}
        out.update({f"positive_{k}": v for k, v in p.items()})
        out["length"] = [max(len(x), len(y)) for x, y in zip(a["input_ids"], p["input_ids"])]
        return out

    return _cached_map(ds, encode, tokenizer, max_length, cache_dir, "pairs", ["anchor", "positive"])


def _cached_map(ds, fn, tokenizer, max_length, cache_dir, kind, remove_columns) -> datasets.Dataset:
    if len(ds) == 0:
        return ds.map(fn, batched=True, remove_columns=remove_columns)
    cache_file = None
    if cache_dir is not None:
        key = _content_key(ds, kind, getattr(tokenizer, "name_or_path", ""), len(tokenizer), max_length)
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        cache_file = str(Path(cache_dir) / f"{kind}-{key}.arrow")
    return ds.map(fn, batched=True, remove_columns=remove_columns, cache_file_name=cache_file,
                  load_from_cache_file=True, desc=f"tokenising {kind}")


# --------------------------------------------------------------------------- batching

class LengthGroupedBatchSampler(Sampler[list[int]]):
    """Random batches of similar length: less padding, so a CPU step costs less.

    Each epoch shuffles the indices with `seed + epoch`, sorts them by length inside windows of
    `window` batches, and shuffles the batch order. The order depends only on (seed, epoch), so
    every process builds the same list and Accelerate's shard of it is consistent; a resumed run
    replays it exactly.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, *, seed: int = 0, window: int = 64,
                 shuffle: bool = True, drop_last: bool = False) -> None:
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.window = window
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.lengths)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        n = len(self.lengths)
        rng = np.random.default_rng(self.seed + self.epoch)
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        span = self.batch_size * self.window
        batches: list[list[int]] = []
        for start in range(0, n, span):
            chunk = order[start:start + span]
            chunk = chunk[np.argsort(-self.lengths[chunk], kind="stable")]
            batches += [chunk[i:i + self.batch_size].tolist() for i in range(0, len(chunk), self.batch_size)]
        if self.drop_last:
            batches = [b for b in batches if len(b) == self.batch_size]
        if self.shuffle:
            perm = rng.permutation(len(batches))
            batches = [batches[i] for i in perm]
        yield from batches


class IntentPairBatchSampler(Sampler[list[int]]):
    """Batches of same-intent pairs: positions i and i + B/2 of a batch hold two examples of one intent.

    The pairs feed an in-batch contrastive loss at no extra cost (the intent batch is its own pair
    batch). Each epoch pairs the examples of every intent at random (an odd one out is paired with
    another example of its intent), groups pairs of similar length like `LengthGroupedBatchSampler`,
    and depends only on (seed, epoch).
    """

    def __init__(self, labels: Sequence[int], lengths: Sequence[int], batch_size: int, *, seed: int = 0,
                 window: int = 64, drop_last: bool = False) -> None:
        if batch_size < 2:
            raise ValueError("paired batches need batch_size >= 2")
        self.labels = np.asarray(labels)
        self.lengths = np.asarray(lengths)
        self.pairs_per_batch = batch_size // 2
        self.seed = seed
        self.window = window
        self.drop_last = drop_last
        self.epoch = 0
        self._n_pairs = int(sum((c + 1) // 2 for c in np.bincount(self.labels) if c))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        if self.drop_last:
            return self._n_pairs // self.pairs_per_batch
        return math.ceil(self._n_pairs / self.pairs_per_batch)

    @staticmethod
    def shard(batch: list[int], n: int, i: int) -> list[int]:
        """Process i's part of a batch: its share of the pairs, still laid out as i / i + half."""
        half = len(batch) // 2
        k = half // n
        return batch[i * k:(i + 1) * k] + batch[half + i * k:half + (i + 1) * k]

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng(self.seed + self.epoch)
        pairs: list[tuple[int, int]] = []
        for label in np.unique(self.labels):
            idx = rng.permutation(np.flatnonzero(self.labels == label))
            if len(idx) % 2:
                idx = np.append(idx, idx[0] if len(idx) == 1 else idx[rng.integers(len(idx) - 1)])
            pairs += [(int(idx[i]), int(idx[i + 1])) for i in range(0, len(idx), 2)]
        pairs = [pairs[i] for i in rng.permutation(len(pairs))]
        pair_len = np.array([max(self.lengths[a], self.lengths[b]) for a, b in pairs])
        span = self.pairs_per_batch * self.window
        batches: list[list[int]] = []
        for start in range(0, len(pairs), span):
            chunk = np.arange(start, min(start + span, len(pairs)))
            chunk = chunk[np.argsort(-pair_len[chunk], kind="stable")]
            for i in range(0, len(chunk), self.pairs_per_batch):
                group = [pairs[j] for j in chunk[i:i + self.pairs_per_batch]]
                if self.drop_last and len(group) < self.pairs_per_batch:
                    continue
                batches.append([a for a, _ in group] + [b for _, b in group])
        yield from (batches[i] for i in rng.permutation(len(batches)))


class PairCollator:
    """Pads the anchor and positive sides of contrastive pairs (dynamic padding per side)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for side in ("anchor", "positive"):
            items = [{k[len(side) + 1:]: f[k] for k in f if k.startswith(side + "_")} for f in features]
            padded = self.tokenizer.pad(items, return_tensors="pt")
            out.update({f"{side}_{k}": v for k, v in padded.items()})
        out["group"] = torch.tensor([f["group"] for f in features], dtype=torch.long)
        return out
