"""Distil the teacher into a smaller student `SupportModel`, with Accelerate.

    accelerate launch -m training.distill --config configs/demo.yaml
    accelerate launch --multi_gpu --num_processes 2 -m training.distill --config configs/demo.yaml   # 2 CPU processes
    python -m training.distill --config configs/demo.yaml --max-steps 20 --resume

The student is, by default, the teacher with half its layers, spread from the first to the last
(6 -> 0,2,5: best on BANKING77 validation against every-other, bottom and top halves, see the
README), its embeddings and its intent head;
`distill.student_encoder` names any smaller Hugging Face encoder instead. It learns from:

- the teacher's soft intent distribution, KL at temperature `temperature` (x T^2, Hinton et al.);
- the hard labels of the labelled rows, cross-entropy (`ce_weight`);
- the teacher's pooled sentence embeddings, 1 - cosine (`embedding_weight`), so the student's
  embeddings stay in the teacher's space and keep serving FAQ and product retrieval. With a
  student of another width, the pairwise similarity matrices are matched instead.

Distillation texts: the training intents (labelled), the FAQ questions and paraphrases and
`augment_copies` perturbed copies of each training text (unlabelled: the teacher labels them).
The teacher runs once over all of them (sharded over the processes, cached in the work dir).
The rest follows `training.train`: AdamW with warm-up and decay, checkpoints, `--resume`,
TensorBoard logs, early stopping on validation macro-F1, temperature calibrated on validation,
`save_pretrained` into `--output-dir` (default `<artifacts>/student`).
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import math
import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import yaml

from service.cli import run_cli, setup_logging
from service.config import load_config
from service.errors import ArtifactError, ConfigError, DataError

logger = logging.getLogger("training.distill")

# Sub-sections of `distill:` owned by other modules (compression, the pipeline), not by DistillSettings.
SUBSECTIONS = ("compression", "pipeline")
LAYER_SELECTIONS = ("spread", "alternate", "bottom", "top")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="accelerate launch -m training.distill",
        description="Distil the teacher SupportModel into a smaller student (soft intents + hard labels + "
                    "embedding alignment), on one or many processes.")
    parser.add_argument("--config", default=None, help="deployment config (default: configs/demo.yaml)")
    parser.add_argument("--teacher", default=None, help="teacher model folder (default: <artifacts_dir>/teacher)")
    parser.add_argument("--output-dir", default=None, help="student folder to write (default: <artifacts_dir>/student)")
    parser.add_argument("--work-dir", default=None,
                        help="checkpoints, teacher outputs, TensorBoard logs, results.json "
                             "(default: <artifacts_dir>/runs/<output name>)")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="stop after N optimizer steps (overrides distill.epochs; the schedule spans N steps)")
    parser.add_argument("--resume", nargs="?", const="latest", default=None, metavar="CKPT",
                        help="continue from a checkpoint folder, or the latest one in the work dir")
    parser.add_argument("--train-file", default=None,
                        help="intents to distil on instead of the teacher's training intents (data.intents)")
    parser.add_argument("--validation-file", default=None,
                        help="validation intents (default: the teacher's stratified split of the training intents)")
    parser.add_argument("--test-file", default=None,
                        help="intents scored once at the end and reported in results.json (never used for choices)")
    parser.add_argument("--no-faq", action="store_true", help="do not add the FAQ questions/paraphrases as texts")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a key of the config's distill section, e.g. --set student_layers=4")
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    return parser.parse_args(argv)


@dataclass
class DistillSettings:
    """The `distill:` section of a config (every key optional; `compression:`/`pipeline:` live beside them)."""
    student_layers: int | None = None     # default: half the teacher's layers (rounded up)
    layer_selection: str = "spread"       # spread | alternate | bottom | top | explicit "0,2,4"
    student_encoder: str | None = None    # any Hugging Face encoder instead of the teacher's own layers
    max_length: int | None = None         # default: the teacher's
    epochs: float = 4.0
    batch_size: int = 32                  # per process
    eval_batch_size: int = 128
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-4
    head_learning_rate: float = 1e-3
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    scheduler: str = "linear"
    max_grad_norm: float = 1.0
    temperature: float = 2.0              # softening of both distributions in the KL term
    kd_weight: float = 1.0
    ce_weight: float = 0.5                # hard labels (labelled rows only)
    label_smoothing: float = 0.0
    embedding_weight: float = 1.0         # 1 - cos(student, teacher) of the pooled embeddings
    include_faq: bool = True              # FAQ questions and paraphrases as unlabelled texts
    augment_copies: int = 1               # perturbed copies of each training text (unlabelled)
    augment_prob: float = 0.15            # per-word chance of a perturbation in a copy
    freeze_embeddings: bool = True        # word embeddings: most of the parameters, few of them seen in small data
    ema_decay: float = 0.0                # 0 = no moving average
    val_fraction: float | None = None     # default: the teacher's
    min_examples_per_intent: int = 2
    eval_every: int = 0                   # optimizer steps between evaluations (0 = every epoch)
    early_stopping_patience: int = 0      # evaluations without a better macro-F1 before stopping (0 = never)
    checkpoint_every: int = 0             # optimizer steps between checkpoints (0 = at each evaluation)
    keep_checkpoints: int = 2
    log_every: int = 10
    length_grouping: bool = True
    seed: int | None = None               # default: the teacher's
    mixed_precision: str = "auto"         # auto (bf16 on a GPU that has it, else fp32), no, fp16, bf16
    num_threads: int = 0                  # CPU threads per process (0 = cores / local processes)
    calibrate_temperature: bool = True
    tensorboard: bool = True

    @classmethod
    def from_section(cls, section: dict[str, Any] | None, overrides: Sequence[str] = (),
                     where: str = "config") -> "DistillSettings":
        values = {k: v for k, v in dict(section or {}).items() if k not in SUBSECTIONS}
        for item in overrides:
            key, sep, raw = item.partition("=")
            if not sep:
                raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set student_layers=4")
            values[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) in 'distill': {', '.join(unknown)} "
                              f"(known: {', '.join(sorted(list(known) + list(SUBSECTIONS)))})")
        for key, value in values.items():
            values[key] = coerce_setting("distill", key, value, str(known[key].type), where)
        settings = cls(**values)
        settings.validate(where)
        return settings

    def validate(self, where: str) -> None:
        def bad(key: str, why: str) -> ConfigError:
            return ConfigError(f"{where}: distill.{key} {why}, got {getattr(self, key)!r}")

        for key in ("batch_size", "eval_batch_size", "gradient_accumulation_steps", "keep_checkpoints", "log_every",
                    "min_examples_per_intent"):
            if getattr(self, key) < 1:
                raise bad(key, "must be at least 1")
        if self.student_layers is not None and self.student_layers < 1:
            raise bad("student_layers", "must be at least 1")
        for key in ("epochs", "learning_rate", "head_learning_rate", "temperature"):
            if not getattr(self, key) > 0:
                raise bad(key, "must be positive")
        for key in ("weight_decay", "kd_weight", "ce_weight", "embedding_weight", "max_grad_norm", "eval_every",
                    "checkpoint_every", "early_stopping_patience", "num_threads", "augment_copies"):
            if getattr(self, key) < 0:
                raise bad(key, "must not be negative")
        if self.kd_weight + self.ce_weight + self.embedding_weight <= 0:
            raise bad("kd_weight", "(with ce_weight and embedding_weight) must leave some loss to train on")
        for key in ("warmup_ratio", "label_smoothing", "ema_decay", "augment_prob"):
            if not 0 <= getattr(self, key) < 1:
                raise bad(key, "must be in [0, 1)")
        if self.val_fraction is not None and not 0 <= self.val_fraction < 1:
            raise bad("val_fraction", "must be in [0, 1)")
        if self.layer_selection not in LAYER_SELECTIONS and not _is_layer_list(self.layer_selection):
            raise bad("layer_selection", f"must be one of {', '.join(LAYER_SELECTIONS)} or a list like '0,2,4'")
        if self.mixed_precision not in ("auto", "no", "fp16", "bf16"):
            raise bad("mixed_precision", "must be one of auto, no, fp16, bf16")
        schedulers = ("linear", "cosine", "constant", "constant_with_warmup", "polynomial", "cosine_with_restarts")
        if self.scheduler not in schedulers:
            raise bad("scheduler", f"must be one of {', '.join(schedulers)}")
        if self.max_length is not None and self.max_length < 8:
            raise bad("max_length", "must be at least 8")


def coerce_setting(section: str, key: str, value: Any, type_name: str, where: str) -> Any:
    """A YAML value checked against a dataclass field's type name; ConfigError naming section.key."""
    if value is None:
        if "None" in type_name:
            return None
        raise ConfigError(f"{where}: {section}.{key} must not be empty")
    kind = type_name.split()[0].split("|")[0].strip()
    try:
        if kind == "bool":
            if isinstance(value, bool):
                return value
        elif kind == "int":
            if not isinstance(value, bool) and float(value) == int(float(value)):
                return int(float(value))
        elif kind == "float":
            if not isinstance(value, bool):
                return float(value)
        elif kind == "str":
            if isinstance(value, (list, tuple)) and key == "layer_selection":
                return ",".join(str(int(v)) for v in value)
            if isinstance(value, str):
                return value
        else:
            return value
    except (TypeError, ValueError):
        pass
    raise ConfigError(f"{where}: {section}.{key} must be {'a number' if kind in ('int', 'float') else 'a ' + kind}, "
                      f"got {value!r}")


