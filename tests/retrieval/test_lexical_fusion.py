"""The lexical (BM25) side of FAQ retrieval and the learned fusion that re-ranks dense candidates."""
from __future__ import annotations

import dataclasses
import json
import logging

import numpy as np
import pytest

from core.errors import ArtifactError
from retrieval.build import FUSION_FILE, build_indexes, load_indexes
from retrieval.faq import FaqIndex, lexical_dir
from retrieval.fusion import FEATURES, FusionModel, anchored_scores, candidate_features, train_fusion
from retrieval.index import Hit
from retrieval.lexical import LexicalIndex, tokenize
from tests.retrieval.test_faq_retrieval import SMALL_FAQ, tiny_config  # noqa: F401  (the fixture)

HINT = "python -m retrieval.build --config shop.yaml"
# Enough FAQs with paraphrases to learn a fusion from (two folds' worth of FAQs at least).
TRAIN_FAQ = SMALL_FAQ + [
    {"id": "gift", "question": "Do you sell gift cards?", "answer": "Yes, from $10 to $500.",
     "paraphrases": ["gift voucher", "can I buy a present card"]},
    {"id": "warranty", "question": "What warranty do products have?", "answer": "One year, AppleCare extra.",
     "paraphrases": ["how long is the guarantee", "is there a warranty"]},
    {"id": "track", "question": "How do I track my order?", "answer": "Use the tracking link in your email.",
     "paraphrases": ["where is my parcel", "tracking number"]},
]


def _entries(faqs):
    fi_entries = []
    for f in faqs:
        fi_entries.append((f"{f['id']}#q", f["id"], f["question"]))
        fi_entries += [(f"{f['id']}#p{i}", f["id"], p) for i, p in enumerate(f["paraphrases"])]
    return fi_entries


def _answers(faqs):
    return {f["id"]: f["answer"] for f in faqs}


# ---- lexical index -----------------------------------------------------------------------------
def test_tokenize_drops_stop_words_and_joins_word_forms():
    assert tokenize("Is SHIPPING free for returns?") == ["ship", "free", "return"]
    assert tokenize("returned returning") == ["return", "return"]


def test_lexical_index_finds_an_exact_keyword():
    lex = LexicalIndex(_entries(SMALL_FAQ), _answers(SMALL_FAQ))
    scores = lex.faq_scores("paypal")
    assert max(scores, key=scores.get) == "pay" and scores["ship"] == scores["ret"] == 0.0
    answers = lex.answer_scores("is it free over 49")   # only the shipping answer says so
    assert max(answers, key=answers.get) == "ship"
    assert set(lex.faq_scores("zebra quantum")) == {"ship", "ret", "pay"}   # unknown words: zeros, no error
    assert not any(lex.faq_scores("zebra quantum").values())


def test_lexical_index_survives_save_and_load(tmp_path):
    lex = LexicalIndex(_entries(SMALL_FAQ), _answers(SMALL_FAQ))
    lex.save(tmp_path / "lex")
    loaded = LexicalIndex.load(tmp_path / "lex", lex.content, hint=HINT)
    for query in ("can I pay with paypal", "return policy", "shipping fee"):
        assert loaded.faq_scores(query) == pytest.approx(lex.faq_scores(query))
        assert loaded.answer_scores(query) == pytest.approx(lex.answer_scores(query))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]   # no temp leftovers


def test_lexical_index_over_other_wordings_is_an_artifact_error(tmp_path):
    LexicalIndex(_entries(SMALL_FAQ), _answers(SMALL_FAQ)).save(tmp_path / "lex")
    other = LexicalIndex(_entries(SMALL_FAQ[:2]), _answers(SMALL_FAQ[:2]))
    with pytest.raises(ArtifactError, match=r"other FAQ wordings.*python -m retrieval\.build"):
        LexicalIndex.load(tmp_path / "lex", other.content, hint=HINT)
    (tmp_path / "lex" / "lexical.json").write_text("{not json")
    with pytest.raises(ArtifactError, match=r"unreadable.*python -m retrieval\.build"):
        LexicalIndex.load(tmp_path / "lex", None, hint=HINT)


def test_leaving_a_wording_out_removes_its_words():
    lex = LexicalIndex(_entries(SMALL_FAQ), _answers(SMALL_FAQ))
    assert lex.faq_scores("paypal")["pay"] > 0
    assert lex.without({"pay#p0"}).faq_scores("paypal")["pay"] == 0.0   # only that paraphrase says "paypal"
    assert lex.faq_scores("paypal")["pay"] > 0                            # the original is untouched


