"""Evaluators: one small class per aspect (dialogs, NLU, retrieval, efficiency).

Each is built from its data and called with the thing to evaluate; the call returns a dict of
metrics and, given an output folder, writes a CSV. `run()` returns the full `EvalResult`.
`python -m training.evaluate` runs them all and writes the report.
"""
from training.evaluation.base import EvalResult, Evaluator
from training.evaluation.dialog import Dialog, DialogEvaluator, Turn, load_dialogs
from training.evaluation.efficiency import EfficiencyEvaluator, EfficiencyInputs
from training.evaluation.nlu import FrozenEmbeddingCVEvaluator, IntentSet, NLUEvaluator, load_intent_data
from training.evaluation.retrieval import FaqRetrievalEvaluator, ProductRetrievalEvaluator

__all__ = ["EvalResult", "Evaluator", "Dialog", "Turn", "DialogEvaluator", "load_dialogs", "EfficiencyEvaluator",
           "EfficiencyInputs", "NLUEvaluator", "FrozenEmbeddingCVEvaluator", "IntentSet", "load_intent_data",
           "FaqRetrievalEvaluator", "ProductRetrievalEvaluator"]
