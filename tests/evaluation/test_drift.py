"""evaluation/drift.py: fires on a synthetic shift, stays quiet on samples from the reference."""
from __future__ import annotations

import numpy as np
import pytest

from core.config import MonitoringConfig
from evaluation.drift import (LiveSample, Reference, build_reference, check_drift, continuous_signal,
                              intent_signal, live_sample, psi, psi_noise)

SETTINGS = MonitoringConfig()   # drift_psi 0.2, p < 0.01, min_messages 50


def points(rng: np.random.Generator, n: int, far: bool = False) -> np.ndarray:
    """Training-like messages live mostly in the first 8 of 16 dimensions; far ones in the other 8."""
    x = rng.normal(scale=0.15, size=(n, 16))
    if far:
        x[:, 8:] = rng.normal(size=(n, 8))
    else:
        x[:, :8] = rng.normal(size=(n, 8))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def synthetic_reference(rng: np.random.Generator, n: int = 600) -> Reference:
    intents = [f"intent_{i}" for i in range(20)]
    weights = rng.dirichlet(np.full(20, 5.0))
    emb = points(rng, n)
    val = points(rng, 200)          # a validation split: the same kind of messages, not in training
    distances = 1.0 - (val @ emb.T).max(axis=1)
    return Reference(dict(zip(intents, weights)), 900, rng.beta(8, 2, size=200), distances,
                     emb, [f"text {i}" for i in range(n)], list(rng.choice(intents, size=n)))


def sample_like(ref: Reference, rng: np.random.Generator, n: int) -> tuple[LiveSample, np.ndarray]:
    names = list(ref.intent_shares)
    p = np.array([ref.intent_shares[k] for k in names])
    intents = list(rng.choice(names, size=n, p=p / p.sum()))
    return LiveSample(intents, rng.choice(ref.confidences, size=n), ["m"] * n), points(rng, n)


def test_psi_basics():
    assert psi(np.array([10, 10, 10]), np.array([10, 10, 10])) == pytest.approx(0.0)
    assert psi(np.array([100, 10, 10]), np.array([10, 10, 100])) > 1.0
    assert psi_noise(10, 50, 1000) == pytest.approx(9 * (1 / 50 + 1 / 1000))


@pytest.mark.parametrize("n", [50, 120, 400])
def test_quiet_on_samples_from_the_reference(n):
    rng = np.random.default_rng(n)
    ref = synthetic_reference(rng)
    fired = 0
    for seed in range(20):
        live, emb = sample_like(ref, np.random.default_rng(1000 + seed), n)
        report = check_drift(ref, live, SETTINGS, live_embeddings=emb)
        assert report.enough and len(report.signals) == 3
        fired += report.alert
    assert fired <= 1, f"{fired} false alarms in 20 samples of {n} from the reference"


def test_fires_on_a_shifted_intent_mix():
    rng = np.random.default_rng(1)
    ref = synthetic_reference(rng)
    live, emb = sample_like(ref, rng, 200)
    live.intents = ["intent_3"] * 120 + live.intents[120:]            # one topic suddenly dominates
    report = check_drift(ref, live, SETTINGS, live_embeddings=emb)
    assert report.alert and {s.name for s in report.signals if s.fired} == {"intents"}
    assert "intent_3" in report.signals[0].detail and "DRIFT" in report.summary()


def test_fires_on_lower_confidence_and_far_messages():
    rng = np.random.default_rng(2)
    ref = synthetic_reference(rng)
    live, _ = sample_like(ref, rng, 150)
    live.confidences = rng.beta(2, 3, size=150)                          # the model is unsure now
    far = points(rng, 150, far=True)                                     # unlike any training example
    report = check_drift(ref, live, SETTINGS, live_embeddings=far)
    fired = {s.name for s in report.signals if s.fired}
    assert fired == {"confidence", "distance"}


def test_no_verdict_under_min_messages():
    rng = np.random.default_rng(3)
    ref = synthetic_reference(rng)
    live, emb = sample_like(ref, rng, 49)
    live.intents = ["intent_0"] * 49
    report = check_drift(ref, live, SETTINGS, live_embeddings=emb)
    assert not report.enough and not report.alert and not report.signals


def test_signals_directly():
    ref = {"a": 0.5, "b": 0.5}
    assert not intent_signal(ref, 1000, ["a", "b"] * 50, 0.2, 0.01).fired
    assert intent_signal(ref, 1000, ["c"] * 100, 0.2, 0.01).fired        # an intent the reference never had
    rng = np.random.default_rng(4)
    assert not continuous_signal("x", rng.normal(size=500), rng.normal(size=300), 0.2, 0.01).fired
    assert continuous_signal("x", rng.normal(size=500), rng.normal(2, 1, size=300), 0.2, 0.01).fired


def test_real_reference_quiet_on_unseen_training_like_messages_fires_on_off_topic(service_config, embedder,
                                                                                    tmp_path):
    """The demo pack with a frozen-encoder NLU fitted on 80 % of the intent examples: the other 20 %
    (messages like the training data the model has not seen) pass, a flood of off-topic chatter does not."""
    import json

    from core.jsonl import read_jsonl
    from service.nlu import FrozenEncoderNLU

    rows = read_jsonl(service_config.data.intents)
    rng = np.random.default_rng(0)
    unseen = set(rng.choice(len(rows), size=len(rows) // 5, replace=False).tolist())
    train_file = tmp_path / "intents.jsonl"
    train_file.write_text("".join(json.dumps(r) + "\n" for i, r in enumerate(rows) if i not in unseen))
    nlu = FrozenEncoderNLU.from_file(embedder, train_file)
    ref = build_reference(nlu, train_file, "test")
    assert len(ref.confidences) == len(ref.distances) == ref.n_intent_examples == len(rows) - len(unseen)

    def turns(texts: list[str]) -> list[dict]:
        return [{"user_text": t, "intent": p.intent, "confidence": p.confidence}
                for t, p in zip(texts, nlu.parse_batch(texts))]

    quiet = check_drift(ref, live_sample(turns([rows[i]["text"] for i in sorted(unseen)])), SETTINGS,
                        encoder=nlu.embedder)
    assert quiet.enough and not quiet.alert, quiet.summary()
    off_topic = ["what's the weather like on mars tomorrow", "write me a poem about quantum tax law",
                 "who won the 1962 chess olympiad", "how do I repair a diesel tractor gearbox",
                 "translate bonjour into klingon please", "what is the meaning of life the universe",
                 "recommend a good anime about dragons and pirates", "solve 3x + 7 = 22 for x",
                 "tell me the lyrics of an old sea shanty", "how tall is the tallest volcano in the solar system"]
    shifted = check_drift(ref, live_sample(turns([off_topic[i % 10] + " " + "?" * (i // 10) for i in range(60)])),
                          SETTINGS, encoder=nlu.embedder)
    assert shifted.alert and any(s.name == "distance" and s.fired for s in shifted.signals), shifted.summary()
