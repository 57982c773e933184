"""Compress the distilled student into the model the app serves: ONNX Runtime, int8 by default.

    python -m training.compress --config configs/demo.yaml [--model DIR] [--output-dir DIR] [--format onnx-int8]

Steps: export the fp32 student (encoder + mean pooling + normalisation + intent head) to one ONNX
graph; fuse it with ONNX Runtime's transformer optimizer (attention, LayerNorm, GELU); quantise
the weights to int8 (dynamic quantisation: weights int8 ahead of time, activations per call),
per output channel, the word-embedding table included, the intent head kept in fp32; check the
result against the fp32 student on a fixed sample and fall back to the fp32 graph when the
agreement is below `min_agreement`. The folder is written atomically (`<artifacts>/served/`)
and loads through `runtime.model.load_support_model` like any other model folder.

Why this default (benchmarks/distill_bench.py, BANKING77 test, 3-layer student, one run): ONNX
Runtime int8 per channel kept the fp32 student's accuracy (93.34 vs 93.31) at a quarter of its
size (18.2 vs 70.4 MB) and was the fastest at batch 1 (p50 3.6 ms vs 16.5 ms torch fp32 and
5.9 ms ONNX fp32, 1 thread); per-tensor int8 (92.92) and torch dynamic int8 (92.99, 54 MB) lost
0.3-0.4 points; leaving the embedding table fp32 (93.47) triples the size: the table is two
thirds of a 3-layer MiniLM's weights.

Settings: the config's `compression:` section (`core.config.CompressionSettings`, all optional).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import tempfile
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from core.cli import add_config_arguments, config_from_args, run_cli, setup_logging
from core.config import COMPRESSION_FORMATS as FORMATS
from core.config import CompressionSettings
from core.errors import ArtifactError, ConfigError

logger = logging.getLogger("training.compress")

# Model types ONNX Runtime's transformer optimizer fuses with its BERT rules.
_BERT_LIKE = {"bert", "roberta", "xlm-roberta", "distilbert", "electra", "camembert", "mpnet", "ernie"}


# ---------------------------------------------------------------------- export, fuse, quantise

@contextmanager
def _quiet() -> Iterator[None]:
    # The exporter and the quantizer warn about tracing and pre-processing on every call: noise here.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


def export_onnx(model: Any, path: Path, opset: int = 17) -> Path:
    """One ONNX graph: (input_ids, attention_mask) -> (logits before temperature, L2-normalised embeddings)."""
    import copy

    import torch
    from torch import nn

    model = copy.deepcopy(model).cpu().eval()
    # Eager attention exports as plain MatMul/Softmax, which ONNX Runtime fuses into its Attention kernel.
    if hasattr(model.encoder, "set_attn_implementation"):
        try:
            model.encoder.set_attn_implementation("eager")
        except (ValueError, AttributeError, TypeError):
            model.encoder.config._attn_implementation = "eager"
    else:
        model.encoder.config._attn_implementation = "eager"

    class Graph(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            out = self.inner(input_ids=input_ids, attention_mask=attention_mask)
            return out.logits, out.embeddings

    enc = model.tokenizer(["a sample message for the export", "hi"], padding=True, return_tensors="pt")
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
            "logits": {0: "batch"}, "embeddings": {0: "batch"}}
    with _quiet(), torch.inference_mode():
        torch.onnx.export(Graph(model), (enc["input_ids"], enc["attention_mask"]), str(path),
                          input_names=["input_ids", "attention_mask"], output_names=["logits", "embeddings"],
                          dynamic_axes=axes, opset_version=opset, do_constant_folding=True, dynamo=False)
    return path


def optimize_onnx(src: Path, dst: Path, encoder_config: Any) -> bool:
    """ONNX Runtime's transformer fusions, for BERT-like encoders; False (and `src` copied) otherwise."""
    model_type = str(getattr(encoder_config, "model_type", ""))
    if model_type in _BERT_LIKE:
        try:
            from onnxruntime.transformers.optimizer import optimize_model

            with _quiet():
                opt = optimize_model(str(src), model_type="bert",
                                     num_heads=int(getattr(encoder_config, "num_attention_heads", 0) or 0),
                                     hidden_size=int(getattr(encoder_config, "hidden_size", 0) or 0))
                opt.save_model_to_file(str(dst))
            fused = {k: v for k, v in opt.get_fused_operator_statistics().items() if v}
            logger.info("ONNX Runtime fusions: %s", ", ".join(f"{k} x{v}" for k, v in fused.items()) or "none")
            return True
        except Exception as exc:  # the optimizer is best effort: an unfused graph is still correct
            logger.warning("ONNX Runtime transformer optimizer skipped (%s: %s)", type(exc).__name__, exc)
    shutil.copyfile(src, dst)
    return False


