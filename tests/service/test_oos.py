"""Out-of-scope detection (service/oos/): threshold calibration on hand-made scores, the detector on
synthetic clusters (fit, flags, save/load), and one small check on real MiniLM embeddings."""
from __future__ import annotations

import json

import numpy as np
import pytest

from core.errors import ArtifactError
from runtime.calibration import fit_temperature
from service.nlu import NLUResult
from service.oos import (
    OOSCalibration,
    OOSDetector,
    apply_temperature,
    calibrate_oos_threshold,
    knn_similarity_score,
    max_prob_score,
    oos_figures,
    validation_temperature,
)

# ---------------------------------------------------------------------- calibration on a constructed example
# Ten in-scope examples, all predicted right, and four OOS examples; scores: higher = more in scope.
IN_SCORES = [0.50, 0.55, 0.65, 0.70, 0.75, 0.80, 0.85, 0.90, 0.92, 0.95]
OOS_SCORES = [0.10, 0.20, 0.30, 0.60]
SCORES = np.array(IN_SCORES + OOS_SCORES)
GOLD = [f"i{j % 3}" for j in range(10)] + ["oos"] * 4
PRED = [f"i{j % 3}" for j in range(10)] + ["i0"] * 4


def test_accuracy_floor_takes_the_largest_threshold_that_keeps_the_floor():
    cal = calibrate_oos_threshold(SCORES, GOLD, PRED, min_in_scope_accuracy=0.9)
    # 90% allows one in-scope example (0.50) to be flagged: the threshold lies between 0.50 and 0.55.
    assert 0.50 < cal.threshold <= 0.55
    assert cal.objective == "accuracy_floor" and cal.floor == 0.9 and cal.floor_met
    assert cal.figures["in_scope_accuracy"] == pytest.approx(0.9)
    assert cal.figures["oos_recall"] == pytest.approx(0.75)            # 0.1, 0.2, 0.3 flagged
    assert cal.figures["oos_precision"] == pytest.approx(0.75)         # 3 of the 4 flagged
    assert cal.figures["base_in_scope_accuracy"] == pytest.approx(1.0)


def test_accuracy_floor_relative_to_the_unthresholded_accuracy():
    cal = calibrate_oos_threshold(SCORES, GOLD, PRED, max_accuracy_drop=0.0)
    # No in-scope example may be lost: flag everything below 0.50 and nothing at or above it.
    assert 0.30 < cal.threshold <= 0.50
    assert cal.figures["in_scope_accuracy"] == 1.0 and cal.figures["oos_recall"] == pytest.approx(0.75)


def test_balanced_objective_trades_two_in_scope_examples_for_the_last_oos_one():
    cal = calibrate_oos_threshold(SCORES, GOLD, PRED, objective="balanced")
    # (0.8 + 1.0) / 2 = 0.9 beats (1.0 + 0.75) / 2 = 0.875.
    assert 0.60 < cal.threshold <= 0.65
    assert cal.figures["in_scope_accuracy"] == pytest.approx(0.8) and cal.figures["oos_recall"] == 1.0


def test_f1_objective():
    cal = calibrate_oos_threshold(SCORES, GOLD, PRED, objective="f1")
    # t in (0.3, 0.5]: P=1, R=.75, F1=.857; t in (0.6, 0.65]: P=4/6, R=1, F1=.8.
    assert 0.30 < cal.threshold <= 0.50 and cal.figures["oos_f1"] == pytest.approx(6 / 7)


def test_unreachable_floor_flags_nothing_by_score_and_says_so():
    pred = list(PRED)
    pred[:2] = ["i2", "i2"]                       # two in-scope mistakes: at most 80% in-scope accuracy
    cal = calibrate_oos_threshold(SCORES, GOLD, pred, min_in_scope_accuracy=0.95)
    assert not cal.floor_met and cal.threshold < SCORES.min()
    assert cal.figures["in_scope_accuracy"] == pytest.approx(0.8) and cal.figures["oos_recall"] == 0.0


def test_a_predicted_oos_label_is_flagged_and_a_wrong_intent_never_counts_as_correct():
    pred = list(PRED)
    pred[-1] = "out_of_scope"                     # the hard OOS example is caught by the label
    pred[9] = "i1"                                # the best in-scope score, but the wrong intent
    figs = oos_figures(SCORES, GOLD, pred, threshold=0.4)
    assert figs["oos_recall"] == 1.0 and figs["in_scope_accuracy"] == pytest.approx(0.9)
    assert figs["n_oos"] == 4 and figs["n_in_scope"] == 10