def _is_layer_list(text: str) -> bool:
    parts = [p.strip() for p in str(text).split(",")]
    return bool(parts) and all(p.isdigit() for p in parts)


def select_layers(n_teacher: int, n_student: int, how: str) -> list[int]:
    """Which teacher layers initialise the student's.

    alternate: every other layer from the top down (6 -> 1,3,5: the top layer, which the head was
    trained on, is always kept); spread: evenly from the first to the last (6 -> 0,2,5); bottom /
    top: the lowest / highest n; or an explicit list "0,2,4".
    """
    if _is_layer_list(how):
        layers = [int(p) for p in how.split(",")]
        if any(i >= n_teacher for i in layers) or len(set(layers)) != len(layers):
            raise ConfigError(f"distill.layer_selection {how!r}: the teacher has layers 0..{n_teacher - 1}, "
                              "each listed once")
        return sorted(layers)
    if n_student > n_teacher:
        raise ConfigError(f"distill.student_layers {n_student} is more than the teacher's {n_teacher} layers")
    if how == "bottom":
        return list(range(n_student))
    if how == "top":
        return list(range(n_teacher - n_student, n_teacher))
    if how == "spread":
        if n_student == 1:
            return [n_teacher - 1]
        return sorted({int(round(i * (n_teacher - 1) / (n_student - 1))) for i in range(n_student)})
    step = n_teacher / n_student
    return sorted({n_teacher - 1 - int(i * step) for i in range(n_student)})