def quantize_onnx(src: Path, dst: Path, settings: CompressionSettings) -> list[str]:
    """Dynamic int8 quantisation of the weights; returns the nodes kept in fp32."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(src), load_external_data=False).graph
    excluded = [n.name for n in graph.node if any(part in n.name for part in settings.exclude)]
    op_types = ["MatMul", "Attention"]
    if settings.quantize_embeddings:
        op_types += ["Gather", "EmbedLayerNormalization"]
    with _quiet():
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=settings.per_channel,
                         op_types_to_quantize=op_types, nodes_to_exclude=excluded,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    return excluded


def torch_dynamic_int8(model: Any) -> Any:
    """torch's dynamic int8 of every Linear layer (a measured alternative; not a served format)."""
    import copy

    import torch

    with _quiet():
        from torch.ao.quantization import quantize_dynamic

        q = copy.deepcopy(model).cpu().eval()
        q.encoder = quantize_dynamic(q.encoder, {torch.nn.Linear}, dtype=torch.qint8)
        q.intent_head = copy.deepcopy(model.intent_head).cpu()
    return q


def agreement(reference: tuple[np.ndarray, np.ndarray], other: tuple[np.ndarray, np.ndarray]) -> dict[str, float]:
    """How close another variant's (logits, embeddings) are to the reference's."""
    ref_logits, ref_emb = reference
    logits, emb = other
    cos = (ref_emb * emb).sum(-1) / (np.linalg.norm(ref_emb, axis=-1) * np.linalg.norm(emb, axis=-1) + 1e-12)
    return {"intent_agreement": float((ref_logits.argmax(-1) == logits.argmax(-1)).mean()),
            "embedding_cosine_mean": float(cos.mean()), "embedding_cosine_min": float(cos.min()),
            "max_abs_logit_diff": float(np.abs(ref_logits - logits).max()), "n": int(len(ref_logits))}