def test_objectives_needing_oos_examples_refuse_without_them():
    with pytest.raises(ValueError, match="needs OOS examples"):
        calibrate_oos_threshold(SCORES[:10], GOLD[:10], PRED[:10], objective="balanced")
    cal = calibrate_oos_threshold(SCORES[:10], GOLD[:10], PRED[:10], max_accuracy_drop=0.1)
    assert cal.figures["oos_recall"] is None and cal.figures["in_scope_accuracy"] == pytest.approx(0.9)


@pytest.mark.parametrize("objective", ["accuracy_floor", "balanced", "f1"])
def test_the_sweep_agrees_with_brute_force(objective):
    rng = np.random.default_rng(3)
    n = 300
    gold = np.where(rng.random(n) < 0.15, "oos", rng.choice(["a", "b", "c"], n))
    pred = np.where(rng.random(n) < 0.9, gold, rng.choice(["a", "b", "c", "oos"], n))
    scores = np.round(rng.normal(size=n) + (gold != "oos"), 1)            # rounded: many ties
    cal = calibrate_oos_threshold(scores, list(gold), list(pred), objective=objective, max_accuracy_drop=0.05)
    u = np.unique(scores)
    cands = np.concatenate([[u[0] - 1], (u[:-1] + u[1:]) / 2, [u[-1] + 1]])
    figs = [oos_figures(scores, list(gold), list(pred), t) for t in cands]
    if objective == "accuracy_floor":
        ok = [i for i, f in enumerate(figs) if f["in_scope_accuracy"] >= cal.floor - 1e-12]
        best = max(ok)
    else:
        key = ((lambda f: (f["in_scope_accuracy"] + f["oos_recall"]) / 2) if objective == "balanced"
               else (lambda f: f["oos_f1"]))
        vals = [key(f) for f in figs]
        best = int(np.flatnonzero(np.asarray(vals) >= max(vals) - 1e-12)[0])
    assert cal.threshold == pytest.approx(cands[best])
    for k in ("in_scope_accuracy", "oos_recall", "oos_precision"):
        assert cal.figures[k] == pytest.approx(figs[best][k])


def test_calibration_is_json_serialisable():
    cal = calibrate_oos_threshold(SCORES, GOLD, PRED, min_in_scope_accuracy=0.9, method="knn")
    again = OOSCalibration.from_dict(json.loads(json.dumps(cal.to_dict())))
    assert again == cal


# ---------------------------------------------------------------------- temperature and raw scores

def test_temperature_fit_recovers_the_temperature_that_generated_the_labels():
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=4.0, size=(4000, 6))
    true_t = 2.5
    p_true = apply_temperature(np.exp(logits) / np.exp(logits).sum(1, keepdims=True), true_t)
    targets = np.array([rng.choice(6, p=p) for p in p_true])
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    gold = [f"i{t}" for t in targets[:-1]] + ["oos"]       # a label the NLU does not know: that row is ignored
    fitted = validation_temperature(probs, [f"i{j}" for j in range(6)], gold)
    assert fitted == pytest.approx(true_t, rel=0.1)
    # the shared fit on log-probabilities, rows with a negative target ignored
    assert fitted == fit_temperature(np.log(probs), np.append(targets[:-1], -1), bounds=(0.05, 20.0))
    assert max_prob_score(probs, 2.5).mean() < max_prob_score(probs).mean()


def test_knn_score_is_the_mean_of_the_top_k_cosines():
    ref = np.eye(4, dtype=np.float32)
    q = np.array([[1.0, 1.0, 0.0, 0.0]])
    assert knn_similarity_score(q, ref, k=1)[0] == pytest.approx(np.sqrt(0.5))
    assert knn_similarity_score(q, ref, k=3)[0] == pytest.approx(2 * np.sqrt(0.5) / 3)


# ---------------------------------------------------------------------- the detector on synthetic clusters

LABELS = ["a", "b", "c", "d", "oos"]