def encoder_layers(encoder: Any) -> tuple[Any, str]:
    """The ModuleList of transformer blocks of a Hugging Face encoder, and its attribute path."""
    from torch import nn

    for path in ("encoder.layer", "transformer.layer", "encoder.layers", "layers", "layer"):
        obj = encoder
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, nn.ModuleList) and len(obj) > 0:
            return obj, path
    raise ConfigError(f"cannot find the transformer layers of {type(encoder).__name__} to build a student from; "
                      "set distill.student_encoder to a smaller Hugging Face encoder instead")


def shrink_encoder(encoder: Any, keep: Sequence[int]) -> None:
    """Keep only the listed transformer blocks (in order), in place; the config follows."""
    from torch import nn

    layers, path = encoder_layers(encoder)
    parent = encoder
    for part in path.split(".")[:-1]:
        parent = getattr(parent, part)
    setattr(parent, path.split(".")[-1], nn.ModuleList([layers[i] for i in keep]))
    cfg = encoder.config
    for attr in ("num_hidden_layers", "n_layers", "num_layers"):
        if hasattr(cfg, attr):
            setattr(cfg, attr, len(keep))
    # Per-layer lists in newer configs (attention types) must shrink with the layers.
    for attr in ("layer_types",):
        value = getattr(cfg, attr, None)
        if isinstance(value, list) and len(value) == len(layers):
            setattr(cfg, attr, [value[i] for i in keep])
    # Blocks that know their own index (caches) get their new one.
    for new, block in enumerate(getattr(parent, path.split(".")[-1])):
        for module in block.modules():
            if hasattr(module, "layer_idx") and isinstance(module.layer_idx, int):
                module.layer_idx = new


def build_student(teacher: Any, settings: DistillSettings) -> tuple[Any, dict[str, Any]]:
    """The student model and a description of how it was made (for the metadata)."""
    import copy

    import torch

    from training.model import SupportModel

    max_length = settings.max_length or teacher.max_length
    if settings.student_encoder:
        student = SupportModel.from_encoder(settings.student_encoder, teacher.labels, max_length=max_length)
        if student.dim == teacher.dim:
            with torch.no_grad():
                student.intent_head.load_state_dict(teacher.intent_head.state_dict())
        return student, {"init": "pretrained", "student_encoder": settings.student_encoder, "layers": None}
    _, path = encoder_layers(teacher.encoder)
    n_teacher = len(encoder_layers(teacher.encoder)[0])
    n_student = settings.student_layers or max(1, math.ceil(n_teacher / 2))
    keep = select_layers(n_teacher, n_student, settings.layer_selection)
    student = copy.deepcopy(teacher)
    shrink_encoder(student.encoder, keep)
    student.max_length = max_length
    student.metadata = {}
    student.fingerprint = ""
    student.temperature.fill_(1.0)
    return student, {"init": "teacher_layers", "teacher_layers": n_teacher, "layers": keep,
                     "layer_selection": settings.layer_selection}


# ---------------------------------------------------------------------- distillation texts

def augment(text: str, rng: random.Random, prob: float, vocabulary: Sequence[str]) -> str:
    """A perturbed copy of `text`: each word may be dropped, swapped with its neighbour, or replaced
    by a random corpus word. The teacher labels the copy, so it needs no gold label: it only has to
    be near the data, which teaches the student the teacher's behaviour around each example."""
    words = text.split()
    if len(words) < 2:
        return text
    out: list[str] = []
    i = 0
    while i < len(words):
        r = rng.random()
        if r < prob / 3:
            i += 1
            continue                                   # drop
        if r < 2 * prob / 3 and i + 1 < len(words):
            out += [words[i + 1], words[i]]            # swap with the next word
            i += 2
            continue
        if r < prob and vocabulary:
            out.append(rng.choice(vocabulary))         # replace
        else:
            out.append(words[i])
        i += 1
    return " ".join(out) if out else text


@dataclass
class DistillTexts:
    texts: list[str]
    labels: list[int]        # gold class id, -1 for unlabelled texts
    kinds: list[str]         # "train" | "faq" | "augmented" | "validation" | "test"

    def indices(self, *kinds: str) -> list[int]:
        return [i for i, k in enumerate(self.kinds) if k in kinds]

    def key(self, *parts: Any) -> str:
        h = hashlib.sha256()
        for t in self.texts:
            h.update(t.encode("utf-8"))
            h.update(b"\0")
        for p in parts:
            h.update(repr(p).encode())
        return h.hexdigest()[:20]