def test_faq_index_keeps_the_lexical_side_in_step(embedder, tmp_path):
    fi = FaqIndex.build(SMALL_FAQ, embedder)
    assert fi.lexical.faq_scores("voucher")["ship"] == 0.0
    fi.add_faq({"id": "gift", "question": "Do you sell gift cards?", "answer": "Yes.",
                "paraphrases": ["gift voucher"]}, embedder)
    scores = fi.lexical.faq_scores("voucher")
    assert max(scores, key=scores.get) == "gift"
    fi.save(tmp_path / "faq")
    assert (lexical_dir(tmp_path / "faq") / "lexical.json").is_file()
    loaded = FaqIndex.load(tmp_path / "faq", embedder.fingerprint)
    assert max(loaded.lexical.faq_scores("voucher"), key=loaded.lexical.faq_scores("voucher").get) == "gift"
    assert loaded.remove_faq("gift")
    assert "gift" not in loaded.lexical.faq_scores("voucher")
    loaded.save(tmp_path / "faq")
    assert "gift" not in FaqIndex.load(tmp_path / "faq", embedder.fingerprint).lexical.faq_scores("voucher")


def test_a_lexical_folder_from_other_wordings_is_refused(embedder, tmp_path):
    FaqIndex.build(SMALL_FAQ, embedder).save(tmp_path / "faq")
    LexicalIndex(_entries(SMALL_FAQ[:2]), _answers(SMALL_FAQ[:2])).save(lexical_dir(tmp_path / "faq"))
    with pytest.raises(ArtifactError, match="other FAQ wordings"):
        FaqIndex.load(tmp_path / "faq", embedder.fingerprint, hint=HINT)


# ---- fusion ------------------------------------------------------------------------------------
def _model(**weights) -> FusionModel:
    w = [0.0] * len(FEATURES)
    for name, value in weights.items():
        w[FEATURES.index(name)] = value
    return FusionModel(weights=w, candidates=5, encoder_fingerprint="fp")


def test_strong_lexical_evidence_reorders_candidates():
    lex = LexicalIndex(_entries(SMALL_FAQ), _answers(SMALL_FAQ))
    dense = [Hit("ship", 0.62, {}), Hit("pay", 0.58, {}), Hit("ret", 0.40, {})]
    sims = {"ship": (np.array([0.62]), 0.6), "pay": (np.array([0.58]), 0.55), "ret": (np.array([0.4]), 0.4)}
    x = candidate_features([(h.id, h.score) for h in dense], sims, lex, "paypal")
    assert x[1, FEATURES.index("bm25_top")] == 1.0 and x[0, FEATURES.index("bm25_rel")] == 0.0

    dense_only = _model(dense=1.0).rerank(dense, sims, lex, "paypal", k=3)
    assert [h.id for h in dense_only] == ["ship", "pay", "ret"]
    assert [h.score for h in dense_only] == pytest.approx([0.62, 0.58, 0.40])   # dense weights: dense scores
    fused = _model(dense=1.0, bm25_rel=0.2).rerank(dense, sims, lex, "paypal", k=3)
    assert [h.id for h in fused] == ["pay", "ship", "ret"]
    # the top keeps the message's best cosine (what the answer threshold reads); the others sit below it
    # by their fused gap
    assert fused[0].score == pytest.approx(0.62) and fused[1].score == pytest.approx(0.62 - 0.16)
    # a message without the keyword: no lexical evidence, the dense order stands
    plain = _model(dense=1.0, bm25_rel=0.2).rerank(dense, sims, lex, "how much is it", k=3)
    assert [h.id for h in plain] == ["ship", "pay", "ret"]


def test_anchored_scores_keep_the_best_cosine_on_top():
    x = np.array([[0.7] + [0] * (len(FEATURES) - 1), [0.6] + [0] * (len(FEATURES) - 1)])
    assert anchored_scores(x, np.array([1.0, 1.5])).tolist() == pytest.approx([0.2, 0.7])


@pytest.fixture(scope="module")
def trained(embedder):
    fi = FaqIndex.build(TRAIN_FAQ, embedder)
    return fi, train_fusion(fi, fi.lexical, embedder, candidates=4, c_grid=(1.0, 10.0), folds=3,
                            messages=[("send the item back", "ret"), ("apple care", "warranty")])