def compress_model(model_dir: str | Path, output_dir: str | Path, settings: CompressionSettings | None = None,
                   check_texts: Sequence[str] = (), *, config_path: str | Path | None = None) -> dict[str, Any]:
    """Write the served folder for the fp32 model in `model_dir`; returns a report (sizes, check, choice)."""
    from core.atomic import replace_dir, share_like_umask, temp_dir_beside
    from runtime.embedder import model_fingerprint
    from runtime.folder import (
        FORMAT_VERSION,
        HEAD_FILE,
        LABELS_FILE,
        META_FILE,
        VALIDATION_FILE,
        read_model_meta,
    )
    from runtime.model import SupportModel
    from runtime.onnx_model import ONNX_FILE, RUNTIME, OnnxSupportModel

    settings = settings or CompressionSettings()
    model_dir, output_dir = Path(model_dir).resolve(), Path(output_dir).resolve()
    if model_dir == output_dir:
        raise ConfigError(f"--output-dir {output_dir} is the source model's folder; write the served model elsewhere")
    source_meta = read_model_meta(model_dir, config_path=config_path)
    if source_meta.get("runtime", "torch") != "torch":
        raise ArtifactError(f"{model_dir} is already compressed ({source_meta.get('runtime')}); compress the fp32 "
                            "student (<artifacts>/student) instead")
    t_start = time.perf_counter()
    model = SupportModel.from_pretrained(model_dir, config_path=config_path)
    texts = _check_sample(check_texts, settings.check_samples)
    reference = model.predict_logits(texts)

    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir_beside(output_dir)
    try:
        with tempfile.TemporaryDirectory(prefix="attendant-compress-") as work_str:
            work = Path(work_str)
            t0 = time.perf_counter()
            export_onnx(model, work / "fp32.onnx", settings.opset)
            optimized = False
            if settings.optimize:
                optimized = optimize_onnx(work / "fp32.onnx", work / "fp32-opt.onnx", model.encoder.config)
            else:
                shutil.copyfile(work / "fp32.onnx", work / "fp32-opt.onnx")
            sizes = {"fp32_onnx_bytes": (work / "fp32-opt.onnx").stat().st_size}
            logger.info("exported %s to ONNX in %.1f s%s", model_dir.name, time.perf_counter() - t0,
                        " (fused)" if optimized else "")
            chosen, excluded, checks, reason = work / "fp32-opt.onnx", [], {}, "format onnx-fp32"
            precision = "fp32"
            if settings.format == "onnx-int8":
                t0 = time.perf_counter()
                excluded = quantize_onnx(work / "fp32-opt.onnx", work / "int8.onnx", settings)
                sizes["int8_onnx_bytes"] = (work / "int8.onnx").stat().st_size
                logger.info("quantised to int8 in %.1f s (%s, embeddings %s, %d node(s) kept fp32)",
                            time.perf_counter() - t0, "per channel" if settings.per_channel else "per tensor",
                            "int8" if settings.quantize_embeddings else "fp32", len(excluded))
                checks["int8"] = agreement(reference, _onnx_outputs(work / "int8.onnx", model.tokenizer, texts,
                                                                      model.max_length))
                if checks["int8"]["intent_agreement"] >= settings.min_agreement:
                    chosen, precision, reason = work / "int8.onnx", "int8", "int8 agrees with fp32 above min_agreement"
                else:
                    reason = (f"int8 agreed with fp32 on {checks['int8']['intent_agreement']:.3f} of the check sample, "
                              f"below min_agreement {settings.min_agreement}: serving the fp32 ONNX graph")
                    logger.warning("%s", reason)
            shutil.copyfile(chosen, tmp / ONNX_FILE)
        model.tokenizer.save_pretrained(tmp)
        shutil.copyfile(model_dir / "config.json", tmp / "config.json")
        shutil.copyfile(model_dir / HEAD_FILE, tmp / HEAD_FILE)
        shutil.copyfile(model_dir / LABELS_FILE, tmp / LABELS_FILE)
        if (model_dir / VALIDATION_FILE).is_file():  # the split calibration uses travels with the model
            shutil.copyfile(model_dir / VALIDATION_FILE, tmp / VALIDATION_FILE)
        fingerprint = model_fingerprint(tmp)
        compression = {
            "format": settings.format, "precision": precision, "reason": reason,
            "per_channel": settings.per_channel, "quantize_embeddings": settings.quantize_embeddings,
            "optimized": bool(optimized), "excluded_nodes": excluded, "opset": settings.opset,
            "threads": settings.threads, "sizes": sizes, "checks": checks,
            "source_bytes": _folder_bytes(model_dir),
        }
        meta = {
            "format_version": FORMAT_VERSION,
            "runtime": RUNTIME,
            "temperature": float(source_meta.get("temperature", 1.0)),
            "pooling": "mean",
            "head_input": "l2_normalized_embedding",
            "max_length": int(source_meta.get("max_length", model.max_length)),
            "base_encoder": source_meta.get("base_encoder"),
            "n_labels": len(model.labels),
            "dim": model.dim,
            "fingerprint": fingerprint,
            "source": {"dir": str(model_dir), "fingerprint": source_meta.get("fingerprint")},
            "compression": compression,
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "training": source_meta.get("training") or {},
        }
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
        # The folder as it will be served, checked once more before it replaces the old one.
        served = OnnxSupportModel(tmp, threads=settings.threads or None)
        checks["served"] = agreement(reference, served.predict_logits(texts))
        meta["compression"]["checks"] = checks
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
        share_like_umask(tmp)
        replace_dir(tmp, output_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    report = {"output_dir": str(output_dir), "source": str(model_dir), "fingerprint": fingerprint,
              "precision": precision, "bytes": _folder_bytes(output_dir), "seconds": round(time.perf_counter() - t_start, 1),
              **{k: v for k, v in compression.items() if k not in ("excluded_nodes",)}}
    logger.info("served model written to %s: %s, %.1f MB (fp32 student %.1f MB); agreement with fp32 %.4f, "
                "embedding cosine %.4f", output_dir, precision, report["bytes"] / 1e6, compression["source_bytes"] / 1e6,
                checks["served"]["intent_agreement"], checks["served"]["embedding_cosine_mean"])
    return report


def _onnx_outputs(path: Path, tokenizer: Any, texts: Sequence[str], max_length: int) -> tuple[np.ndarray, np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    logits, embs = [], []
    for start in range(0, len(texts), 64):
        enc = tokenizer(list(texts[start:start + 64]), padding=True, truncation=True, max_length=max_length,
                        return_tensors="np")
        lo, em = session.run(None, {n: enc[n].astype(np.int64) for n in names})
        logits.append(lo)
        embs.append(em)
    return np.concatenate(logits), np.concatenate(embs)


def _check_sample(texts: Sequence[str], n: int) -> list[str]:
    texts = [str(t) for t in texts if str(t).strip()]
    if not texts:
        texts = ["hello", "where is my order", "i want a refund", "can i return this item", "thanks, bye"]
    if len(texts) > n:  # every k-th text: deterministic and spread over all intents of a sorted file
        step = len(texts) / n
        texts = [texts[int(i * step)] for i in range(n)]
    return texts


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def read_texts(path: str | Path) -> list[str]:
    """The `text` of every line of an intents JSONL file (for the check sample)."""
    from core.jsonl import read_jsonl

    return [str(r["text"]) for r in read_jsonl(path, ("text",), "intent example")]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.compress",
        description="Export the distilled student to ONNX Runtime (int8 by default) as the model the app serves.")
    add_config_arguments(parser)
    parser.add_argument("--model", default=None, help="fp32 model folder to compress (default: <artifacts_dir>/student)")
    parser.add_argument("--output-dir", default=None, help="served folder to write (default: <artifacts_dir>/served)")
    parser.add_argument("--format", choices=FORMATS, default=None, help="override compression.format")
    parser.add_argument("--check-file", default=None,
                        help="intents JSONL whose texts check the compressed model against fp32 (default: data.intents)")
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    config = config_from_args(args)
    settings = config.compression
    if args.format:
        settings = dataclasses.replace(settings, format=args.format)
    model_dir = Path(args.model or config.layout.student)
    if not (model_dir / "attendant.json").is_file():
        raise ArtifactError(f"no fp32 student at {model_dir}; distil one with "
                            f"`accelerate launch -m training.distill --config {config.path}` (or pass --model DIR)")
    check = read_texts(args.check_file or config.data.intents)
    report = compress_model(model_dir, args.output_dir or config.layout.served, settings, check,
                            config_path=config.path)
    served = report["checks"].get("served", {})
    print(f"served model: {report['output_dir']} ({report['precision']}, {report['bytes'] / 1e6:.1f} MB, "
          f"from {report['source_bytes'] / 1e6:.1f} MB); agreement with fp32 {served.get('intent_agreement', 0):.4f}, "
          f"embedding cosine {served.get('embedding_cosine_mean', 0):.4f} on {served.get('n', 0)} texts")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
