"""evaluation/explain.py: occlusion on the served NLU, integrated gradients on a torch model, and the
explanation of a stored turn (words, nearest examples, FAQ candidates, OOS score vs threshold, rule)."""
from __future__ import annotations

import numpy as np
import pytest

from evaluation.explain import (Attribution, IntegratedGradients, explain_turn, explanation_markdown, occlusion,
                                predict_full, words)


def test_predict_full_agrees_with_parse(demo_nlu):
    texts = ["where is my order", "do you ship to canada"]
    probs, emb = predict_full(demo_nlu, texts)
    assert probs.shape == (2, len(demo_nlu.labels)) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    for row, parsed in zip(probs, demo_nlu.parse_batch(texts)):
        assert demo_nlu.labels[int(row.argmax())] == parsed.intent
        assert row.max() == pytest.approx(parsed.confidence, abs=1e-5)


def test_occlusion_weighs_each_word_by_the_drop_it_causes(demo_nlu):
    text = "hello can I return these shoes please"
    a = occlusion(demo_nlu, text)
    assert a.words == words(text) and len(a.scores) == len(a.words) and a.method == "occlusion"
    probs, _ = predict_full(demo_nlu, [text, "hello can I these shoes please"])
    j = demo_nlu.labels.index(a.intent)
    assert a.probability == pytest.approx(float(probs[0, j]), abs=1e-5)
    assert a.scores[3] == pytest.approx(float(probs[0, j] - probs[1, j]), abs=1e-5)    # "return" left out
    assert a.top(1) == [int(np.argmax(a.scores))]


def test_occlusion_of_a_named_intent(demo_nlu):
    a = occlusion(demo_nlu, "where is my order", intent=demo_nlu.labels[0])
    assert a.intent == demo_nlu.labels[0]


def test_integrated_gradients_are_complete(tiny_encoder_dir):
    """Attributions add up to p(message) - p(baseline) (the completeness axiom), per word."""
    import torch

    from runtime.model import SupportModel

    torch.manual_seed(0)
    model = SupportModel.from_encoder(str(tiny_encoder_dir), labels=["a", "b", "c"])
    ig = IntegratedGradients(model, n_steps=64)
    a = ig("refund my broken kettle please", intent="b")
    assert a.words == ["refund", "my", "broken", "kettle", "please"] and a.intent == "b"
    tok = model.tokenizer(a.words, is_split_into_words=True, return_tensors="pt")
    special = torch.tensor(model.tokenizer.get_special_tokens_mask(tok["input_ids"][0].tolist(),
                                                                    already_has_special_tokens=True)).bool()
    base = torch.where(special, tok["input_ids"][0], torch.zeros_like(tok["input_ids"][0])).unsqueeze(0)
    with torch.no_grad():
        p_base = torch.softmax(model(input_ids=base, attention_mask=tok["attention_mask"]).logits, -1)[0, 1]
    assert sum(a.scores) == pytest.approx(a.probability - float(p_base), abs=2e-3)


def test_explain_a_stored_turn(assistant, service_config):
    from evaluation.drift import build_reference

    assistant.respond("s-explain", "can I return a jacket I bought two weeks ago?")
    turn = assistant.transcripts.turns(session_id="s-explain")[-1]
    reference = build_reference(assistant.nlu, service_config.data.intents, assistant.model_version)
    exp = explain_turn(turn, assistant, reference, k=3)
    assert exp.turn_id == turn["turn_id"] and exp.attribution is not None
    assert exp.attribution.intent == turn["intent"]
    assert len(exp.nearest) == 3 and exp.nearest[0][2] >= exp.nearest[-1][2]
    assert exp.decision == turn["details"]["decision"]
    assert [f for f, _, _ in exp.faq] == [f for f, _ in turn["details"]["faq"]]
    assert exp.oos_threshold == pytest.approx(assistant.oos.threshold) and exp.oos_score is not None
    md = explanation_markdown(exp)
    for part in ("Words that drove", "Nearest training examples", "FAQ candidates", "Out-of-scope score",
                 "Policy rule", turn["turn_id"]):
        assert part in md


def test_markdown_escapes_the_customers_words():
    from evaluation.explain import Explanation

    exp = Explanation("t-1", "<img src=x onerror=alert(1)> **bold**", "fallback", "x", 0.5,
                      Attribution("x", 0.5, ["<b>hi</b>"], [0.1], "occlusion"))
    md = explanation_markdown(exp)
    assert "<img" not in md and "<b>" not in md and "\\*\\*bold\\*\\*" in md