def test_fusion_trains_saves_and_loads(trained, embedder, tmp_path):
    fi, training = trained
    model, stats = training.model, training.stats
    assert stats["paraphrases"] == 12 and stats["dialog_messages"] == 2 and stats["C"] in (1.0, 10.0)
    assert model.cosine_weight > 0 and len(model.weights) == len(FEATURES)
    assert model.encoder_fingerprint == embedder.fingerprint
    assert len(training.oof_top) <= stats["paraphrases"]
    model.save(tmp_path / FUSION_FILE)
    loaded = FusionModel.load(tmp_path / FUSION_FILE, embedder.fingerprint, hint=HINT)
    assert loaded.weights == model.weights and loaded.model_id == model.model_id

    fi.fusion = loaded
    try:
        q = embedder.encode(["do you take paypal"])
        fused = fi.search(q[0], k=3, text="do you take paypal")
        assert fused[0].id == "pay" and len({h.id for h in fused}) == 3
        assert fi.search_batch(q, 3, texts=["do you take paypal"])[0][0].id == "pay"
        assert [h.id for h in fi.search(q[0], k=3)] == [h.id for h in fi.search_batch(q, 3)[0]]   # no text: dense
    finally:
        fi.fusion = None


def test_fusion_file_problems_are_artifact_errors(trained, embedder, tmp_path):
    model = trained[1].model
    path = tmp_path / FUSION_FILE
    with pytest.raises(ArtifactError, match=r"missing.*python -m retrieval\.build"):
        FusionModel.load(path, hint=HINT)
    model.save(path)
    with pytest.raises(ArtifactError, match="another encoder"):
        FusionModel.load(path, "some-other-fingerprint", hint=HINT)
    data = json.loads(path.read_text())
    path.write_text(json.dumps(dict(data, features=data["features"][:-1], weights=data["weights"][:-1])))
    with pytest.raises(ArtifactError, match="other features"):
        FusionModel.load(path, hint=HINT)
    path.write_text(json.dumps(dict(data, weights=[w * 2 for w in data["weights"]])))
    with pytest.raises(ArtifactError, match="model id"):
        FusionModel.load(path, hint=HINT)
    path.write_text("[1, 2")
    with pytest.raises(ArtifactError, match="corrupt"):
        FusionModel.load(path, hint=HINT)


def test_too_little_faq_to_learn_from_is_a_value_error(embedder):
    one = FaqIndex.build(SMALL_FAQ[:1], embedder)
    with pytest.raises(ValueError, match="fusion training needs"):
        train_fusion(one, one.lexical, embedder)


# ---- build and load ----------------------------------------------------------------------------
def test_build_writes_fusion_and_load_switches_the_threshold(tiny_config, embedder):  # noqa: F811
    summary = build_indexes(tiny_config, embedder=embedder, show_progress=False)
    idx = tiny_config.index_dir
    assert (idx / FUSION_FILE).is_file() and (idx / "faq_lexical" / "lexical.json").is_file()
    assert summary["fusion"] is not None
    saved = json.loads((idx / "calibration.json").read_text())
    assert saved["fusion"]["model_id"] == json.loads((idx / FUSION_FILE).read_text())["model_id"]

    faq, _, cal = load_indexes(tiny_config, embedder)
    assert faq.fusion is not None and faq.reads_text
    assert cal["faq_score"] == "fused" and cal["faq_threshold"] == saved["fusion"]["faq_threshold"]
    q = embedder.encode(["can I pay with paypal"])[0]
    assert faq.search(q, 1, text="can I pay with paypal")[0].id == "pay"

    off = tiny_config.replace(retrieval=dataclasses.replace(tiny_config.retrieval, fusion=False))
    faq, _, cal = load_indexes(off, embedder)
    assert faq.fusion is None and not faq.reads_text
    assert cal["faq_score"] == "dense" and cal["faq_threshold"] == saved["faq_threshold"]


def test_indexes_without_a_fusion_model_serve_densely_with_a_warning(tiny_config, embedder, caplog):  # noqa: F811
    build_indexes(tiny_config, embedder=embedder, show_progress=False)
    idx = tiny_config.index_dir
    # what a build from before the fusion left: no fusion file, no fused threshold
    (idx / FUSION_FILE).unlink()
    saved = json.loads((idx / "calibration.json").read_text())
    (idx / "calibration.json").write_text(json.dumps({k: v for k, v in saved.items() if k != "fusion"}))
    with caplog.at_level(logging.WARNING, logger="retrieval.build"):
        faq, _, cal = load_indexes(tiny_config, embedder)
    assert faq.fusion is None and cal["faq_score"] == "dense" and cal["faq_threshold"] == saved["faq_threshold"]
    assert "no FAQ fusion model" in caplog.text and "python -m retrieval.build" in caplog.text