def _world(seed: int = 0, dim: int = 32):
    """Four intent clusters on the unit sphere, an NLU whose probabilities follow the cosines, and
    OOS messages that point elsewhere (mildly confident, as a real classifier often is)."""
    rng = np.random.default_rng(seed)
    centers = np.linalg.qr(rng.normal(size=(dim, 5)))[0].T[:4]          # orthonormal intent directions

    def sample(label_ids, noise=0.35):
        x = centers[label_ids] + noise * rng.normal(size=(len(label_ids), dim)) / np.sqrt(dim)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    def nlu_probs(emb):
        logits = np.concatenate([8 * emb @ centers.T, np.full((len(emb), 1), 2.0)], axis=1)
        e = np.exp(logits - logits.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    def oos(n):
        x = rng.normal(size=(n, dim))
        x -= 0.3 * (x @ centers.T) @ centers                           # away from the intents, not orthogonal
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    tr_ids = np.repeat(np.arange(4), 40)
    train = sample(tr_ids)
    train_labels = [LABELS[i] for i in tr_ids] + ["oos"] * 10
    train = np.concatenate([train, oos(10)])
    va_ids = np.repeat(np.arange(4), 25)
    val_in = sample(va_ids)
    val_oos = oos(30)
    val = np.concatenate([val_in, val_oos])
    val_labels = [LABELS[i] for i in va_ids] + ["oos"] * 30
    return {"train": train, "train_labels": train_labels, "val": val, "val_labels": val_labels,
            "val_probs": nlu_probs(val), "sample": sample, "oos": oos, "nlu_probs": nlu_probs}


@pytest.fixture(scope="module")
def world():
    return _world()


@pytest.mark.parametrize("method", ["msp", "knn", "centroid", "combined"])
def test_detector_flags_obvious_oos_and_keeps_in_scope(world, method):
    det = OOSDetector.fit(LABELS, world["train"], world["train_labels"], world["val_probs"], world["val"],
                          world["val_labels"], method=method, k=5, max_accuracy_drop=0.02)
    assert det.calibration.floor_met and det.calibration.figures["in_scope_accuracy"] >= 0.97
    fresh_in = world["sample"](np.arange(4).repeat(10))
    fresh_oos = world["oos"](40)
    flags_in = det.flags(world["nlu_probs"](fresh_in), fresh_in)
    flags_oos = det.flags(world["nlu_probs"](fresh_oos), fresh_oos)
    assert flags_in.mean() <= 0.1
    assert flags_oos.mean() >= 0.8
    # Single-message API agrees with the batch one.
    row, emb = world["nlu_probs"](fresh_oos[:1])[0], fresh_oos[0]
    assert det.is_out_of_scope(row, emb) == bool(flags_oos[0])
    assert det.score(row, emb) == pytest.approx(det.scores(row[None], emb[None])[0])


def test_reference_leaves_out_oos_training_rows(world):
    det = OOSDetector.fit(LABELS, world["train"], world["train_labels"], world["val_probs"], world["val"],
                          world["val_labels"], method="knn")
    assert len(det.reference) == 160 and "oos" not in det.reference_labels


def test_detector_round_trips_through_dict_and_files(world, tmp_path):
    det = OOSDetector.fit(LABELS, world["train"], world["train_labels"], world["val_probs"], world["val"],
                          world["val_labels"], method="combined", encoder_fingerprint="abc123")
    d = json.loads(json.dumps(det.to_dict()))                         # JSON-serialisable as it is
    again = OOSDetector.from_dict(d, reference=det.reference)
    probs, emb = world["val_probs"], world["val"]
    np.testing.assert_allclose(again.scores(probs, emb), det.scores(probs, emb))
    assert again.threshold == det.threshold and again.calibration == det.calibration
    det.save(tmp_path / "model")
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["oos.json", "oos_reference.npy"]
    loaded = OOSDetector.load(tmp_path / "model", expected_fingerprint="abc123")
    np.testing.assert_array_equal(loaded.flags(probs, emb), det.flags(probs, emb))
    with pytest.raises(ArtifactError, match="another encoder"):
        OOSDetector.load(tmp_path / "model", expected_fingerprint="zzz999")
    with pytest.raises(ArtifactError, match="no OOS detector"):
        OOSDetector.load(tmp_path / "elsewhere")
    (tmp_path / "model" / "oos.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="corrupt"):
        OOSDetector.load(tmp_path / "model")


def test_msp_detector_needs_no_embeddings_and_checks_an_nlu_result(world):
    det = OOSDetector.fit(LABELS, world["train"], world["train_labels"], world["val_probs"], None,
                          world["val_labels"], method="msp", calibrate_temperature=False)
    assert det.reference is None and "reference_dim" in det.to_dict()
    row = world["val_probs"][-1]
    ranking = sorted(zip(LABELS, row.tolist()), key=lambda x: -x[1])[:3]
    res = NLUResult(ranking[0][0], ranking[0][1], ranking, world["val"][-1].astype(np.float32))
    flagged, score = det.check_result(res)
    assert score == pytest.approx(row.max())
    assert flagged == det.is_out_of_scope(row)
    # An NLU that already says out_of_scope is out of scope, whatever the score.
    assert det.check_result(NLUResult("oos", 0.99, [("oos", 0.99)], res.embedding))[0]


# ---------------------------------------------------------------------- one real check (MiniLM, ~40 sentences)

REAL_TRAIN = {
    "order_status": ["where is my order", "has my package shipped yet", "track my delivery",
                     "when will my parcel arrive", "what's the status of my order"],
    "return_request": ["i want to return this item", "how do i send something back", "start a return for my order",
                       "i'd like a refund for the blender i bought", "can i return a product i opened"],
    "faq_payments": ["which payment methods do you accept", "can i pay with paypal", "do you take apple pay",
                     "is it possible to pay in instalments", "can i use two cards for one order"],
}
REAL_VAL_IN = [("where's my stuff, it hasn't come", "order_status"), ("i need to send back the headphones", "return_request"),
               ("do you accept visa", "faq_payments"), ("track order please", "order_status"),
               ("can i pay by bank transfer", "faq_payments"), ("return my toaster", "return_request")]
REAL_OOS = ["what's the weather like in paris", "tell me a joke about penguins", "who won the football match",
            "how tall is mount everest", "translate good morning into german"]


def test_real_embeddings_separate_weather_and_jokes_from_shop_questions(embedder):
    from sklearn.linear_model import LogisticRegression

    train_texts = [t for ts in REAL_TRAIN.values() for t in ts]
    train_labels = [lab for lab, ts in REAL_TRAIN.items() for _ in ts]
    x_train = embedder.encode(train_texts)
    clf = LogisticRegression(C=10.0, max_iter=1000).fit(x_train, train_labels)
    val_texts = [t for t, _ in REAL_VAL_IN] + REAL_OOS[:2]
    val_labels = [lab for _, lab in REAL_VAL_IN] + ["out_of_scope"] * 2
    x_val = embedder.encode(val_texts)
    det = OOSDetector.fit(list(clf.classes_), x_train, train_labels, clf.predict_proba(x_val), x_val, val_labels,
                          method="knn", k=3, max_accuracy_drop=0.0)
    x_oos = embedder.encode(REAL_OOS[2:])
    assert det.flags(clf.predict_proba(x_oos), x_oos).all()
    fresh = ["is my order on its way", "how do i return a broken kettle"]
    x_in = embedder.encode(fresh)
    assert not det.flags(clf.predict_proba(x_in), x_in).any()


@pytest.mark.parametrize("method", ["msp", "knn", "combined"])
def test_cross_validated_fit_for_a_frozen_encoder_nlu(world, method):
    # FrozenEncoderNLU fits on every example: validation scores come out of fold, and a row never
    # meets itself in the kNN reference (else every score would be ~1 and fresh messages flagged).
    x = np.concatenate([world["train"], world["val"]])
    y = world["train_labels"] + world["val_labels"]
    det = OOSDetector.fit_cross_validated(x, y, folds=4, method=method, k=5, max_accuracy_drop=0.02)
    assert det.meta["cross_validated"]["n_validation"] == len(y)
    assert set(det.labels) == set(LABELS) and (method == "msp" or len(det.reference) == 260)
    assert det.calibration.figures["oos_recall"] >= 0.8
    fresh_in = world["sample"](np.arange(4).repeat(10))
    fresh_oos = world["oos"](40)
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=10.0, max_iter=2000).fit(x, y)
    assert list(clf.classes_) == det.labels
    assert det.flags(clf.predict_proba(fresh_in), fresh_in).mean() <= 0.1
    assert det.flags(clf.predict_proba(fresh_oos), fresh_oos).mean() >= 0.8
