"""Corrections as training data: export formats, the diff against the pack, the regression dialogs,
and the round trip store -> export -> merged data -> a real (tiny) training run that learns from it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.cli import run_cli
from core.config import load_config
from evaluation.dialog import load_dialogs
from service import corrections as corr
from service.store import Store
from tests.helpers import make_project
from training import feedback
from training.data import load_faq, load_intent_splits, load_intents


@pytest.fixture()
def project(tmp_path, tiny_encoder_dir) -> Path:
    config = make_project(tmp_path / "proj", tiny_encoder_dir)
    # FAQ topics as intents, so FAQ corrections have an intent to teach, and an out-of-scope intent
    with open(config.parent / "intents.jsonl", "a", encoding="utf-8") as fh:
        for text in ("what's the weather", "tell me a joke", "who won the game", "sing a song"):
            fh.write(json.dumps({"text": text, "intent": "out_of_scope"}) + "\n")
    faq = [json.loads(line) for line in (config.parent / "faq.jsonl").read_text().splitlines()]
    (config.parent / "faq.jsonl").write_text("".join(json.dumps({**r, "category": "shipping" if r["id"] == "f1" else
                                                                 "other"}) + "\n" for r in faq))
    with open(config.parent / "intents.jsonl", "a", encoding="utf-8") as fh:
        for text in ("shipping time?", "how fast do you ship", "delivery duration"):
            fh.write(json.dumps({"text": text, "intent": "faq_shipping"}) + "\n")
    return config


def _corrected_store(config) -> tuple[Store, list[int]]:
    cfg = load_config(config)
    store = Store(cfg.layout.store)
    turns = [("s1", "t-1", "wheres my stuff at"), ("s1", "t-2", "when does my parcel come"),
             ("s2", "t-3", "recommend a good lawyer"), ("s2", "t-4", "hello there"),
             ("s3", "t-5", "can I pay with bitcoin")]
    for sid, tid, text in turns:
        store.append_transcript(sid, "user", text, turn_id=tid)
        store.append_transcript(sid, "assistant", "...", "fallback", "greeting", 0.3, turn_id=tid, model_version="v1")
    pack = corr.Pack.from_config(cfg)
    ids = [
        corr.apply_correction(store, "intent", {"intent": "order_status"}, "ann", pack, session_id="s1", turn_id="t-1"),
        corr.apply_correction(store, "faq", {"faq_id": "f1"}, "ann", pack, session_id="s1", turn_id="t-2"),
        corr.apply_correction(store, "out_of_scope", {}, "bob", pack, session_id="s2", turn_id="t-3"),
        corr.apply_correction(store, "intent", {"intent": "refund"}, "bob", pack, session_id="s2", turn_id="t-4"),
        corr.apply_correction(store, "intent", {"intent": "order_status"}, "bob", pack, session_id="s2", turn_id="t-4"),
        corr.apply_correction(store, "new_faq", {"question": "Do you take crypto?", "answer": "No, cards only.",
                                                 "paraphrases": ["bitcoin accepted?"]}, "ann", pack,
                              session_id="s3", turn_id="t-5"),
        corr.apply_correction(store, "paraphrase", {"faq_id": "f2", "text": "can i give it back"}, "ann", pack,
                              session_id="s1", turn_id="t-2"),
    ]
    return store, ids


def test_export_writes_the_pack_formats(project, tmp_path, capsys):
    store, ids = _corrected_store(project)
    store.close()
    out = tmp_path / "export"
    assert run_cli(feedback.main, ["--config", str(project), "export", "--out", str(out)]) == 0
    assert capsys.readouterr().out.startswith("6 correction(s)")   # the superseded label is not exported
    intents = [json.loads(line) for line in (out / "intents.jsonl").read_text().splitlines()]
    assert {(r["text"], r["intent"]) for r in intents} == {
        ("wheres my stuff at", "order_status"), ("when does my parcel come", "faq_shipping"),
        ("recommend a good lawyer", "out_of_scope"), ("hello there", "order_status")}   # the later label wins
    assert all(set(r) == {"text", "intent"} for r in intents)
    assert load_intents(out / "intents.jsonl")                    # the training loader reads it as is
    faq = {r.id: r for r in load_faq(out / "faq.jsonl")}          # ... and the FAQ loader
    assert faq["f1"].paraphrases[-1] == "when does my parcel come" and "shipping time?" in faq["f1"].paraphrases
    assert faq["f2"].paraphrases[-1] == "can i give it back"
    new = faq[corr.new_faq_id(ids[5])]
    assert (new.question, new.answer) == ("Do you take crypto?", "No, cards only.")
    assert new.paraphrases == ["bitcoin accepted?", "can I pay with bitcoin"]     # the turn's message too


def test_diff_shows_what_would_be_added_and_changed(project, capsys):
    store, ids = _corrected_store(project)
    store.close()
    assert run_cli(feedback.main, ["--config", str(project), "diff"]) == 0
    out = capsys.readouterr().out
    assert '+ {"text": "wheres my stuff at", "intent": "order_status"}' in out
    # "hello there" is a greeting in the pack: the diff shows the change, with who made it
    assert '- {"text": "hello there", "intent": "greeting"}' in out
    assert '+ {"text": "hello there", "intent": "order_status"}  # correction 5 (intent) by bob' in out
    assert "~ f1: How long does shipping take?" in out and '+     paraphrase: "when does my parcel come"' in out
    assert f'+ {{"id": "{corr.new_faq_id(ids[5])}"' in out


def test_regression_dialogs_are_one_turn_dialogs_the_evaluator_reads(project, tmp_path):
    store, ids = _corrected_store(project)
    dialogs = feedback.regression_dialogs(store)
    assert dialogs == feedback.regression_dialogs(store.corrections())
    store.close()
    by_turn = {d["correction"]["turn_id"]: d for d in dialogs}
    assert set(by_turn) == {"t-1", "t-2", "t-3", "t-4", "t-5"}                 # one a corrected turn
    assert by_turn["t-1"]["turns"] == [{"user": "wheres my stuff at",
                                        "expect": {"intent": "order_status", "action": "order_status"}}]
    assert by_turn["t-2"]["turns"][0]["expect"] == {"action": "answer_faq", "faq_id": "f1"}
    assert by_turn["t-3"]["turns"][0]["expect"] == {"action": "out_of_scope"}
    assert by_turn["t-4"]["id"] == f"correction-{ids[4]}"                     # the later label
    assert by_turn["t-5"]["turns"][0]["expect"] == {"action": "answer_faq", "faq_id": corr.new_faq_id(ids[5])}
    path = tmp_path / "regression.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in dialogs))
    assert [d.id for d in load_dialogs(path)] == [d["id"] for d in dialogs]


def test_corrections_round_trip_into_training(project):
    """store -> merged training data (weighted) -> the loaders -> a real tiny training run."""
    store, ids = _corrected_store(project)
    store.close()
    config = load_config(project)
    data = feedback.prepare_training_data(config)
    assert data.intents.parent == config.artifacts_dir / "training_data" and data.corrections == 6
    splits = load_intent_splits(data.intents, val_fraction=0.0, seed=1)
    rows = list(zip(splits.train["text"], splits.train["intent"]))
    assert rows.count(("wheres my stuff at", "order_status")) == 3          # corrections_weight 3
    assert rows.count(("hello there", "order_status")) == 3
    assert ("hello there", "greeting") not in rows                           # the operator's label wins
    assert {r.id for r in load_faq(data.faq)} >= {"f1", "f2", "f3", corr.new_faq_id(ids[5])}
    from retrieval.build import faq_source
    assert faq_source(config) == data.faq                                     # the index reads it too

    from runtime.folder import read_model_meta
    from training.train import TrainOptions, train

    train(config, TrainOptions(max_steps=2))
    meta = read_model_meta(config.layout.teacher)["training"]
    assert meta["intents_file"] == str(data.intents) and meta["corrections"] == 6
    assert meta["corrections_weight"] == 3 and meta["data_sha256"] == data.digest

    # off by config: the pack alone, and the stale merged folder is gone
    off = load_config(project, ["training.corrections=false"])
    plain = feedback.prepare_training_data(off)
    assert plain.intents == off.data.intents and plain.faq == off.data.faq
    assert not (off.artifacts_dir / "training_data").exists() and faq_source(off) == off.data.faq


def test_cli_help_and_one_line_errors(project, capsys):
    with pytest.raises(SystemExit) as exc:
        feedback.main(["--help"])
    assert exc.value.code == 0 and "export" in capsys.readouterr().out
    code = run_cli(feedback.main, ["--config", str(project.parent / "nope.yaml"), "export"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "config file not found" in err
    # no store yet: nothing to export, nothing created
    assert run_cli(feedback.main, ["--config", str(project), "prepare"]) == 0
    assert "no corrections" in capsys.readouterr().out
    assert not load_config(project).layout.store.exists()
