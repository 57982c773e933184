"""Distil the teacher into a smaller student `SupportModel`, with Accelerate.

    accelerate launch -m training.distill --config configs/demo.yaml
    accelerate launch --multi_gpu --num_processes 2 -m training.distill --config configs/demo.yaml   # 2 CPU processes
    python -m training.distill --config configs/demo.yaml --max-steps 20 --resume

The student is, by default, the teacher with half its layers, spread from the first to the last
(6 -> 0,2,5: best on BANKING77 validation against every-other, bottom and top halves, see the
README), its embeddings and its intent head;
`distill.student_encoder` names any smaller Hugging Face encoder instead (with `student_layers`, cut to
that many of its own layers, chosen by `layer_selection`). It learns from:

- the teacher's soft intent distribution, KL at temperature `temperature` (x T^2, Hinton et al.);
- the hard labels of the labelled rows, cross-entropy (`ce_weight`);
- the teacher's pooled sentence embeddings, 1 - cosine (`embedding_weight`), so the student's
  embeddings stay in the teacher's space and keep serving FAQ and product retrieval. With a
  student of another width, the pairwise similarity matrices are matched instead.

Distillation texts: the training intents (labelled), the FAQ questions and paraphrases and
`augment_copies` perturbed copies of each training text (unlabelled: the teacher labels them).
The teacher runs once over all of them (sharded over the processes, cached in the work dir).
The validation split is the teacher's own (its folder's validation.jsonl), so those rows stay
unseen here too; the student saves the same rows. The rest is `training.loop`, shared with
`training.train`: AdamW with warm-up and decay, checkpoints, `--resume`, TensorBoard logs, early
stopping on validation macro-F1, temperature calibrated on validation, `save_pretrained` into
`--output-dir` (default `<artifacts>/student`). `distill(config, options)` is the function to call.
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from core.cli import add_config_arguments, config_from_args, run_cli
from core.config import Config, DistillSettings, is_layer_list
from core.errors import ArtifactError, ConfigError, DataError
from core.layout import STUDENT
from training.loop import Loop, Objective, RunOptions, Task, add_run_arguments
from training.warm import warm_start

logger = logging.getLogger("training.distill")


@dataclass
class DistillOptions(RunOptions):
    """Options of a distillation run (see `RunOptions`); `teacher`: the teacher's folder."""
    teacher: Path | None = None


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="accelerate launch -m training.distill",
        description="Distil the teacher SupportModel into a smaller student (soft intents + hard labels + "
                    "embedding alignment), on one or many processes.")
    add_config_arguments(parser)
    parser.add_argument("--teacher", default=None, help="teacher model folder (default: <artifacts_dir>/teacher)")
    add_run_arguments(parser, section="distill", default_output=STUDENT)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    distill(config_from_args(args), DistillOptions.from_args(args))
    return 0


def select_layers(n_teacher: int, n_student: int, how: str) -> list[int]:
    """Which teacher layers initialise the student's.

    alternate: every other layer from the top down (6 -> 1,3,5: the top layer, which the head was
    trained on, is always kept); spread: evenly from the first to the last (6 -> 0,2,5); bottom /
    top: the lowest / highest n; or an explicit list "0,2,4".
    """
    if is_layer_list(how):
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

    from runtime.model import SupportModel

    max_length = settings.max_length or teacher.max_length
    if settings.student_encoder:
        student = SupportModel.from_encoder(settings.student_encoder, teacher.labels, max_length=max_length)
        how: dict[str, Any] = {"init": "pretrained", "student_encoder": settings.student_encoder, "layers": None}
        if settings.student_layers:
            # A pretrained student shrunk to `student_layers` of its own layers, chosen as for the teacher's.
            n_encoder = len(encoder_layers(student.encoder)[0])
            keep = select_layers(n_encoder, settings.student_layers, settings.layer_selection)
            shrink_encoder(student.encoder, keep)
            how.update(encoder_layers=n_encoder, layers=keep, layer_selection=settings.layer_selection)
        if student.dim == teacher.dim:
            with torch.no_grad():
                student.intent_head.load_state_dict(teacher.intent_head.state_dict())
        return student, how
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


