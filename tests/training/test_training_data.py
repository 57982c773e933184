"""training.data: loading, validation with file:line errors, stratified split, cached tokenisation."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from core.config import PROJECT_ROOT
from core.errors import DataError
from training.data import (
    LengthGroupedBatchSampler,
    faq_pairs,
    load_faq,
    load_intent_splits,
    load_intents,
    stratified_split,
    tokenize_intents,
)

BANKING77 = PROJECT_ROOT.parent / "shared" / "data" / "banking77"   # ../shared/data beside the clone


@pytest.fixture(scope="module")
def tiny_tokenizer(tiny_encoder_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_encoder_dir)


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def intents_rows(n_per: int = 5, labels=("greeting", "order_status", "refund")) -> list[dict]:
    return [{"text": f"{label} example {i}", "intent": label} for label in labels for i in range(n_per)]


def test_load_intents_jsonl_and_csv(tmp_path):
    ds = load_intents(write_jsonl(tmp_path / "i.jsonl", intents_rows()))
    assert ds.column_names == ["text", "intent"] and len(ds) == 15
    csv_path = tmp_path / "i.csv"
    csv_path.write_text("text,intent\nhello there,greeting\nwhere is my order,order_status\n", encoding="utf-8")
    ds = load_intents(csv_path)
    assert list(ds["intent"]) == ["greeting", "order_status"]


@pytest.mark.parametrize("line, message", [
    ('{"text": "hi"}', "i.jsonl:3: missing field 'intent'"),
    ('{"text": "   ", "intent": "greeting"}', "i.jsonl:3: field 'text' is empty"),
    ('{"text": "hi", "intent": 3}', "i.jsonl:3: field 'intent' must be a string"),
    ('{"text": "hi", "intent": "greeting"', "i.jsonl: line 3: not valid JSON"),
    ('["hi", "greeting"]', "i.jsonl: line 3: expected a JSON object"),
])
def test_bad_intent_lines_name_file_and_line(tmp_path, line, message):
    rows = intents_rows(1)[:2] + [line]
    with pytest.raises(DataError) as err:
        load_intents(write_jsonl(tmp_path / "i.jsonl", rows))
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_csv_error_names_line(tmp_path):
    path = tmp_path / "i.csv"
    path.write_text("text,intent\nhello,greeting\n,greeting\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"i\.csv:3: field 'text' is empty"):
        load_intents(path)


def test_missing_empty_and_unsupported_files(tmp_path):
    with pytest.raises(DataError, match="intents file not found"):
        load_intents(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n\n", encoding="utf-8")
    with pytest.raises(DataError, match="holds no records"):
        load_intents(tmp_path / "empty.jsonl")
    (tmp_path / "x.txt").write_text("hello", encoding="utf-8")
    with pytest.raises(DataError, match="unsupported"):
        load_intents(tmp_path / "x.txt")


def test_unknown_labels_and_too_few_examples(tmp_path):
    with pytest.raises(DataError, match=r"v\.jsonl:1: unknown intent 'weather'"):
        load_intents(write_jsonl(tmp_path / "v.jsonl", [{"text": "rain?", "intent": "weather"}]),
                     known_labels=["greeting"])
    rows = intents_rows(5) + [{"text": "lonely", "intent": "rare"}]
    with pytest.raises(DataError, match=r"fewer than 2 examples: rare \(1\)"):
        load_intent_splits(write_jsonl(tmp_path / "i.jsonl", rows), min_examples=2)


def test_stratified_split_keeps_every_intent_on_both_sides(tmp_path):
    rows = intents_rows(10) + [{"text": f"two {i}", "intent": "pair"} for i in range(2)]
    splits = load_intent_splits(write_jsonl(tmp_path / "i.jsonl", rows), val_fraction=0.2, seed=1)
    train, val = Counter(splits.train["intent"]), Counter(splits.validation["intent"])
    assert val == {"greeting": 2, "order_status": 2, "refund": 2, "pair": 1}
    assert train["pair"] == 1 and train["greeting"] == 8
    assert splits.labels == sorted(splits.labels) and splits.label2id["greeting"] == 0
    # the same seed gives the same split
    again = load_intent_splits(write_jsonl(tmp_path / "i.jsonl", rows), val_fraction=0.2, seed=1)
    assert list(again.validation["text"]) == list(splits.validation["text"])
    assert len(stratified_split(splits.train, 0.0, 0)[1]) == 0


def test_faq_validation_and_pairs(tmp_path):
    rows = [
        {"id": "f1", "question": "How long is shipping?", "answer": "3 days.", "paraphrases": ["shipping time", "delivery time"]},
        {"id": "f2", "category": "returns", "question": "Can I return?", "answer": "Yes.", "paraphrases": ["return policy"]},
    ]
    faq = load_faq(write_jsonl(tmp_path / "faq.jsonl", rows))
    assert [r.id for r in faq] == ["f1", "f2"] and faq[1].category == "returns"
    pairs = faq_pairs(faq)
    # f1: 2 (question, paraphrase) + 1 (paraphrase, paraphrase); f2: 1
    assert len(pairs) == 4 and sorted(Counter(pairs["group"]).values()) == [1, 3]
    dup = rows + [{"id": "f1", "question": "q", "answer": "a"}]
    with pytest.raises(DataError, match=r"faq\.jsonl:3: duplicate FAQ id 'f1' \(first at line 1\)"):
        load_faq(write_jsonl(tmp_path / "faq.jsonl", dup))
    with pytest.raises(DataError, match=r"faq\.jsonl:1: missing field 'answer'"):
        load_faq(write_jsonl(tmp_path / "faq.jsonl", [{"id": "x", "question": "q"}]))
    with pytest.raises(DataError, match="'paraphrases' must be a list of strings"):
        load_faq(write_jsonl(tmp_path / "faq.jsonl", [{"id": "x", "question": "q", "answer": "a", "paraphrases": [1]}]))


def test_tokenisation_is_cached_on_disk(tmp_path, tiny_tokenizer):
    ds = load_intents(write_jsonl(tmp_path / "i.jsonl", intents_rows(3)))
    label2id = {"greeting": 0, "order_status": 1, "refund": 2}
    cache = tmp_path / "cache"
    tok = tokenize_intents(ds, tiny_tokenizer, 16, label2id, cache)
    assert set(tok.column_names) >= {"input_ids", "attention_mask", "labels", "length"}
    assert max(tok["length"]) <= 16 and list(tok["labels"])[:3] == [0, 0, 0]
    files = list(cache.glob("intents-*.arrow"))
    assert len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    tokenize_intents(ds, tiny_tokenizer, 16, label2id, cache)  # same content: read back, not rewritten
    assert files[0].stat().st_mtime_ns == mtime
    tokenize_intents(ds, tiny_tokenizer, 8, label2id, cache)   # another max length: another cache file
    assert len(list(cache.glob("intents-*.arrow"))) == 2


def test_length_grouped_sampler_is_a_deterministic_permutation():
    lengths = [i % 17 for i in range(100)]
    s = LengthGroupedBatchSampler(lengths, 8, seed=3, window=4)
    first = list(s)
    assert len(first) == len(s) == 13
    assert sorted(i for b in first for i in b) == list(range(100))
    assert list(s) == first                      # same epoch, same order (resume replays it)
    s.set_epoch(1)
    assert list(s) != first
    # inside a batch lengths are close: a batch spans less than the whole range on average
    spans = [max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in first]
    assert sum(spans) / len(spans) < 8


@pytest.mark.skipif(not (BANKING77 / "train.jsonl").is_file(), reason="benchmark corpus ../shared/data/banking77 not present")
def test_banking77_loads_with_all_intents():
    splits = load_intent_splits(BANKING77 / "train.jsonl", val_fraction=0.1, seed=0)
    assert len(splits.labels) == 77
    assert set(splits.validation["intent"]) == set(splits.labels)
    assert len(splits.train) + len(splits.validation) == 10003


def test_intent_pair_sampler_pairs_same_intents():
    from training.data import IntentPairBatchSampler

    labels = [0] * 5 + [1] * 4 + [2] * 1
    lengths = list(range(10))
    s = IntentPairBatchSampler(labels, lengths, 4, seed=0, window=2)
    batches = list(s)
    assert len(batches) == len(s) == 3                       # 3 + 2 + 1 pairs, 2 pairs a batch
    seen = set()
    for b in batches:
        half = len(b) // 2
        assert all(labels[b[i]] == labels[b[i + half]] for i in range(half))
        seen.update(b)
    assert seen == set(range(10))                            # every example is used
    assert list(s) == batches
    s.set_epoch(1)
    assert list(s) != batches