def distillation_texts(train: Sequence[str], train_labels: Sequence[int], validation: Sequence[str],
                       validation_labels: Sequence[int], faq_texts: Sequence[str] = (), *, augment_copies: int = 0,
                       augment_prob: float = 0.15, seed: int = 42, test: Sequence[str] = (),
                       test_labels: Sequence[int] = ()) -> DistillTexts:
    """All texts the teacher labels: training intents, FAQ texts, augmented copies, validation, test."""
    rng = random.Random(seed)
    texts, labels, kinds = list(train), list(train_labels), ["train"] * len(train)
    seen = {t.strip().lower() for t in texts} | {t.strip().lower() for t in validation} | \
        {t.strip().lower() for t in test}
    for t in faq_texts:
        k = t.strip().lower()
        if k and k not in seen:   # never a validation/test text, never twice
            seen.add(k)
            texts.append(t)
            labels.append(-1)
            kinds.append("faq")
    vocabulary = sorted({w for t in train for w in t.split()})
    for copy_no in range(augment_copies):
        for t in train:
            a = augment(t, rng, augment_prob, vocabulary)
            k = a.strip().lower()
            if k and k not in seen:
                seen.add(k)
                texts.append(a)
                labels.append(-1)
                kinds.append("augmented")
    texts += list(validation)
    labels += list(validation_labels)
    kinds += ["validation"] * len(validation)
    texts += list(test)
    labels += list(test_labels)
    kinds += ["test"] * len(test)
    return DistillTexts(texts, labels, kinds)


