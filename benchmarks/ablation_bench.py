"""Ablation of conversation features on the VALIDATION dialogs (never the held-out ones).

    python benchmarks/ablation_bench.py --config configs/demo.yaml [--dialogs data/demo/val_dialogs.jsonl]
    python benchmarks/ablation_bench.py --config configs/demo.yaml --dialogs data/demo/written_val_dialogs.jsonl \
        --out benchmarks/results/ablation_bench_written.json

Runs the project's dialog evaluator with the served model of the config's artifacts (build them
first: `python -m training.pipeline --config configs/demo.yaml`) once with every feature on and once
with each feature switched off, in one process on the same model, and prints a table (resolution,
turn resolution, action accuracy, FAQ hit@1, product hit) and writes it as JSON to
benchmarks/results/ablation_bench.json. A feature is kept only if switching it off lowers the
validation figures.

Features:
- compare:     "A vs B" / "difference between A and B" answered side by side (retrieval/compare.py)
- superlative: "the cheapest robot vacuum" ordered strictly by the attribute (retrieval/recommend.py)
- context:     follow-ups read together with the previous turn (service/context.py)
- fusion:      FAQ hits re-ranked by the learned dense + BM25 fusion (retrieval/fusion.py); off is
               `--set retrieval.fusion=false`, dense order and the dense threshold
- spelling:    typos corrected before the message is understood (service/spelling.py); off is
               `--set policy.spelling=false`
And one variant that is off by default, measured the other way round:
- learned:     the policy's cut-offs fitted on the training dialogs (`policy.decisions=learned`,
               training/decisions.py; fit them first with `python -m training.decisions`)
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.config import load_config, shown_path  # noqa: E402
from evaluation.dialog import DialogEvaluator  # noqa: E402
from evaluation.evaluate import assistant_factory  # noqa: E402
from service.assembly import load_nlu  # noqa: E402

FEATURES = (None, "compare", "superlative", "context", "fusion", "spelling", "learned")
# Variants made through the config (the assistant is assembled again with these overrides).
CONFIG_VARIANTS = {"fusion": ("without fusion", ["retrieval.fusion=false"]),
                   "spelling": ("without typo correction", ["policy.spelling=false"]),
                   "learned": ("with learned cut-offs", ["policy.decisions=learned"])}
METRICS = ("resolution", "turn_resolution", "action_accuracy", "faq_hit_at_1", "product_hit")


@contextlib.contextmanager
def without(feature: str | None) -> Iterator[None]:
    """Switch one feature off for the duration (None: everything on)."""
    import retrieval.recommend as recommend
    import service.engine as engine

    saved = (recommend.Recommender.comparison, recommend.find_superlative, engine.follow_up_context)
    if feature == "compare":
        recommend.Recommender.comparison = lambda self, text, shown=(): []
    elif feature == "superlative":
        recommend.find_superlative = lambda text: None
    elif feature == "context":
        engine.follow_up_context = lambda history, text: None
    try:
        yield
    finally:
        recommend.Recommender.comparison, recommend.find_superlative, engine.follow_up_context = saved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "demo.yaml"))
    parser.add_argument("--dialogs", default=str(ROOT / "data" / "demo" / "val_dialogs.jsonl"),
                        help="validation dialogs (default: the generated ones)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "ablation_bench.json"))
    args = parser.parse_args(argv)
    if Path(args.dialogs).name in ("dialogs.jsonl", "faq_heldout.jsonl", "shopping_requests.jsonl"):
        parser.error("the held-out dialogs are not for choosing features: use the validation dialogs")
    logging.basicConfig(level=logging.WARNING)
    config = load_config(args.config)
    nlu = load_nlu(config)
    evaluator = DialogEvaluator(args.dialogs)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        make = assistant_factory(config, nlu, Path(tmp))
        for feature in FEATURES:
            factory = make
            name = "all features" if feature is None else f"without {feature}"
            if feature in CONFIG_VARIANTS:
                name, overrides = CONFIG_VARIANTS[feature]
                (Path(tmp) / feature).mkdir()
                factory = assistant_factory(load_config(args.config, overrides), nlu, Path(tmp) / feature)
            with without(feature):
                metrics = evaluator.run(factory).metrics
            rows.append({"run": name,
                         **{k: metrics.get(k) for k in METRICS}, "dialogs": metrics.get("dialogs")})
    print(f"{'run':<24}" + "".join(f"{k:>17}" for k in METRICS))
    for r in rows:
        print(f"{r['run']:<24}" + "".join(f"{r[k]:>17.3f}" if r[k] is not None else f"{'-':>17}" for k in METRICS))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"dialogs": shown_path(args.dialogs), "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
