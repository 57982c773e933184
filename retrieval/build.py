"""Build the FAQ and product indexes and the FAQ threshold for one config.

    python -m retrieval.build --config configs/demo.yaml [--encoder PATH_OR_ID]

Writes `<artifacts>/indexes/faq/`, `<artifacts>/indexes/products/` and
`<artifacts>/indexes/calibration.json`, each atomically, with the encoder the app serves:
the trained model when one has been built for the config (served/ > student/ > teacher/),
else `encoder.name` from the config. Re-run it after changing the FAQ, the catalogue or the model.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from retrieval.faq import FaqIndex, calibrate_faq_threshold
from retrieval.recommend import Recommender
from service.cli import run_cli, setup_logging
from service.config import Config, load_config
from service.errors import ArtifactError, DataError

if TYPE_CHECKING:
    from retrieval.embedder import Embedder

logger = logging.getLogger(__name__)

CALIBRATION_FILE = "calibration.json"


def build_command(config: Config) -> str:
    return f"python -m retrieval.build --config {config.path}"


def read_jsonl(path: str | Path, required: Sequence[str] = (), what: str = "record") -> list[dict]:
    """JSON Lines -> list of dicts; a bad line is a one-line DataError naming file and line."""
    path = Path(path)
    rows = []
    try:
        with path.open(encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}:{n}: not valid JSON ({exc.msg})") from None
                if not isinstance(row, dict):
                    raise DataError(f"{path}:{n}: expected a JSON object per line")
                missing = [k for k in required if k not in row]
                if missing:
                    raise DataError(f"{path}:{n}: {what} is missing {', '.join(missing)}")
                rows.append(row)
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    return rows


def _unique(rows: list[dict], path: Path, what: str) -> list[dict]:
    seen: set[str] = set()
    for r in rows:
        if str(r["id"]) in seen:
            raise DataError(f"{path}: duplicate {what} id {r['id']!r}")
        seen.add(str(r["id"]))
    return rows


def default_embedder(config: Config, encoder: str | None = None) -> "Embedder":
    """The encoder the app serves for this config, unless `encoder` names another one."""
    from retrieval.embedder import Embedder

    kwargs = dict(max_length=config.encoder.max_length, batch_size=config.encoder.batch_size)
    if encoder:
        return Embedder(encoder, **kwargs)
    from service.assembly import load_nlu, served_model_dir

    if served_model_dir(config) is not None:
        # the trained (possibly compressed) model loads through training.model, as the app does
        return load_nlu(config).embedder
    return Embedder(config.encoder.name, **kwargs)


def _write_json_atomic(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # mkstemp makes it private
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def build_indexes(config: Config, encoder: str | None = None, embedder: "Embedder | None" = None,
                  show_progress: bool = True) -> dict[str, Any]:
    """Build both indexes and the calibration for `config`; returns a summary dict."""
    t0 = time.perf_counter()
    faqs = _unique(read_jsonl(config.data.faq, ("id", "question", "answer"), "FAQ entry"), config.data.faq, "FAQ")
    products = _unique(read_jsonl(config.data.products, ("id", "title", "category", "price"), "product"),
                       config.data.products, "product")
    intents = read_jsonl(config.data.intents, ("text", "intent"), "intent example")
    if not faqs:
        raise DataError(f"{config.data.faq}: no FAQ entries")
    if not products:
        raise DataError(f"{config.data.products}: no products")
    embedder = embedder or default_embedder(config, encoder)
    exact_max = config.retrieval.exact_max

    logger.info("indexing %d FAQs and %d products with %s", len(faqs), len(products), embedder.name)
    faq_index = FaqIndex.build(faqs, embedder, exact_max=exact_max, show_progress=show_progress)
    recommender = Recommender.build(products, embedder, exact_max=exact_max, show_progress=show_progress)
    calibration = calibrate_faq_threshold(faq_index, embedder, intents)

    index_dir = config.index_dir
    faq_index.save(index_dir / "faq")
    recommender.save(index_dir / "products")
    cal = {
        "faq_threshold": calibration.threshold,
        "encoder_fingerprint": embedder.fingerprint,
        "encoder": embedder.name,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "faq_vectors": len(faq_index.index),
        "products": len(recommender.index),
        "stats": calibration.to_dict(),
    }
    _write_json_atomic(index_dir / CALIBRATION_FILE, cal)
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
        "seconds": round(time.perf_counter() - t0, 1),
    }
    logger.info("indexes written to %s in %.1fs", index_dir, summary["seconds"])
    return summary


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
    """
    hint = build_command(config)
    fp = embedder.fingerprint
    faq_index = FaqIndex.load(config.index_dir / "faq", fp, hint=hint)
    recommender = Recommender.load(config.index_dir / "products", fp, embedder=embedder, hint=hint)
    calibration = load_calibration(config, fp)
    return faq_index, recommender, calibration


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m retrieval.build",
        description="Build the FAQ and product FAISS indexes and calibrate the FAQ answer threshold.")
    parser.add_argument("--config", default=None, help="deployment config (default: configs/demo.yaml)")
    parser.add_argument("--encoder", default=None,
                        help="encoder folder or Hugging Face id (default: the trained model if built, else encoder.name)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    config = load_config(args.config)
    s = build_indexes(config, encoder=args.encoder, show_progress=not args.no_progress)
    print(f"built {s['faqs']} FAQs ({s['faq_vectors']} vectors, {s['faq_kind']}) and {s['products']} products "
          f"({s['product_kind']}) with {s['encoder']} in {s['seconds']}s; FAQ threshold {s['faq_threshold']:.3f} "
          f"(balanced accuracy {s['faq_threshold_balanced_accuracy']:.3f}) -> {s['index_dir']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