def test_a_fusion_model_without_its_threshold_is_an_artifact_error(tiny_config, embedder):  # noqa: F811
    build_indexes(tiny_config, embedder=embedder, show_progress=False)
    cal_path = tiny_config.index_dir / "calibration.json"
    saved = json.loads(cal_path.read_text())
    cal_path.write_text(json.dumps(dict(saved, fusion=dict(saved["fusion"], model_id="0" * 16))))
    with pytest.raises(ArtifactError, match=r"no threshold calibrated for the FAQ fusion.*python -m retrieval\.build"):
        load_indexes(tiny_config, embedder)


def test_held_out_dialogs_cannot_train_the_fusion(tiny_config, embedder, tmp_path):  # noqa: F811
    from core.errors import DataError
    from retrieval.build import fusion_messages

    dialogs = tmp_path / "held_out.jsonl"
    dialogs.write_text(json.dumps({"id": "d1", "turns": [{"user": "paypal ok?", "expect": {"faq_id": "pay"}}]}) + "\n")
    cfg = tiny_config.replace(data=dataclasses.replace(tiny_config.data, train_dialogs=dialogs))
    assert fusion_messages(cfg) == [("paypal ok?", "pay")]
    held = cfg.replace(data=dataclasses.replace(cfg.data, dialogs=dialogs))
    with pytest.raises(DataError, match="held-out dialogs"):
        fusion_messages(held)


def _written(tmp_path, turns_of):
    path = tmp_path / "written.jsonl"
    path.write_text("".join(json.dumps({"id": f"w{i}", "turns": [{"user": u, "expect": e} for u, e in turns]}) + "\n"
                            for i, turns in enumerate(turns_of)))
    return path


def test_written_dialog_turns_that_stand_alone_become_paraphrases_and_leave_the_fusion_messages(tiny_config, tmp_path):  # noqa: F811
    from retrieval.build import dialog_paraphrases, fusion_messages, with_paraphrases

    written = _written(tmp_path, [
        [("paypal ok for paying?", {"faq_id": "pay"}),
         ("and what about apple pay", {"faq_id": "pay"})],          # follows an FAQ answer: a follow-up
        [("hi", {"action": "small_talk"}),
         ("wanna send the lamp back", {"faq_id": "ret"})],          # follows small talk: stands alone
    ])
    cfg = tiny_config.replace(data=dataclasses.replace(tiny_config.data, written_train_dialogs=written))
    assert dialog_paraphrases(cfg) == []                            # off unless asked for
    assert len(fusion_messages(cfg)) == 3
    on = cfg.replace(retrieval=dataclasses.replace(cfg.retrieval, dialog_paraphrases=True))
    assert dialog_paraphrases(on) == [("paypal ok for paying?", "pay"), ("wanna send the lamp back", "ret")]
    # what the index holds is learned leave-one-out with the paraphrases, not again as a message
    assert fusion_messages(on) == [("and what about apple pay", "pay")]
    faq = [{"id": "pay", "question": "Which payments?", "answer": "Cards.", "paraphrases": ["PayPal OK for paying?"]},
           {"id": "ret", "question": "Returns?", "answer": "30 days.", "paraphrases": []}]
    merged = with_paraphrases(faq, dialog_paraphrases(on) + [("lost", "nope")])
    assert merged[0] is faq[0]                                      # a wording it has (any case): unchanged
    assert merged[1]["paraphrases"] == ["wanna send the lamp back"] and faq[1]["paraphrases"] == []


def test_the_teacher_and_the_student_learn_the_same_written_wordings(tiny_config, tmp_path):  # noqa: F811
    from training.data import FaqRecord, with_dialog_paraphrases

    written = _written(tmp_path, [[("wanna send the lamp back", {"faq_id": "ret"})]])
    cfg = tiny_config.replace(data=dataclasses.replace(tiny_config.data, written_train_dialogs=written),
                              retrieval=dataclasses.replace(tiny_config.retrieval, dialog_paraphrases=True))
    records = [FaqRecord(id="ret", question="Returns?", answer="30 days.", paraphrases=["send back"])]
    assert with_dialog_paraphrases(cfg, records)[0].paraphrases == ["send back", "wanna send the lamp back"]
    off = cfg.replace(retrieval=dataclasses.replace(cfg.retrieval, dialog_paraphrases=False))
    assert with_dialog_paraphrases(off, records) == records
