"""Explanations of the chosen intent: latency and faithfulness of occlusion and integrated gradients.

    python benchmarks/explain_bench.py --config configs/demo.yaml [--ig-steps 16] [--limit N]

Messages: the held-out FAQ paraphrases (data.faq_heldout) and the intents' validation split (the one the
served model's training held out). This is evaluation, not tuning: nothing is fitted or chosen on them.
For each message with at least 4 words, and each method:
- latency: the time to attribute it (occlusion: one batch through the SERVED model, ONNX or torch;
  integrated gradients: captum on the torch student, `--ig-steps` steps);
- faithfulness: the served model's probability of the chosen intent drops more when the method's top-3
  words are removed than when 3 random words are (the mean drop over 5 random draws). The share of
  messages where it does is the method's faithfulness (goal: >= 80 %).
Prints a table and writes benchmarks/results/explain_bench.json. Needs the built artifacts
(`python -m training.pipeline --config configs/demo.yaml`).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.config import shown_path  # noqa: E402
from core.errors import AttendantError  # noqa: E402

RANDOM_DRAWS = 5
MIN_WORDS = 4


def message_set(config, model) -> list[tuple[str, str]]:
    from core.jsonl import read_jsonl
    from runtime.folder import read_validation_split

    out = []
    if config.data.faq_heldout is not None:
        out += [("faq_heldout", str(r["text"])) for r in read_jsonl(config.data.faq_heldout)]
    out += [("intents_validation", r["text"]) for r in (read_validation_split(model.name_or_path) or [])]
    return out


def faithfulness(nlu, words: list[str], intent: str, top: list[int], rng: np.random.Generator) -> dict:
    from evaluation.explain import predict_full

    keep = lambda drop: " ".join(w for i, w in enumerate(words) if i not in drop)  # noqa: E731
    randoms = [set(rng.choice(len(words), size=3, replace=False).tolist()) for _ in range(RANDOM_DRAWS)]
    probs, _ = predict_full(nlu, [" ".join(words), keep(set(top[:3]))] + [keep(r) for r in randoms])
    j = list(nlu.labels).index(intent)
    p0, p_top, p_rand = float(probs[0, j]), float(probs[1, j]), float(probs[2:, j].mean())
    return {"drop_top3": p0 - p_top, "drop_random3": p0 - p_rand, "faithful": (p0 - p_top) > (p0 - p_rand)}


def whole_explanations(config, texts: list[str]) -> dict:
    """explain_turn on turns the served assistant answered (a throwaway store): what the console waits for."""
    import tempfile

    from evaluation.drift import build_reference
    from evaluation.explain import explain_turn
    from service.assembly import build_assistant, open_store

    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(config, Path(tmp) / "store.sqlite")
        assistant = build_assistant(config, store=store)
        for i, text in enumerate(texts):
            assistant.respond(f"bench-{i}", text)
        t0 = time.perf_counter()
        reference = build_reference(assistant.nlu, config.data.intents, assistant.model_version)
        reference_ms = (time.perf_counter() - t0) * 1000
        turns = store.turns()
        explain_turn(turns[0], assistant, reference)          # warm-up
        lat = []
        for turn in turns:
            t0 = time.perf_counter()
            explain_turn(turn, assistant, reference)
            lat.append((time.perf_counter() - t0) * 1000)
        store.close()
    return {"turns": len(lat), "p50_ms": float(np.percentile(lat, 50)), "p95_ms": float(np.percentile(lat, 95)),
            "reference_ms": reference_ms}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=None, help="deployment config (default: configs/demo.yaml)")
    parser.add_argument("--ig-steps", type=int, default=16, help="integrated-gradients steps (default 16)")
    parser.add_argument("--limit", type=int, default=None, help="at most this many messages (default: all)")
    parser.add_argument("--no-ig", action="store_true", help="measure occlusion only")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "explain_bench.json"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        from core.config import load_config
        from evaluation.explain import IntegratedGradients, load_torch_student, occlusion, words
        from runtime.loading import load_support_model
        from service.nlu import ModelNLU

        config = load_config(args.config)
        served_dir = config.layout.served_model_dir()
        if served_dir is None:
            raise AttendantError(f"no trained model for {config.name}: build it with "
                                 f"`python -m training.pipeline --config {config.path}`")
        nlu = ModelNLU(load_support_model(served_dir))
        student = None if args.no_ig else load_torch_student(config)
        methods = {"occlusion (served model)": lambda t, i: occlusion(nlu, t, i)}
        if student is not None:
            ig = IntegratedGradients(student, n_steps=args.ig_steps)
            methods[f"integrated gradients (torch student, {args.ig_steps} steps)"] = lambda t, i: ig(t, i)
        messages = [(s, t) for s, t in message_set(config, nlu.model) if len(words(t)) >= MIN_WORDS][:args.limit]
        if not messages:
            raise AttendantError("no messages to explain: set data.faq_heldout or rebuild the model with its "
                                 "validation split")
        from evaluation.explain import predict_full

        # The intent the served model chooses for each message: what both methods explain.
        probs, _ = predict_full(nlu, [t for _, t in messages])
        chosen = [nlu.labels[int(j)] for j in probs.argmax(axis=1)]
        for method in methods.values():          # warm-up: first calls load kernels and caches
            method(messages[0][1], chosen[0])
        rows = {}
        for name, method in methods.items():
            rng = np.random.default_rng(0)
            lat, per_source = [], {}
            for (source, text), intent in zip(messages, chosen):
                t0 = time.perf_counter()
                a = method(text, intent)
                lat.append((time.perf_counter() - t0) * 1000)
                f = faithfulness(nlu, a.words, intent, a.top(3), rng)
                per_source.setdefault(source, []).append(f["faithful"])
            all_ok = [x for v in per_source.values() for x in v]
            rows[name] = {"messages": len(lat), "latency_p50_ms": float(np.percentile(lat, 50)),
                          "latency_p95_ms": float(np.percentile(lat, 95)),
                          "faithful_share": float(np.mean(all_ok)),
                          "faithful_by_source": {k: float(np.mean(v)) for k, v in per_source.items()}}
        full = whole_explanations(config, [t for _, t in messages][:60])
    except AttendantError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{'method':<52} {'msgs':>5} {'p50 ms':>8} {'p95 ms':>8} {'faithful':>9}")
    for name, r in rows.items():
        print(f"{name:<52} {r['messages']:>5} {r['latency_p50_ms']:>8.1f} {r['latency_p95_ms']:>8.1f} "
              f"{r['faithful_share']:>9.1%}")
    print(f"\nwhole explanation of a stored turn (explain_turn: occlusion + nearest examples + FAQ/OOS/rule), "
          f"{full['turns']} turns: p50 {full['p50_ms']:.1f} ms, p95 {full['p95_ms']:.1f} ms; "
          f"reference (training examples, once per model version): {full['reference_ms']:.0f} ms")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"config": shown_path(config.path), "min_words": MIN_WORDS, "random_draws": RANDOM_DRAWS,
                               "methods": rows, "explain_turn": full}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
