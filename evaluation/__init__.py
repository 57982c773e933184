"""Evaluation: score a model before it goes live, and the reports that record it.

- `evaluation.evaluate`: `run_evaluation(config, EvaluateOptions(...)) -> report folder`, and the
  command line (`python -m evaluation --config ...`).
- Evaluators, one small class per aspect (`dialog`, `nlu`, `retrieval`, `efficiency`): each is built
  from its data and called with the thing to evaluate; the call returns a dict of metrics and,
  given an output folder, writes a CSV. `run()` returns the full `EvalResult`.
- `evaluation.report`: report.json / report.md, comparisons, `latest_report_dir`, `load_report`;
  `evaluation.plots`: the PNGs.

Names are re-exported lazily, so `import evaluation.report` (the operator console's Model tab) does not load
sklearn or the assistant.
"""
from __future__ import annotations

import importlib
from typing import Any

import core  # noqa: F401  (thread settings before torch or faiss load)

_EXPORTS = {
    "EvalResult": "evaluation.base", "Evaluator": "evaluation.base",
    "Dialog": "evaluation.dialog", "Turn": "evaluation.dialog", "DialogEvaluator": "evaluation.dialog",
    "load_dialogs": "evaluation.dialog",
    "EfficiencyEvaluator": "evaluation.efficiency", "EfficiencyInputs": "evaluation.efficiency",
    "NLUEvaluator": "evaluation.nlu", "FrozenEmbeddingCVEvaluator": "evaluation.nlu", "IntentSet": "evaluation.nlu",
    "load_intent_data": "evaluation.nlu", "read_intents": "evaluation.nlu",
    "FaqRetrievalEvaluator": "evaluation.retrieval", "ProductRetrievalEvaluator": "evaluation.retrieval",
    "EvaluateOptions": "evaluation.evaluate", "run_evaluation": "evaluation.evaluate",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'evaluation' has no attribute {name!r}")