def warm_student(folder: Path, teacher: Any, config_path: Any) -> Any:
    """The student saved in `folder` to continue distilling from, or None when its intents are no
    longer the teacher's."""
    from runtime.model import SupportModel

    student = SupportModel.from_pretrained(folder, config_path=config_path)
    if student.labels != teacher.labels:
        return None
    student.metadata, student.fingerprint = {}, ""
    student.temperature.fill_(1.0)   # refitted on validation at the end, as for a fresh student
    return student


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


class DistillObjective(Objective):
    """kd_weight x KL(teacher || student) at `temperature` + ce_weight x cross-entropy on the labelled
    rows + embedding_weight x embedding alignment, against the teacher's outputs for each row."""

    def __init__(self, settings: DistillSettings, teacher_logits: Any, teacher_emb: Any, emb_loss: Any) -> None:
        from training.losses import IntentClassificationLoss, SoftTargetDistillationLoss

        self.s = settings
        self.t_logits, self.t_emb = teacher_logits, teacher_emb
        self.kd_loss = SoftTargetDistillationLoss(settings.temperature)
        self.ce_loss = IntentClassificationLoss(settings.label_smoothing)
        self.emb_loss = emb_loss
        self.parts = {}

    def __call__(self, model: Any, batch: dict[str, Any]) -> Any:
        s = self.s
        labels, rows = batch.pop("labels"), batch.pop("row").cpu()
        device = labels.device
        out = model(**batch)
        kd = self.kd_loss(out.logits, self.t_logits[rows].to(device))
        # Every term is computed on every step (zero weight or not), so DDP sees one graph; the
        # labelled rows are averaged over the global batch, not per process.
        ce = self.ce_loss(out.logits, labels, mask=labels >= 0)
        al = self.emb_loss(out.embeddings, self.t_emb[rows].to(device))
        self.parts = {"kd": kd, "ce": ce, "embedding": al}
        return s.kd_weight * kd + s.ce_weight * ce + s.embedding_weight * al


