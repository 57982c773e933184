"""Build the FAQ and product indexes and the FAQ threshold for one config.

    python -m retrieval.build --config configs/demo.yaml [--encoder PATH_OR_ID]

Writes `<artifacts>/indexes/faq/` (and its BM25 side `faq_lexical/`), the FAQ fusion model
`faq_fusion.json`, `<artifacts>/indexes/products/` and `<artifacts>/indexes/calibration.json`
(the dense and the fused answer thresholds), each atomically, with the encoder the app serves:
the trained model when one has been built for the config (served/ > student/ > teacher/),
else `encoder.name` from the config. Re-run it after changing the FAQ, the catalogue or the model.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from core.atomic import atomic_write_json
from core.cli import add_config_arguments, config_from_args, run_cli, setup_logging
from core.config import Config
from core.datafiles import INDEX_FILES, training_file_hashes
from core.errors import ArtifactError, DataError
from core.jsonl import read_jsonl
from retrieval.faq import FaqIndex, calibrate_faq_threshold
from retrieval.followup import reads_like_follow_up
from retrieval.fusion import FusionModel, calibrate_fused_threshold, train_fusion
from retrieval.recommend import Recommender
from runtime.loading import served_embedder

if TYPE_CHECKING:
    from runtime.embedder import Embedder

logger = logging.getLogger(__name__)

CALIBRATION_FILE = "calibration.json"
FUSION_FILE = "faq_fusion.json"
# The training data with operators' corrections merged in (written by training.feedback, which the
# retrieval layer cannot import): when its FAQ file is there, the index answers the corrected FAQ.
CORRECTED_DATA_DIR = "training_data"


def faq_source(config: Config) -> Path:
    """The FAQ file to index: the pack's, or the pack with operators' corrections (new entries, added
    paraphrases) when `python -m training.feedback prepare` or a training run has written it."""
    corrected = Path(config.artifacts_dir) / CORRECTED_DATA_DIR / "faq.jsonl"
    return corrected if corrected.is_file() else Path(config.data.faq)


def build_command(config: Config) -> str:
    return f"python -m retrieval.build --config {config.path}"


def _unique(rows: list[dict], path: Path, what: str) -> list[dict]:
    seen: set[str] = set()
    for r in rows:
        if str(r["id"]) in seen:
            raise DataError(f"{path}: duplicate {what} id {r['id']!r}")
        seen.add(str(r["id"]))
    return rows


def build_indexes(config: Config, encoder: str | None = None, embedder: "Embedder | None" = None,
                  show_progress: bool = True) -> dict[str, Any]:
    """Build both indexes and the calibration for `config`; returns a summary dict."""
    t0 = time.perf_counter()
    faq_path = faq_source(config)
    faqs = _unique(read_jsonl(faq_path, ("id", "question", "answer"), "FAQ entry"), faq_path, "FAQ")
    products = _unique(read_jsonl(config.data.products, ("id", "title", "category", "price"), "product"),
                       config.data.products, "product")
    intents = read_jsonl(config.data.intents, ("text", "intent"), "intent example")
    if not faqs:
        raise DataError(f"{faq_path}: no FAQ entries")
    if not products:
        raise DataError(f"{config.data.products}: no products")
    embedder = embedder or served_embedder(config, encoder)
    exact_max = config.retrieval.exact_max

    extra = dialog_paraphrases(config)
    if extra:
        faqs = with_paraphrases(faqs, extra)
        logger.info("%d standalone FAQ turns of the training dialogs indexed as paraphrases", len(extra))
    logger.info("indexing %d FAQs and %d products with %s", len(faqs), len(products), embedder.name)
    faq_index = FaqIndex.build(faqs, embedder, exact_max=exact_max, show_progress=show_progress)
    recommender = Recommender.build(products, embedder, exact_max=exact_max, show_progress=show_progress)
    calibration = calibrate_faq_threshold(faq_index, embedder, intents)
    fusion = _train_fusion(config, faq_index, embedder, intents)

    index_dir = config.index_dir
    faq_index.save(index_dir / "faq")
    recommender.save(index_dir / "products")
    if fusion is not None:
        fusion["model"].save(index_dir / FUSION_FILE)
    else:
        (index_dir / FUSION_FILE).unlink(missing_ok=True)   # never leave one from an older build
    cal = {
        "faq_threshold": calibration.threshold,   # on the dense cosine
        "encoder_fingerprint": embedder.fingerprint,
        "encoder": embedder.name,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "data_files": training_file_hashes(config, INDEX_FILES),   # what it was built from (training.pipeline)
        "faq_vectors": len(faq_index.index),
        "products": len(recommender.index),
        "stats": calibration.to_dict(),
    }
    if fusion is not None:
        cal["fusion"] = {"faq_threshold": fusion["calibration"].threshold, "model_id": fusion["model"].model_id,
                         "training": fusion["model"].training, "stats": fusion["calibration"].to_dict()}
    atomic_write_json(index_dir / CALIBRATION_FILE, cal)
    summary = {
        "index_dir": str(index_dir),
        "encoder": embedder.name,
        "encoder_fingerprint": embedder.fingerprint,
        "faqs": len(faq_index),
        "faq_vectors": len(faq_index.index),
        "faq_kind": faq_index.index.kind,
        "products": len(recommender.index),
        "product_kind": recommender.index.kind,
        "faq_threshold": calibration.threshold,
        "faq_threshold_balanced_accuracy": calibration.balanced_accuracy,
        "fusion": None if fusion is None else {"faq_threshold": fusion["calibration"].threshold,
                                               **{k: fusion["model"].training[k] for k in
                                                  ("C", "dense_top1", "cv_fused_top1")}},
        "seconds": round(time.perf_counter() - t0, 1),
    }
    logger.info("indexes written to %s in %.1fs", index_dir, summary["seconds"])
    return summary


def _training_faq_turns(config: Config) -> list[tuple[str, str, bool, str]]:
    """(message, FAQ id, stands alone, data key of its file) of the FAQ turns of the training dialogs
    (`data.train_dialogs` and `data.written_train_dialogs`; none when unset). A turn stands alone
    unless it comes right after an FAQ answer and reads like a follow-up (its words lean on that
    answer). The held-out dialogs are refused: what is learned from must not be what it is judged on."""
    turns = []
    for key, path in config.data.training_dialogs():   # refuses the held-out dialogs and missing files
        for d in read_jsonl(path, ("id", "turns"), "dialog"):
            after_faq = False
            for t in d["turns"]:
                expect = (t.get("expect") or {}) if isinstance(t, dict) else {}
                if expect.get("faq_id") and t.get("user"):
                    alone = not (after_faq and reads_like_follow_up(str(t["user"])))
                    turns.append((str(t["user"]), str(expect["faq_id"]), alone, key))
                after_faq = bool(expect.get("faq_id") or expect.get("faq_ids"))
    return turns


def fusion_messages(config: Config) -> list[tuple[str, str]]:
    """(message, FAQ id) of the FAQ turns of the training dialogs: what the fusion learns from, with the
    index's leave-one-out paraphrases (those indexed as paraphrases, see `dialog_paraphrases`, are
    among the latter)."""
    turns = _training_faq_turns(config)
    indexed = set(_indexed_turns(config, turns))
    return [(text, faq_id) for text, faq_id, _, _ in turns if (text, faq_id) not in indexed]


def dialog_paraphrases(config: Config) -> list[tuple[str, str]]:
    """(message, FAQ id) that join their FAQ entries' paraphrases with `retrieval.dialog_paraphrases`
    (in the index, and in what the teacher and the student learn from): the FAQ turns of the WRITTEN
    training dialogs (customers' own wordings; the generated ones only rewrite the pack's) that stand
    on their own (a follow-up's words fit only after its previous answer, and would draw other
    conversations to the wrong entry)."""
    return _indexed_turns(config, _training_faq_turns(config)) if config.retrieval.dialog_paraphrases else []


def _indexed_turns(config: Config, turns: list[tuple[str, str, bool, str]]) -> list[tuple[str, str]]:
    if not config.retrieval.dialog_paraphrases:
        return []
    return list(dict.fromkeys((text, faq_id) for text, faq_id, alone, key in turns
                              if alone and key == "written_train_dialogs"))


def with_paraphrases(faqs: list[dict], extra: list[tuple[str, str]]) -> list[dict]:
    """The FAQ entries with `extra` (text, FAQ id) added to their paraphrases (unknown ids and
    wordings the entry already has are skipped)."""
    add: dict[str, list[str]] = {}
    for text, faq_id in extra:
        add.setdefault(faq_id, []).append(text)
    out = []
    for f in faqs:
        known = {str(p).strip().lower() for p in [f["question"], *(f.get("paraphrases") or [])]}
        new = [t for t in dict.fromkeys(add.get(str(f["id"]), [])) if t.strip().lower() not in known]
        out.append({**f, "paraphrases": [*(f.get("paraphrases") or []), *new]} if new else f)
    return out


def _train_fusion(config: Config, faq_index: FaqIndex, embedder: "Embedder",
                  intents: list[dict]) -> dict[str, Any] | None:
    """The fusion model and its calibrated threshold, or None (with a warning) when the FAQ is too small
    to learn one from: serving then keeps the dense order. Trained whatever `retrieval.fusion` says, so the
    switch can be flipped without a rebuild."""
    try:
        training = train_fusion(faq_index, faq_index.lexical, embedder, messages=fusion_messages(config),
                                candidates=config.retrieval.fusion_candidates)
        faq_index.fusion = training.model
        try:
            calibration = calibrate_fused_threshold(faq_index, embedder, intents, training.oof_top,
                                                    training.stats["paraphrases"])
        finally:
            faq_index.fusion = None
    except ValueError as exc:
        logger.warning("no FAQ fusion model for %s (%s); FAQ answers will keep the dense order", config.name, exc)
        return None
    return {"model": training.model, "calibration": calibration}


def load_calibration(config: Config, expected_fingerprint: str | None = None) -> dict[str, Any]:
    path = config.index_dir / CALIBRATION_FILE
    hint = build_command(config)
    if not path.is_file():
        raise ArtifactError(f"{path} is missing; build it with: {hint}")
    try:
        cal = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(cal, dict) or not isinstance(cal.get("faq_threshold"), (int, float)):
            raise ValueError("no numeric faq_threshold")
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ArtifactError(f"{path} is corrupt ({str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__}); "
                            f"rebuild it with: {hint}") from None
    if expected_fingerprint is not None and cal.get("encoder_fingerprint") != expected_fingerprint:
        raise ArtifactError(f"{path} was calibrated with a different encoder ({cal.get('encoder')}); rebuild it with: {hint}")
    return cal


def load_indexes(config: Config, embedder: "Embedder") -> tuple[FaqIndex, Recommender, dict[str, Any]]:
    """(FaqIndex, Recommender, calibration) for `config`, all checked against `embedder`.

    Anything missing, corrupt or built by another encoder is an ArtifactError naming the build command.
    With `retrieval.fusion` on, the FAQ index comes with its fusion model and the returned calibration's
    `faq_threshold` is the one calibrated on the fused score (`faq_score` says which score it is for).
    """
    hint = build_command(config)
    fp = embedder.fingerprint
    faq_index = FaqIndex.load(config.index_dir / "faq", fp, hint=hint)
    recommender = Recommender.load(config.index_dir / "products", fp, embedder=embedder, hint=hint)
    calibration = dict(load_calibration(config, fp), faq_score="dense")
    if config.retrieval.fusion:
        _attach_fusion(config, faq_index, calibration, fp, hint)
    return faq_index, recommender, calibration


def _attach_fusion(config: Config, faq_index: FaqIndex, calibration: dict[str, Any], fingerprint: str,
                   hint: str) -> None:
    """Attach the fusion model and switch the calibration to its threshold.

    Indexes built before there was a fusion model (or from an FAQ too small to learn one) have no
    `faq_fusion.json`: they keep serving densely, with their dense threshold, and a warning says how to
    get the fusion; a registered version can be rolled back to without a rebuild. A fusion file that is
    there but corrupt, trained for another encoder, or not the one the calibration was made with is an
    ArtifactError, like any other damaged index file."""
    path = config.index_dir / FUSION_FILE
    fused = calibration.get("fusion")
    if not path.is_file() and not fused:
        logger.warning("%s has no FAQ fusion model (built before fusion, or the FAQ is too small to learn one); "
                       "FAQ answers keep the dense order. Build it with: %s", config.index_dir, hint)
        return
    model = FusionModel.load(path, fingerprint, hint=hint)
    if not isinstance(fused, dict) or fused.get("model_id") != model.model_id \
            or not isinstance(fused.get("faq_threshold"), (int, float)):
        raise ArtifactError(f"{config.index_dir / CALIBRATION_FILE} has no threshold calibrated for the FAQ fusion "
                            f"model {path.name}; rebuild both with: {hint}")
    faq_index.fusion = model
    faq_index.prepare_wordings()
    calibration["faq_threshold"] = float(fused["faq_threshold"])
    calibration["faq_score"] = "fused"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m retrieval.build",
        description="Build the FAQ and product FAISS indexes and calibrate the FAQ answer threshold.")
    parser.add_argument("--encoder", default=None,
                        help="encoder folder or Hugging Face id (default: the trained model if built, else encoder.name)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    config = config_from_args(args)
    s = build_indexes(config, encoder=args.encoder, show_progress=not args.no_progress)
    print(f"built {s['faqs']} FAQs ({s['faq_vectors']} vectors, {s['faq_kind']}) and {s['products']} products "
          f"({s['product_kind']}) with {s['encoder']} in {s['seconds']}s; FAQ threshold {s['faq_threshold']:.3f} "
          f"(balanced accuracy {s['faq_threshold_balanced_accuracy']:.3f}) -> {s['index_dir']}")
    if s["fusion"]:
        f = s["fusion"]
        print(f"FAQ fusion (dense + BM25): cross-validated top-1 {f['dense_top1']:.3f} dense -> "
              f"{f['cv_fused_top1']:.3f} fused; fused threshold {f['faq_threshold']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