class DistillCollator:
    """Pads token ids per batch; passes on the gold label (-1 if none) and the row of the teacher outputs."""

    def __init__(self, tokenizer: Any, pad_to_multiple_of: int | None = None) -> None:
        self.tokenizer = tokenizer
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        tokens = [{k: f[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in f} for f in features]
        batch = dict(self.tokenizer.pad(tokens, return_tensors="pt", pad_to_multiple_of=self.pad_to_multiple_of))
        batch["labels"] = torch.tensor([int(f["labels"]) for f in features], dtype=torch.long)
        batch["row"] = torch.tensor([int(f["row"]) for f in features], dtype=torch.long)
        return batch


class SimilarityMatrixLoss:
    """MSE between the in-batch cosine-similarity matrices of student and teacher embeddings:
    an embedding alignment that needs no common width (a student encoder of another size)."""

    def __call__(self, student: Any, teacher: Any) -> Any:
        import torch.nn.functional as F

        s = F.normalize(student, dim=-1)
        t = F.normalize(teacher, dim=-1)
        return F.mse_loss(s @ s.T, t @ t.T)


# ---------------------------------------------------------------------- main

def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    config = load_config(args.config)
    settings = DistillSettings.from_section(config.distill, args.set, where=str(config.path))
    teacher_dir = Path(args.teacher or config.artifacts_dir / "teacher").resolve()
    output_dir = Path(args.output_dir or config.artifacts_dir / "student").resolve()
    work_dir = Path(args.work_dir or config.artifacts_dir / "runs" / output_dir.name).resolve()
    fix_hint = f"accelerate launch -m training.distill --config {config.path}"
    if not (teacher_dir / "attendant.json").is_file():
        raise ArtifactError(f"no teacher model at {teacher_dir}; train one with "
                            f"`accelerate launch -m training.train --config {config.path}` (or pass --teacher DIR)")
    if teacher_dir == output_dir:
        raise ConfigError(f"--output-dir {output_dir} is the teacher's folder; write the student elsewhere")

    # Heavy imports after the cheap checks, so `--help` and config errors answer at once.
    import numpy as np
    import torch
    import datasets
    import transformers
    from accelerate import Accelerator
    from accelerate.logging import get_logger
    from accelerate.utils import ProjectConfiguration, gather_object, set_seed
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm
    from transformers import get_scheduler

    from training.data import LengthGroupedBatchSampler, load_faq, load_intent_splits, load_intents
    from training.losses import EmbeddingDistillationLoss, IntentClassificationLoss, SoftTargetDistillationLoss
    from training.metrics import classification_metrics
    from training.model import SupportModel, fit_temperature
    from training.train import WeightAverager, latest_checkpoint, parameter_checksum

    # ------------------------------------------------------------------ accelerator
    use_cuda = torch.cuda.is_available()
    precision = settings.mixed_precision
    if precision == "auto":
        precision = "bf16" if use_cuda and torch.cuda.is_bf16_supported() else "no"
    work_dir.mkdir(parents=True, exist_ok=True)
    accelerator = Accelerator(
        cpu=not use_cuda,
        mixed_precision=precision,
        gradient_accumulation_steps=settings.gradient_accumulation_steps,
        log_with="tensorboard" if settings.tensorboard else None,
        project_config=ProjectConfiguration(project_dir=str(work_dir), logging_dir=str(work_dir / "tensorboard")),
    )
    setup_logging(args.verbose)
    if not args.verbose:
        logging.getLogger("accelerate.checkpointing").setLevel(logging.WARNING)
        logging.getLogger("accelerate.accelerator").setLevel(logging.WARNING)
    log = get_logger("training.distill")
    if accelerator.is_local_main_process:
        datasets.utils.logging.set_verbosity_warning()
        transformers.utils.logging.set_verbosity_warning()
    else:
        datasets.utils.logging.set_verbosity_error()
        transformers.utils.logging.set_verbosity_error()
        datasets.disable_progress_bars()
    if not use_cuda:
        # N processes on one CPU: split the cores, or they fight over them. OMP_NUM_THREADS is not
        # consulted (as in training.train): `accelerate launch` sets it to 1, idling the other cores.
        local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", accelerator.num_processes))
        torch.set_num_threads(settings.num_threads or max(1, (os.cpu_count() or 1) // max(1, local_processes)))
    log.info("%s; %d torch thread(s) per process", str(accelerator.state).replace("\n", " ").strip(),
             torch.get_num_threads())

    # ------------------------------------------------------------------ teacher, data
    teacher = SupportModel.from_pretrained(teacher_dir, config_path=config.path)
    teacher_settings = (teacher.metadata or {}).get("settings") or {}
    seed = settings.seed if settings.seed is not None else int(teacher_settings.get("seed", 42))
    val_fraction = settings.val_fraction if settings.val_fraction is not None \
        else float(teacher_settings.get("val_fraction", 0.1))
    set_seed(seed)
    train_source = args.train_file or teacher.metadata.get("intents_file") or config.data.intents
    if not Path(str(train_source)).exists():
        train_source = config.data.intents
    # The teacher's own split (same file, seed and fraction): its validation rows stay unseen here too.
    splits = load_intent_splits(train_source, validation_source=args.validation_file, val_fraction=val_fraction,
                                seed=seed, min_examples=settings.min_examples_per_intent)
    if splits.labels != teacher.labels:
        raise DataError(f"the intents in {train_source} ({len(splits.labels)}) are not the teacher's "
                        f"({len(teacher.labels)}, {teacher_dir}); retrain the teacher with "
                        f"`accelerate launch -m training.train --config {config.path}`")
    label2id = splits.label2id
    test_texts: list[str] = []
    test_labels: list[int] = []
    if args.test_file:
        test_set = load_intents(args.test_file, known_labels=splits.labels)
        test_texts, test_labels = list(test_set["text"]), [label2id[i] for i in test_set["intent"]]
    faq_texts: list[str] = []
    if settings.include_faq and not args.no_faq and config.data.faq and Path(config.data.faq).is_file():
        for rec in load_faq(config.data.faq):
            faq_texts += [rec.question, *rec.paraphrases]
    corpus = distillation_texts(
        list(splits.train["text"]), [label2id[i] for i in splits.train["intent"]],
        list(splits.validation["text"]), [label2id[i] for i in splits.validation["intent"]], faq_texts,
        augment_copies=settings.augment_copies, augment_prob=settings.augment_prob, seed=seed,
        test=test_texts, test_labels=test_labels)

    # ------------------------------------------------------------------ teacher outputs, once
    t0 = time.perf_counter()
    teacher.to(accelerator.device)
    cache = work_dir / f"teacher-outputs-{corpus.key(teacher.fingerprint, teacher.max_length)}.npz"
    if cache.is_file():
        with np.load(cache) as z:
            teacher_logits, teacher_emb = z["logits"], z["embeddings"]
        log.info("teacher outputs for %d texts read from %s", len(corpus.texts), cache)
    else:
        # Each process labels its shard; all of them get the whole table.
        with accelerator.split_between_processes(list(range(len(corpus.texts)))) as shard:
            logits, emb = teacher.predict_logits([corpus.texts[i] for i in shard], batch_size=settings.eval_batch_size)
        parts = gather_object([(shard, logits, emb)]) if accelerator.num_processes > 1 else [(shard, logits, emb)]
        teacher_logits = np.zeros((len(corpus.texts), len(teacher.labels)), np.float32)
        teacher_emb = np.zeros((len(corpus.texts), teacher.dim), np.float32)
        for idx, lo, em in parts:
            teacher_logits[idx], teacher_emb[idx] = lo, em
        if accelerator.is_main_process:
            tmp = cache.with_name(f".{cache.stem}.{os.getpid()}.npz")
            np.savez(tmp, logits=teacher_logits, embeddings=teacher_emb)
            os.replace(tmp, cache)
        log.info("teacher outputs for %d texts in %.1f s", len(corpus.texts), time.perf_counter() - t0)
    teacher_seconds = time.perf_counter() - t0
    teacher_argmax = teacher_logits.argmax(-1)

    # ------------------------------------------------------------------ student
    student, how = build_student(teacher, settings)
    del teacher
    model = student
    tokenizer = model.tokenizer
    max_length = model.max_length
    log.info("student: %s", how)
    emb_loss = EmbeddingDistillationLoss() if model.dim == teacher_emb.shape[1] else SimilarityMatrixLoss()

    def dataset_of(indices: list[int]) -> Any:
        ds = datasets.Dataset.from_dict({"text": [corpus.texts[i] for i in indices],
                                         "labels": [corpus.labels[i] for i in indices], "row": indices})

        def encode(batch: dict[str, list]) -> dict[str, list]:
            enc = tokenizer(batch["text"], truncation=True, max_length=max_length)
            enc["length"] = [len(x) for x in enc["input_ids"]]
            return dict(enc)

        return ds.map(encode, batched=True, remove_columns=["text"], desc="tokenising")

    with accelerator.main_process_first():
        train_ds = dataset_of(corpus.indices("train", "faq", "augmented"))
        val_ds = dataset_of(corpus.indices("validation"))
        test_ds = dataset_of(corpus.indices("test")) if test_texts else None
    collator = DistillCollator(tokenizer, pad_to_multiple_of=8 if precision != "no" else None)
    columns = [c for c in ("input_ids", "attention_mask", "token_type_ids", "labels", "row") if c in train_ds.column_names]
    # On N processes, Accelerate's batch-sampler shard takes the first short batch for the end of the
    # epoch; the length-grouped sampler shuffles the short batch anywhere, so keep full batches only.
    train_sampler = LengthGroupedBatchSampler(list(train_ds["length"]), settings.batch_size, seed=seed,
                                              window=64 if settings.length_grouping else 1,
                                              drop_last=accelerator.num_processes > 1
                                              and len(train_ds) >= settings.batch_size * accelerator.num_processes)
    train_loader = DataLoader(train_ds.select_columns(columns), batch_sampler=train_sampler, collate_fn=collator,
                              generator=torch.Generator().manual_seed(seed))

    def eval_loader_for(ds: Any) -> Any:
        by_length = np.argsort(np.asarray(list(ds["length"])), kind="stable")
        return DataLoader(ds.select(by_length).select_columns(columns), batch_size=settings.eval_batch_size,
                          collate_fn=collator)

    val_loader = eval_loader_for(val_ds) if len(val_ds) else None

    # ------------------------------------------------------------------ optimizer
    if settings.freeze_embeddings:
        model.encoder.get_input_embeddings().weight.requires_grad_(False)
    for name, p in model.encoder.named_parameters():
        if name.startswith("pooler."):  # not used by mean pooling (and would stall DDP)
            p.requires_grad_(False)
    groups: dict[tuple[float, float], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = name.endswith("bias") or "LayerNorm" in name or "layer_norm" in name or "norm.weight" in name
        lr = settings.head_learning_rate if name.startswith("intent_head.") else settings.learning_rate
        groups.setdefault((lr, 0.0 if no_decay else settings.weight_decay), []).append(p)
    optimizer = torch.optim.AdamW([{"params": ps, "lr": lr, "weight_decay": wd} for (lr, wd), ps in groups.items()],
                                  lr=settings.learning_rate)

    prepared = accelerator.prepare(model, optimizer, train_loader, *([val_loader] if val_loader is not None else []))
    model, optimizer, train_loader = prepared[:3]
    if val_loader is not None:
        val_loader = prepared[3]
    # Sized after prepare: on N processes each one sees 1/N of the batches.
    steps_per_epoch = math.ceil(len(train_loader) / settings.gradient_accumulation_steps)
    max_steps = args.max_steps or max(1, math.ceil(settings.epochs * steps_per_epoch))
    num_epochs = math.ceil(max_steps / steps_per_epoch)
    lr_scheduler = get_scheduler(settings.scheduler, optimizer=optimizer,
                                 num_warmup_steps=int(settings.warmup_ratio * max_steps), num_training_steps=max_steps)
    accelerator.register_for_checkpointing(lr_scheduler)
    averager = WeightAverager(accelerator.unwrap_model(model), settings.ema_decay)
    accelerator.register_for_checkpointing(averager)
    eval_every = settings.eval_every or steps_per_epoch
    checkpoint_every = settings.checkpoint_every or eval_every
    if settings.tensorboard:
        accelerator.init_trackers(output_dir.name, config={k: v for k, v in dataclasses.asdict(settings).items()
                                                           if isinstance(v, (int, float, str, bool))})

    n_kinds = {k: corpus.kinds.count(k) for k in ("train", "faq", "augmented", "validation", "test")}
    effective_batch = settings.batch_size * accelerator.num_processes * settings.gradient_accumulation_steps
    log.info("***** distillation *****")
    log.info("  texts: %d labelled, %d FAQ, %d augmented (train); %d validation, %d test; %d intents",
             n_kinds["train"], n_kinds["faq"], n_kinds["augmented"], n_kinds["validation"], n_kinds["test"],
             len(splits.labels))
    log.info("  loss: %.2f x KL(T=%.1f) + %.2f x CE + %.2f x embedding alignment (%s)", settings.kd_weight,
             settings.temperature, settings.ce_weight, settings.embedding_weight, type(emb_loss).__name__)
    log.info("  batch %d per process x %d processes x %d accumulation = effective batch %d", settings.batch_size,
             accelerator.num_processes, settings.gradient_accumulation_steps, effective_batch)
    log.info("  optimizer steps: %d (%d per epoch, %d epoch(s)); warm-up %d", max_steps, steps_per_epoch, num_epochs,
             int(settings.warmup_ratio * max_steps))

    # ------------------------------------------------------------------ resume
    state = DistillState()
    checkpoints_dir = work_dir / "checkpoints"
    if args.resume:
        ckpt = latest_checkpoint(checkpoints_dir) if args.resume == "latest" else Path(args.resume)
        if ckpt is None or not (ckpt / "trainer_state.json").is_file():
            raise DataError(f"no checkpoint to resume from in {checkpoints_dir if args.resume == 'latest' else ckpt}; "
                            f"start without --resume: {fix_hint}")
        accelerator.load_state(str(ckpt))
        state = DistillState(**json.loads((ckpt / "trainer_state.json").read_text()))
        log.info("resumed from %s at step %d", ckpt, state.completed_steps)
    resume_batches = state.completed_steps * settings.gradient_accumulation_steps
    starting_epoch = resume_batches // len(train_loader)
    resume_batches -= starting_epoch * len(train_loader)

    # ------------------------------------------------------------------ train
    kd_loss = SoftTargetDistillationLoss(settings.temperature)
    ce_loss = IntentClassificationLoss(settings.label_smoothing)
    t_logits = torch.from_numpy(teacher_logits)
    t_emb = torch.from_numpy(teacher_emb)
    progress = tqdm(range(max_steps), initial=state.completed_steps, desc="distilling",
                    disable=not accelerator.is_local_main_process)
    step_losses: list[float] = []
    parts_log: dict[str, list[float]] = {"kd": [], "ce": [], "embedding": []}
    examples_seen = 0
    train_seconds = 0.0
    stop = state.completed_steps >= max_steps

    def evaluate(loader: Any) -> tuple[dict[str, float], Any, Any]:
        model.eval()
        all_logits, all_labels, all_rows = [], [], []
        with torch.inference_mode():
            for batch in loader:
                labels, rows = batch.pop("labels"), batch.pop("row")
                out = model(**batch)
                logits, labels, rows = accelerator.gather_for_metrics((out.logits.float(), labels, rows))
                all_logits.append(logits.cpu())
                all_labels.append(labels.cpu())
                all_rows.append(rows.cpu())
        model.train()
        logits, labels, rows = torch.cat(all_logits), torch.cat(all_labels), torch.cat(all_rows)
        pred = logits.argmax(-1).numpy()
        metrics = classification_metrics(pred, labels.numpy(), len(splits.labels))
        metrics["teacher_agreement"] = float((pred == teacher_argmax[rows.numpy()]).mean())
        return metrics, logits, labels

    def save_checkpoint() -> None:
        ckpt = checkpoints_dir / f"step_{state.completed_steps}"
        accelerator.save_state(str(ckpt))
        if accelerator.is_main_process:
            (ckpt / "trainer_state.json").write_text(json.dumps(dataclasses.asdict(state)))
            for old in sorted(checkpoints_dir.glob("step_*"), key=_step_of)[:-settings.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
        accelerator.wait_for_everyone()

    model.train()
    for epoch in range(starting_epoch, num_epochs):
        if stop:
            break
        train_loader.set_epoch(epoch)
        train_sampler.set_epoch(epoch)
        active = accelerator.skip_first_batches(train_loader, resume_batches) \
            if epoch == starting_epoch and resume_batches else train_loader
        t_epoch = time.perf_counter()
        for batch in active:
            with accelerator.accumulate(model):
                labels, rows = batch.pop("labels"), batch.pop("row")
                rows_cpu = rows.cpu()
                target_logits = t_logits[rows_cpu].to(accelerator.device)
                target_emb = t_emb[rows_cpu].to(accelerator.device)
                out = model(**batch)
                kd = kd_loss(out.logits, target_logits)
                labelled = labels >= 0
                # Every term is computed on every step (zero weight or not), so DDP sees one graph.
                ce = ce_loss(out.logits[labelled], labels[labelled]) if bool(labelled.any()) \
                    else out.logits.sum() * 0.0
                al = emb_loss(out.embeddings, target_emb)
                loss = settings.kd_weight * kd + settings.ce_weight * ce + settings.embedding_weight * al
                accelerator.backward(loss)
                if accelerator.sync_gradients and settings.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
                optimizer.step()
                if accelerator.sync_gradients:
                    lr_scheduler.step()
                optimizer.zero_grad()
            examples_seen += int(labels.size(0))
            if not accelerator.sync_gradients:
                continue
            state.completed_steps += 1
            step_losses.append(float(loss.detach()))
            for k, v in (("kd", kd), ("ce", ce), ("embedding", al)):
                parts_log[k].append(float(v.detach()))
            averager.update(accelerator.unwrap_model(model))
            progress.update(1)
            if state.completed_steps % settings.log_every == 0 or state.completed_steps == max_steps:
                mean_loss = accelerator.reduce(torch.tensor(np.mean(step_losses[-settings.log_every:]),
                                                            device=accelerator.device), "mean").item()
                progress.set_postfix(loss=f"{mean_loss:.4f}")
                if settings.tensorboard:
                    accelerator.log({"train/loss": mean_loss, "train/lr": lr_scheduler.get_last_lr()[0],
                                     **{f"train/{k}": float(np.mean(v[-settings.log_every:]))
                                        for k, v in parts_log.items()}}, step=state.completed_steps)
            done = state.completed_steps >= max_steps
            if val_loader is not None and (state.completed_steps % eval_every == 0 or done):
                train_seconds += time.perf_counter() - t_epoch
                metrics, _, _ = evaluate(val_loader)
                log.info("step %d: validation accuracy %.4f, macro-F1 %.4f, agreement with the teacher %.4f",
                         state.completed_steps, metrics["accuracy"], metrics["macro_f1"], metrics["teacher_agreement"])
                if settings.tensorboard:
                    accelerator.log({f"validation/{k}": v for k, v in metrics.items()}, step=state.completed_steps)
                if metrics["macro_f1"] > state.best_f1:
                    state.best_f1, state.best_step, state.evals_since_best = metrics["macro_f1"], state.completed_steps, 0
                    averager.keep_best(accelerator.unwrap_model(model))
                else:
                    state.evals_since_best += 1
                    if settings.early_stopping_patience and state.evals_since_best >= settings.early_stopping_patience:
                        log.info("early stopping: no better validation macro-F1 in %d evaluations", state.evals_since_best)
                        done = True
                t_epoch = time.perf_counter()
            if state.completed_steps % checkpoint_every == 0 and not done:
                train_seconds += time.perf_counter() - t_epoch
                save_checkpoint()
                t_epoch = time.perf_counter()
            if done:
                stop = True
                break
        train_seconds += time.perf_counter() - t_epoch
    progress.close()

    # ------------------------------------------------------------------ choose weights, calibrate, save
    accelerator.wait_for_everyone()
    unwrapped = accelerator.unwrap_model(model)
    chosen, val_metrics, val_logits, val_labels = "final", {}, None, None
    if val_loader is not None:
        candidates: dict[str, Any] = {"final": None}
        if averager.enabled:
            candidates["ema"] = averager.ema
        if averager.best is not None and state.best_step != state.completed_steps:
            candidates["best"] = averager.best
        current = averager.snapshot(unwrapped)
        scores = {}
        for name, weights in candidates.items():
            averager.load(unwrapped, weights if weights is not None else current)
            metrics, logits, labels = evaluate(val_loader)
            scores[name] = (metrics["macro_f1"], metrics["accuracy"], metrics, logits, labels)
        chosen = max(scores, key=lambda k: scores[k][:2])
        _, _, val_metrics, val_logits, val_labels = scores[chosen]
        averager.load(unwrapped, candidates[chosen] if candidates[chosen] is not None else current)
    temperature = 1.0
    if settings.calibrate_temperature and val_logits is not None:
        if len(val_logits) >= 2 * len(splits.labels) and val_metrics["accuracy"] < 1.0:
            temperature = fit_temperature(val_logits, val_labels)
        else:
            log.warning("validation set too small or without errors (%d examples): temperature left at 1",
                        len(val_logits))
    unwrapped.temperature.fill_(temperature)
    log.info("kept the %s weights; temperature %.3f", chosen, temperature)

    test_metrics = None
    if test_ds is not None:
        test_metrics, _, _ = evaluate(accelerator.prepare_data_loader(eval_loader_for(test_ds)))
        log.info("test accuracy %.4f, macro-F1 %.4f, agreement with the teacher %.4f (%d examples)",
                 test_metrics["accuracy"], test_metrics["macro_f1"], test_metrics["teacher_agreement"], len(test_ds))

    total_examples = int(accelerator.reduce(torch.tensor(examples_seen, device=accelerator.device), "sum").item())
    n_params = sum(p.numel() for p in unwrapped.parameters())
    meta = {
        "kind": "student",
        "teacher": str(teacher_dir),
        "teacher_fingerprint": _teacher_fingerprint(teacher_dir),
        "student": how,
        "embedding_alignment": "cosine" if isinstance(emb_loss, EmbeddingDistillationLoss) else "similarity_matrix",
        "parameters": n_params,
        "steps": state.completed_steps,
        "epochs": round(state.completed_steps / steps_per_epoch, 3),
        "chosen_weights": chosen,
        "validation": val_metrics,
        "num_processes": accelerator.num_processes,
        "effective_batch_size": effective_batch,
        "texts": n_kinds,
        "settings": dataclasses.asdict(settings),
        "seed": seed,
        "val_fraction": val_fraction,
        "intents_file": str(train_source),
    }
    rank_stats = {
        "rank": accelerator.process_index,
        "num_processes": accelerator.num_processes,
        "steps": state.completed_steps,
        "losses": step_losses,
        "loss_parts": parts_log,
        "examples": examples_seen,
        "param_checksum": parameter_checksum(unwrapped),
        "threads": torch.get_num_threads(),
    }
    ranks_dir = work_dir / "ranks"
    ranks_dir.mkdir(parents=True, exist_ok=True)
    (ranks_dir / f"rank{accelerator.process_index}.json").write_text(json.dumps(rank_stats))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        unwrapped.metadata = {}
        unwrapped.save_pretrained(output_dir, training=meta)
        results = {
            **meta,
            "output_dir": str(output_dir),
            "fingerprint": unwrapped.fingerprint,
            "temperature": temperature,
            "test": test_metrics,
            "teacher_seconds": round(teacher_seconds, 2),
            "train_seconds": round(train_seconds, 2),
            "train_examples_seen": total_examples,
            "train_examples_per_second": round(total_examples / train_seconds, 2) if train_seconds else None,
            "threads_per_process": torch.get_num_threads(),
        }
        (work_dir / "results.json").write_text(json.dumps(results, indent=2, default=str))
        log.info("saved the student to %s (%d parameters, %d steps, %.0f s of training)", output_dir, n_params,
                 state.completed_steps, train_seconds)
    accelerator.wait_for_everyone()
    if settings.tensorboard:
        accelerator.end_training()
    return 0


@dataclass
class DistillState:
    """What a checkpoint needs beyond the weights, optimizer, scheduler and RNG states."""
    completed_steps: int = 0
    best_f1: float = -1.0
    best_step: int = 0
    evals_since_best: int = 0


def _teacher_fingerprint(teacher_dir: Path) -> str:
    from training.model import read_model_meta

    return str(read_model_meta(teacher_dir).get("fingerprint", ""))


def _step_of(path: Path) -> int:
    try:
        return int(path.name.split("_", 1)[1])
    except (IndexError, ValueError):
        return -1


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