def distill(config: Config, options: DistillOptions | None = None) -> dict[str, Any]:
    """Distil the student for `config` (on however many processes this was launched on); returns
    what results.json holds."""
    options = options or DistillOptions()
    teacher_dir = Path(options.teacher or config.layout.teacher).resolve()
    output_dir, work_dir = options.folders(config.layout.student, config.layout)
    settings, init_dir = warm_start(config.distill, output_dir, Path(config.path).parent)
    fix_hint = f"accelerate launch -m training.distill --config {config.path}"
    if not (teacher_dir / "attendant.json").is_file():
        raise ArtifactError(f"no teacher model at {teacher_dir}; train one with "
                            f"`accelerate launch -m training.train --config {config.path}` (or pass --teacher DIR)")
    if teacher_dir == output_dir:
        raise ConfigError(f"--output-dir {output_dir} is the teacher's folder; write the student elsewhere")
    from runtime.folder import read_model_meta, read_validation_split

    teacher_meta = read_model_meta(teacher_dir, config_path=config.path)
    teacher_training = teacher_meta.get("training") or {}
    teacher_settings = teacher_training.get("settings") or {}
    seed = settings.seed if settings.seed is not None else int(teacher_settings.get("seed", 42))

    # Heavy imports after the cheap checks, so `--help` and config errors answer at once.
    import datasets
    import numpy as np
    import torch
    from accelerate.utils import gather_object

    from runtime.model import SupportModel
    from training.data import (
        LengthGroupedBatchSampler,
        load_faq,
        load_intent_splits,
        load_intents,
        rows_of,
        with_dialog_paraphrases,
    )
    from retrieval.build import faq_source
    from training.dialog_examples import with_dialog_rows
    from training.losses import EmbeddingDistillationLoss

    loop = Loop(settings, options, work_dir=work_dir, name="distillation", fix_hint=fix_hint, seed=seed)
    acc, log = loop.accelerator, loop.log

    # ------------------------------------------------------------------ teacher, data
    teacher = SupportModel.from_pretrained(teacher_dir, config_path=config.path)
    train_source = options.train_file or teacher_training.get("intents_file") or config.data.intents
    if not Path(str(train_source)).exists():
        train_source = config.data.intents
    # The teacher's own validation rows (its folder's validation.jsonl): they stay unseen here too.
    held_out = None if options.validation_file else read_validation_split(teacher_dir)
    val_fraction = settings.val_fraction if settings.val_fraction is not None \
        else float(teacher_settings.get("val_fraction", 0.1))
    if held_out is None and not options.validation_file:
        log.warning("the teacher at %s saved no validation split: splitting %s again (seed %d, fraction %.2f)",
                    teacher_dir, train_source, seed, val_fraction)
    splits = load_intent_splits(train_source, validation_source=options.validation_file, held_out=held_out,
                                val_fraction=val_fraction, seed=seed, min_examples=settings.min_examples_per_intent)
    if splits.labels != teacher.labels:
        raise DataError(f"the intents in {train_source} ({len(splits.labels)}) are not the teacher's "
                        f"({len(teacher.labels)}, {teacher_dir}); retrain the teacher with "
                        f"`accelerate launch -m training.train --config {config.path}`")
    # the same written-dialog rows the teacher trained on, labelled (training/dialog_examples.py)
    splits.train, from_dialogs = with_dialog_rows(splits.train, config, splits.labels)
    if from_dialogs:
        log.info("  %d intent rows from the written training dialogs", from_dialogs)
    label2id = splits.label2id
    test_texts: list[str] = []
    test_labels: list[int] = []
    if options.test_file:
        test_set = load_intents(options.test_file, known_labels=splits.labels)
        test_texts, test_labels = list(test_set["text"]), [label2id[i] for i in test_set["intent"]]
    faq_texts: list[str] = []
    faq_file = faq_source(config)  # with operators' corrections when training.train merged them
    if settings.include_faq and not options.no_faq and faq_file.is_file():
        for rec in with_dialog_paraphrases(config, load_faq(faq_file)):
            faq_texts += [rec.question, *rec.paraphrases]
    corpus = distillation_texts(
        list(splits.train["text"]), [label2id[i] for i in splits.train["intent"]],
        list(splits.validation["text"]), [label2id[i] for i in splits.validation["intent"]], faq_texts,
        augment_copies=settings.augment_copies, augment_prob=settings.augment_prob, seed=seed,
        test=test_texts, test_labels=test_labels)

    # ------------------------------------------------------------------ teacher outputs, once
    t0 = time.perf_counter()
    teacher.to(acc.device)
    cache = work_dir / f"teacher-outputs-{corpus.key(teacher.fingerprint, teacher.max_length)}.npz"
    if cache.is_file():
        with np.load(cache) as z:
            teacher_logits, teacher_emb = z["logits"], z["embeddings"]
        log.info("teacher outputs for %d texts read from %s", len(corpus.texts), cache)
    else:
        # Each process labels its shard; all of them get the whole table.
        with acc.split_between_processes(list(range(len(corpus.texts)))) as shard:
            logits, emb = teacher.predict_logits([corpus.texts[i] for i in shard], batch_size=settings.eval_batch_size)
        parts = gather_object([(shard, logits, emb)]) if acc.num_processes > 1 else [(shard, logits, emb)]
        teacher_logits = np.zeros((len(corpus.texts), len(teacher.labels)), np.float32)
        teacher_emb = np.zeros((len(corpus.texts), teacher.dim), np.float32)
        for idx, lo, em in parts:
            teacher_logits[idx], teacher_emb[idx] = lo, em
        if acc.is_main_process:
            tmp = cache.with_name(f".{cache.stem}.{os.getpid()}.npz")
            np.savez(tmp, logits=teacher_logits, embeddings=teacher_emb)
            os.replace(tmp, cache)
        log.info("teacher outputs for %d texts in %.1f s", len(corpus.texts), time.perf_counter() - t0)
    teacher_seconds = time.perf_counter() - t0
    teacher_argmax = teacher_logits.argmax(-1)

    # ------------------------------------------------------------------ student
    student, how = None, {}
    if init_dir is not None:
        student = warm_student(init_dir, teacher, config.path)
        how = {"init": "warm_start", "from": str(init_dir)}
        if student is None:
            log.warning("warm start from %s: its intents differ from the teacher's; "
                        "the student starts from the teacher's layers", init_dir)
    if student is None:
        student, how = build_student(teacher, settings)
    del teacher
    tokenizer, max_length = student.tokenizer, student.max_length
    log.info("student: %s", how)
    emb_loss = EmbeddingDistillationLoss() if student.dim == teacher_emb.shape[1] else SimilarityMatrixLoss()

    def dataset_of(indices: list[int]) -> Any:
        ds = datasets.Dataset.from_dict({"text": [corpus.texts[i] for i in indices],
                                         "labels": [corpus.labels[i] for i in indices], "row": indices})

        def encode(batch: dict[str, list]) -> dict[str, list]:
            enc = tokenizer(batch["text"], truncation=True, max_length=max_length)
            enc["length"] = [len(x) for x in enc["input_ids"]]
            return dict(enc)

        return ds.map(encode, batched=True, remove_columns=["text"], desc="tokenising")

    with acc.main_process_first():
        train_ds = dataset_of(corpus.indices("train", "faq", "augmented"))
        val_ds = dataset_of(corpus.indices("validation"))
        test_ds = dataset_of(corpus.indices("test")) if test_texts else None
    columns = [c for c in ("input_ids", "attention_mask", "token_type_ids", "labels", "row") if c in train_ds.column_names]
    base_sampler = LengthGroupedBatchSampler(list(train_ds["length"]), loop.plan.micro_global, seed=seed,
                                             window=64 if settings.length_grouping else 1, drop_last=True)

    def teacher_agreement(predictions: Any, extras: dict[str, Any]) -> dict[str, float]:
        return {"teacher_agreement": float((predictions == teacher_argmax[extras["row"]]).mean())}

    n_kinds = {k: corpus.kinds.count(k) for k in ("train", "faq", "augmented", "validation", "test")}
    log.info("  texts: %d labelled, %d FAQ, %d augmented (train); %d validation, %d test", n_kinds["train"],
             n_kinds["faq"], n_kinds["augmented"], n_kinds["validation"], n_kinds["test"])
    log.info("  loss: %.2f x KL(T=%.1f) + %.2f x CE + %.2f x embedding alignment (%s)", settings.kd_weight,
             settings.temperature, settings.ce_weight, settings.embedding_weight, type(emb_loss).__name__)
    task = Task(
        name="distillation", model=student,
        objective=DistillObjective(settings, torch.from_numpy(teacher_logits), torch.from_numpy(teacher_emb), emb_loss),
        train_dataset=train_ds.select_columns(columns), base_sampler=base_sampler,
        collator=DistillCollator(tokenizer, pad_to_multiple_of=loop.pad_to_multiple_of),
        labels=splits.labels, output_dir=output_dir, validation_dataset=val_ds, test_dataset=test_ds,
        validation_rows=rows_of(splits.validation), extra_metrics=teacher_agreement,
        meta={"kind": "student", "teacher": str(teacher_dir), "teacher_fingerprint": str(teacher_meta.get("fingerprint", "")),
              "student": how,
              "embedding_alignment": "cosine" if isinstance(emb_loss, EmbeddingDistillationLoss) else "similarity_matrix",
              "parameters": sum(p.numel() for p in student.parameters()), "texts": n_kinds, "seed": seed,
              "val_fraction": val_fraction, "intents_file": str(train_source)},
        results={"teacher_seconds": round(teacher_seconds, 2)},
    )
    return loop.run(task)


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
