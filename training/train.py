"""Fine-tune the teacher: a `SupportModel` on the intents (and the FAQ paraphrases), with Accelerate.

    accelerate launch -m training.train --config configs/demo.yaml
    accelerate launch --multi_gpu --num_processes 2 -m training.train --config configs/demo.yaml   # 2 CPU processes
    python -m training.train --config configs/demo.yaml --max-steps 20 --resume

The same script runs on one process, on N CPU processes (`Accelerator(cpu=True)`, gloo), on N GPUs
and on several machines; the shape follows Hugging Face's `run_glue_no_trainer.py`.

Objective: intent cross-entropy with label smoothing + `contrastive_weight` x an in-batch
contrastive loss on FAQ (question, paraphrase) and (paraphrase, paraphrase) pairs. The head starts
from a logistic regression on the frozen embeddings; AdamW with warm-up and linear decay; an
exponential moving average of the weights; the best of {final, EMA} weights by validation macro-F1
is kept; the temperature is fitted on validation; the model is saved with `save_pretrained`.

Outputs: the model folder (`--output-dir`, default `<artifacts>/teacher`), and a work folder
(`--work-dir`, default `<artifacts>/runs/<model folder name>`) with checkpoints, TensorBoard logs,
`results.json` and one `ranks/rank<N>.json` per process (steps, losses, parameter checksum).
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import yaml

from service.cli import run_cli, setup_logging
from service.config import load_config
from service.errors import ConfigError, DataError

logger = logging.getLogger("training.train")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="accelerate launch -m training.train",
        description="Fine-tune the teacher SupportModel on a config's intents and FAQ (one or many processes).")
    parser.add_argument("--config", default=None, help="deployment config (default: configs/demo.yaml)")
    parser.add_argument("--output-dir", default=None, help="model folder to write (default: <artifacts_dir>/teacher)")
    parser.add_argument("--work-dir", default=None,
                        help="checkpoints, TensorBoard logs, results.json (default: <artifacts_dir>/runs/<output name>)")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="stop after N optimizer steps (overrides training.epochs; the schedule spans N steps)")
    parser.add_argument("--resume", nargs="?", const="latest", default=None, metavar="CKPT",
                        help="continue from a checkpoint folder, or the latest one in the work dir")
    parser.add_argument("--train-file", default=None, help="intents file to train on instead of data.intents")
    parser.add_argument("--validation-file", default=None,
                        help="validation intents (default: a stratified split of the training intents)")
    parser.add_argument("--test-file", default=None,
                        help="intents scored once at the end and reported in results.json (never used for choices)")
    parser.add_argument("--no-faq", action="store_true", help="train on intents only (no contrastive FAQ pairs)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a key of the config's training section, e.g. --set learning_rate=3e-5")
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    return parser.parse_args(argv)


@dataclass
class TrainingSettings:
    """The `training:` section of a config (every key optional)."""
    encoder: str | None = None            # default: encoder.name
    max_length: int | None = None         # default: encoder.max_length
    epochs: float = 2.0                   # fractional epochs allowed (the schedule ends mid-epoch)
    batch_size: int = 32                  # per process
    eval_batch_size: int = 128
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-4           # encoder (top layer; lower layers get layer_decay^depth of it)
    head_learning_rate: float = 2e-3      # the intent head starts near its optimum: a larger step is safe
    layer_decay: float = 1.0              # layer-wise learning-rate decay (1 = none)
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    scheduler: str = "linear"
    max_grad_norm: float = 1.0
    label_smoothing: float = 0.1
    contrastive_weight: float = 0.5       # 0 = intents only
    contrastive_batch_size: int = 32
    contrastive_scale: float = 20.0
    max_pairs_per_faq: int = 20
    intent_pair_weight: float = 0.0       # > 0: batches of same-intent pairs + an in-batch contrastive loss on them
    anchor_weight: float = 0.0            # > 0: KL towards the frozen-embedding logistic regression's predictions
    anchor_temperature: float = 2.0
    head_init: str = "logreg"             # "logreg": fit on frozen embeddings first; "random"
    logreg_c: float = 10.0
    freeze_embeddings: bool = True        # word embeddings: 12M parameters, few of them seen in small data
    ema_decay: float = 0.99               # 0 = no moving average
    wise_alphas: list[float] = dataclasses.field(default_factory=list)  # also try init + a * (trained - init)
    val_fraction: float = 0.1
    min_examples_per_intent: int = 2
    eval_every: int = 0                   # optimizer steps between evaluations (0 = every epoch)
    early_stopping_patience: int = 3      # evaluations without a better macro-F1 before stopping (0 = never)
    checkpoint_every: int = 0             # optimizer steps between checkpoints (0 = at each evaluation)
    keep_checkpoints: int = 2
    log_every: int = 10
    length_grouping: bool = True          # batches of similar length: less padding
    seed: int = 42
    mixed_precision: str = "auto"         # "auto" (bf16 on a GPU that has it, else fp32), "no", "fp16", "bf16"
    num_threads: int = 0                  # CPU threads per process (0 = cores / local processes)
    calibrate_temperature: bool = True
    tensorboard: bool = True

    @classmethod
    def from_section(cls, section: dict[str, Any], overrides: Sequence[str] = (), where: str = "config") -> "TrainingSettings":
        values = dict(section or {})
        for item in overrides:
            key, sep, raw = item.partition("=")
            if not sep:
                raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set learning_rate=3e-5")
            values[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) in 'training': {', '.join(unknown)} "
                              f"(known: {', '.join(sorted(known))})")
        for key, value in values.items():
            values[key] = _coerce(key, value, str(known[key].type), where)
        settings = cls(**values)
        settings.validate(where)
        return settings

    def validate(self, where: str) -> None:
        def bad(key: str, why: str) -> ConfigError:
            return ConfigError(f"{where}: training.{key} {why}, got {getattr(self, key)!r}")

        for key in ("batch_size", "eval_batch_size", "gradient_accumulation_steps", "contrastive_batch_size",
                    "keep_checkpoints", "log_every", "max_pairs_per_faq", "min_examples_per_intent"):
            if getattr(self, key) < 1:
                raise bad(key, "must be at least 1")
        for key in ("epochs", "learning_rate", "head_learning_rate", "logreg_c", "contrastive_scale",
                    "anchor_temperature"):
            if not getattr(self, key) > 0:
                raise bad(key, "must be positive")
        for key in ("weight_decay", "contrastive_weight", "max_grad_norm", "eval_every", "checkpoint_every",
                    "early_stopping_patience", "num_threads", "intent_pair_weight", "anchor_weight"):
            if getattr(self, key) < 0:
                raise bad(key, "must not be negative")
        for key in ("warmup_ratio", "label_smoothing", "val_fraction", "ema_decay"):
            if not 0 <= getattr(self, key) < 1:
                raise bad(key, "must be in [0, 1)")
        if not 0 < self.layer_decay <= 1:
            raise bad("layer_decay", "must be in (0, 1]")
        if self.head_init not in ("logreg", "random"):
            raise bad("head_init", "must be 'logreg' or 'random'")
        if self.anchor_weight > 0 and self.head_init != "logreg":
            raise bad("head_init", "must be 'logreg' when anchor_weight > 0 (the anchor is that regression)")
        if self.intent_pair_weight > 0 and self.batch_size < 4:
            raise bad("batch_size", "must be at least 4 with intent_pair_weight (it holds pairs)")
        if self.mixed_precision not in ("auto", "no", "fp16", "bf16"):
            raise bad("mixed_precision", "must be one of auto, no, fp16, bf16")
        schedulers = ("linear", "cosine", "constant", "constant_with_warmup", "polynomial", "cosine_with_restarts")
        if self.scheduler not in schedulers:
            raise bad("scheduler", f"must be one of {', '.join(schedulers)}")
        if self.max_length is not None and self.max_length < 8:
            raise bad("max_length", "must be at least 8")


def _coerce(key: str, value: Any, type_name: str, where: str) -> Any:
    if value is None:
        if "None" in type_name:
            return None
        raise ConfigError(f"{where}: training.{key} must not be empty")
    try:
        if type_name.startswith("bool"):
            if isinstance(value, bool):
                return value
            raise ValueError
        if type_name.startswith("int"):
            if isinstance(value, bool) or float(value) != int(float(value)):
                raise ValueError
            return int(float(value))
        if type_name.startswith("float"):
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if type_name.startswith("list[float]"):
            items = value if isinstance(value, list) else [value]
            if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and 0 < x <= 1 for x in items):
                raise ValueError
            return [float(x) for x in items]
        if type_name.startswith("str"):
            if not isinstance(value, str):
                raise ValueError
            return value
    except (TypeError, ValueError):
        pass
    else:
        return value
    kind = type_name.split()[0].split("|")[0]
    what = {"int": "a number", "float": "a number", "list[float]": "a list of numbers in (0, 1]"}.get(kind, "a " + kind)
    raise ConfigError(f"{where}: training.{key} must be {what}, got {value!r}")


def main(argv: Sequence[str] | None = None) -> int:
    t_start = time.perf_counter()
    args = parse_args(argv)
    config = load_config(args.config)
    settings = TrainingSettings.from_section(config.training, args.set, where=str(config.path))
    output_dir = Path(args.output_dir or config.artifacts_dir / "teacher").resolve()
    work_dir = Path(args.work_dir or config.artifacts_dir / "runs" / output_dir.name).resolve()
    max_length = settings.max_length or config.encoder.max_length
    encoder_name = settings.encoder or config.encoder.name
    fix_hint = f"accelerate launch -m training.train --config {config.path}"

    # Heavy imports after the cheap checks, so `--help` and config errors answer at once.
    import numpy as np
    import torch
    import datasets
    import transformers
    from accelerate import Accelerator
    from accelerate.logging import get_logger
    from accelerate.data_loader import prepare_data_loader
    from accelerate.utils import ProjectConfiguration, broadcast, set_seed
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm
    from transformers import DataCollatorWithPadding, get_scheduler

    from training.data import (IntentPairBatchSampler, LengthGroupedBatchSampler, PairCollator, faq_pairs, load_faq,
                               load_intent_splits, tokenize_intents, tokenize_pairs)
    from training.losses import InBatchContrastiveLoss, IntentClassificationLoss, SoftTargetDistillationLoss
    from training.metrics import classification_metrics
    from training.model import SupportModel, fit_temperature

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
    if not args.verbose:  # one line per saved file at every checkpoint is noise
        logging.getLogger("accelerate.checkpointing").setLevel(logging.WARNING)
        logging.getLogger("accelerate.accelerator").setLevel(logging.WARNING)
    log = get_logger("training.train")  # logs on the main process only unless asked otherwise
    if accelerator.is_local_main_process:
        datasets.utils.logging.set_verbosity_warning()
        transformers.utils.logging.set_verbosity_warning()
    else:
        datasets.utils.logging.set_verbosity_error()
        transformers.utils.logging.set_verbosity_error()
        datasets.disable_progress_bars()
    if not use_cuda:
        # N processes on one CPU: split the cores, or they fight over them. OMP_NUM_THREADS is not
        # consulted: `accelerate launch` sets it to 1 by default, which would idle all other cores.
        local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", accelerator.num_processes))
        torch.set_num_threads(settings.num_threads or max(1, (os.cpu_count() or 1) // max(1, local_processes)))
    log.info("%s; %d torch thread(s) per process", str(accelerator.state).replace("\n", " ").strip(),
             torch.get_num_threads())
    set_seed(settings.seed)

    # ------------------------------------------------------------------ data
    splits = load_intent_splits(args.train_file or config.data.intents, validation_source=args.validation_file,
                                val_fraction=settings.val_fraction, seed=settings.seed,
                                min_examples=settings.min_examples_per_intent)
    test_set = None
    if args.test_file:
        from training.data import load_intents
        test_set = load_intents(args.test_file, known_labels=splits.labels)
    use_contrastive = settings.contrastive_weight > 0 and not args.no_faq
    pairs = None
    if use_contrastive:
        pairs = faq_pairs(load_faq(config.data.faq), max_pairs_per_faq=settings.max_pairs_per_faq, seed=settings.seed)
        if len(pairs) < 2:
            log.warning("the FAQ has fewer than 2 paraphrase pairs: training on intents only")
            use_contrastive, pairs = False, None

    model = SupportModel.from_encoder(encoder_name, splits.labels, max_length=max_length)
    tokenizer = model.tokenizer
    cache_dir = config.artifacts_dir / "cache" / "tokenized"
    with accelerator.local_main_process_first():  # one process per machine tokenises and caches; the others read it
        train_ds = tokenize_intents(splits.train, tokenizer, max_length, splits.label2id, cache_dir)
        val_ds = tokenize_intents(splits.validation, tokenizer, max_length, splits.label2id, cache_dir)
        test_ds = tokenize_intents(test_set, tokenizer, max_length, splits.label2id, cache_dir) if test_set else None
        pair_ds = tokenize_pairs(pairs, tokenizer, max_length, cache_dir) if pairs is not None else None

    collator = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8 if precision != "no" else None)
    model_columns = [c for c in ("input_ids", "attention_mask", "token_type_ids", "labels") if c in train_ds.column_names]
    train_ds = train_ds.add_column("idx", list(range(len(train_ds))))  # row ids: the anchor predictions are per row
    train_lengths = list(train_ds["length"])
    window = 64 if settings.length_grouping else 1
    if settings.intent_pair_weight > 0:
        train_sampler = IntentPairBatchSampler(list(train_ds["labels"]), train_lengths, settings.batch_size,
                                               seed=settings.seed, window=window)
    else:
        train_sampler = LengthGroupedBatchSampler(train_lengths, settings.batch_size, seed=settings.seed, window=window)
    # Loaders draw a seed from a generator on every pass; their own generators keep those draws
    # out of the global RNG (dropout), so a resumed run replays the same dropout masks.
    train_loader = DataLoader(train_ds.select_columns(model_columns + ["idx"]), batch_sampler=train_sampler,
                              collate_fn=collator, generator=torch.Generator().manual_seed(settings.seed))

    def eval_loader_for(ds, extra: tuple[str, ...] = ()):
        # Sorted by length: evaluation order does not matter, padding does.
        by_length = np.argsort(np.asarray(list(ds["length"])), kind="stable")
        return DataLoader(ds.select(by_length).select_columns(model_columns + list(extra)),
                          batch_size=settings.eval_batch_size, collate_fn=collator,
                          generator=torch.Generator().manual_seed(settings.seed))

    val_loader = eval_loader_for(val_ds) if len(val_ds) else None
    pair_loader = pair_sampler = None
    if pair_ds is not None:
        pair_sampler = LengthGroupedBatchSampler(list(pair_ds["length"]), min(settings.contrastive_batch_size, len(pair_ds)),
                                                 seed=settings.seed + 1, drop_last=True)
        pair_loader = DataLoader(pair_ds.remove_columns(["length"]), batch_sampler=pair_sampler,
                                 collate_fn=PairCollator(tokenizer), generator=torch.Generator().manual_seed(settings.seed))

    # ------------------------------------------------------------------ head initialisation
    head_init_seconds = 0.0
    anchor_logits = None  # [n_train, n_labels]: the frozen-embedding regression's logits, per training row
    use_anchor = settings.anchor_weight > 0
    # On resume the head comes from the checkpoint, but the anchor is recomputed (deterministically).
    if settings.head_init == "logreg" and (not args.resume or use_anchor):
        t0 = time.perf_counter()
        model.to(accelerator.device)
        # Not registered with the accelerator: it is not part of the training state to checkpoint.
        init_loader = prepare_data_loader(eval_loader_for(train_ds, ("idx",)), accelerator.device,
                                          accelerator.num_processes, accelerator.process_index, put_on_device=True)
        embs, ids, rows = [], [], []
        model.eval()
        with torch.inference_mode():
            for batch in tqdm(init_loader, desc="frozen embeddings", disable=not accelerator.is_local_main_process):
                labels, idx = batch.pop("labels"), batch.pop("idx")
                emb = model.embed(**batch)
                emb, labels, idx = accelerator.gather_for_metrics((emb, labels, idx))
                embs.append(emb.float().cpu())
                ids.append(labels.cpu())
                rows.append(idx.cpu())
        if use_anchor:
            anchor_logits = torch.zeros(len(train_ds), len(splits.labels), device=accelerator.device)
        if accelerator.is_main_process:
            emb_all = torch.cat(embs)
            acc = model.fit_head(emb_all.numpy(), torch.cat(ids).numpy(), C=settings.logreg_c)
            log.info("intent head initialised from a logistic regression on frozen embeddings (train acc %.4f)", acc)
            if use_anchor:
                with torch.no_grad():
                    anchor_logits[torch.cat(rows).to(accelerator.device)] = \
                        model.intent_head(emb_all.to(accelerator.device)).float()
        # Every process starts from the main process's head (and anchor).
        with torch.no_grad():
            for p in model.intent_head.parameters():
                p.copy_(broadcast(p.data.contiguous(), from_process=0))
            if use_anchor:
                anchor_logits = broadcast(anchor_logits.contiguous(), from_process=0)
        head_init_seconds = time.perf_counter() - t0
        model.train()

    # ------------------------------------------------------------------ optimizer
    if settings.freeze_embeddings:
        model.encoder.get_input_embeddings().weight.requires_grad_(False)
    for name, p in model.encoder.named_parameters():
        if name.startswith("pooler."):  # the [CLS] pooler is not used by mean pooling (and would stall DDP)
            p.requires_grad_(False)
    optimizer = torch.optim.AdamW(param_groups(model, settings), lr=settings.learning_rate)

    # ------------------------------------------------------------------ prepare
    prepared = accelerator.prepare(model, optimizer, train_loader, *(x for x in (val_loader, pair_loader) if x is not None))
    model, optimizer, train_loader = prepared[:3]
    rest = list(prepared[3:])
    val_loader = rest.pop(0) if val_loader is not None else None
    pair_loader = rest.pop(0) if pair_loader is not None else None

    # Sized after prepare: on N processes each one sees 1/N of the batches.
    steps_per_epoch = math.ceil(len(train_loader) / settings.gradient_accumulation_steps)
    max_steps = args.max_steps or math.ceil(settings.epochs * steps_per_epoch)
    num_epochs = math.ceil(max_steps / steps_per_epoch)
    lr_scheduler = get_scheduler(settings.scheduler, optimizer=optimizer,
                                 num_warmup_steps=int(settings.warmup_ratio * max_steps), num_training_steps=max_steps)
    # Stepped by hand once per optimizer step (a prepared scheduler steps N times per step on N processes).
    accelerator.register_for_checkpointing(lr_scheduler)
    averager = WeightAverager(accelerator.unwrap_model(model), settings.ema_decay, keep_initial=bool(settings.wise_alphas))
    accelerator.register_for_checkpointing(averager)
    eval_every = settings.eval_every or steps_per_epoch
    checkpoint_every = settings.checkpoint_every or eval_every

    if settings.tensorboard:
        accelerator.init_trackers(output_dir.name, config={k: v for k, v in dataclasses.asdict(settings).items()
                                                     if isinstance(v, (int, float, str, bool))})

    effective_batch = settings.batch_size * accelerator.num_processes * settings.gradient_accumulation_steps
    log.info("***** training *****")
    log.info("  examples: %d train, %d validation, %d intents; %s contrastive pairs", len(train_ds), len(val_ds),
             len(splits.labels), len(pair_ds) if pair_ds is not None else "no")
    log.info("  batch %d per process x %d processes x %d accumulation = effective batch %d", settings.batch_size,
             accelerator.num_processes, settings.gradient_accumulation_steps, effective_batch)
    log.info("  optimizer steps: %d (%d per epoch, %d epoch(s)); warm-up %d", max_steps, steps_per_epoch, num_epochs,
             int(settings.warmup_ratio * max_steps))

    # ------------------------------------------------------------------ resume
    state = TrainerState()
    checkpoints_dir = work_dir / "checkpoints"
    if args.resume:
        ckpt = latest_checkpoint(checkpoints_dir) if args.resume == "latest" else Path(args.resume)
        if ckpt is None or not (ckpt / "trainer_state.json").is_file():
            raise DataError(f"no checkpoint to resume from in {checkpoints_dir if args.resume == 'latest' else ckpt}; "
                            f"start without --resume: {fix_hint}")
        accelerator.load_state(str(ckpt))
        state = TrainerState(**json.loads((ckpt / "trainer_state.json").read_text()))
        log.info("resumed from %s at step %d", ckpt, state.completed_steps)
    resume_batches = state.completed_steps * settings.gradient_accumulation_steps
    starting_epoch = resume_batches // len(train_loader)
    resume_batches -= starting_epoch * len(train_loader)

    # ------------------------------------------------------------------ train
    intent_loss = IntentClassificationLoss(settings.label_smoothing)
    anchor_loss = SoftTargetDistillationLoss(settings.anchor_temperature)
    contrastive_loss = InBatchContrastiveLoss(settings.contrastive_scale)
    pad_id = tokenizer.pad_token_id or 0
    pair_iter = None
    progress = tqdm(range(max_steps), initial=state.completed_steps, desc="training",
                    disable=not accelerator.is_local_main_process)
    step_losses: list[float] = []
    examples_seen = 0
    train_seconds = 0.0
    stop = state.completed_steps >= max_steps

    def next_pairs():
        # The pair loader cycles on its own epochs; its position is part of the checkpoint.
        nonlocal pair_iter
        while True:
            if pair_iter is None:
                epoch, done = divmod(state.pair_batches, len(pair_loader))
                pair_loader.set_epoch(epoch)
                pair_sampler.set_epoch(epoch)
                pair_iter = iter(accelerator.skip_first_batches(pair_loader, done) if done else pair_loader)
            try:
                batch = next(pair_iter)
            except StopIteration:
                pair_iter = None
                continue
            state.pair_batches += 1
            if state.pair_batches % len(pair_loader) == 0:
                pair_iter = None
            return batch

    def evaluate(loader) -> tuple[dict[str, float], Any, Any]:
        model.eval()
        all_logits, all_labels = [], []
        with torch.inference_mode():
            for batch in loader:
                labels = batch.pop("labels")
                out = model(**batch)
                logits, labels = accelerator.gather_for_metrics((out.logits.float(), labels))
                all_logits.append(logits.cpu())
                all_labels.append(labels.cpu())
        model.train()
        logits, labels = torch.cat(all_logits), torch.cat(all_labels)
        return classification_metrics(logits.argmax(-1).numpy(), labels.numpy(), len(splits.labels)), logits, labels

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
        # The prepared loader re-applies its own epoch counter to the sampler on every pass, so
        # set both (a resumed run starts mid-way, with another counter).
        train_loader.set_epoch(epoch)
        train_sampler.set_epoch(epoch)
        if epoch == starting_epoch and resume_batches:
            active_loader = accelerator.skip_first_batches(train_loader, resume_batches)
        else:
            active_loader = train_loader
        t_epoch = time.perf_counter()
        for batch in active_loader:
            with accelerator.accumulate(model):
                labels, rows = batch.pop("labels"), batch.pop("idx")
                n_intent = labels.size(0)
                if use_contrastive:
                    pairs_batch = next_pairs()
                    groups = pairs_batch.pop("group")
                    batch = concat_padded([batch, _side(pairs_batch, "anchor"), _side(pairs_batch, "positive")], pad_id)
                # One forward pass for intents and pairs: cheaper, and DDP sees one graph per step.
                out = model(**batch)
                loss = intent_loss(out.logits[:n_intent], labels)
                if settings.intent_pair_weight > 0:
                    # the sampler put two examples of one intent at i and i + half
                    half = n_intent // 2
                    emb = out.embeddings[:n_intent]
                    loss = loss + settings.intent_pair_weight * contrastive_loss(emb[:half], emb[half:2 * half],
                                                                                 labels[:half])
                if use_anchor:
                    loss = loss + settings.anchor_weight * anchor_loss(out.logits[:n_intent], anchor_logits[rows])
                if use_contrastive:
                    n_pairs = groups.size(0)
                    emb = out.embeddings[n_intent:]
                    loss = loss + settings.contrastive_weight * contrastive_loss(emb[:n_pairs], emb[n_pairs:], groups)
                accelerator.backward(loss)
                if accelerator.sync_gradients and settings.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
                optimizer.step()
                if accelerator.sync_gradients:
                    lr_scheduler.step()
                optimizer.zero_grad()
            examples_seen += n_intent
            if not accelerator.sync_gradients:
                continue
            state.completed_steps += 1
            step_losses.append(float(loss.detach()))
            averager.update(accelerator.unwrap_model(model))
            progress.update(1)
            if state.completed_steps % settings.log_every == 0 or state.completed_steps == max_steps:
                mean_loss = accelerator.reduce(torch.tensor(np.mean(step_losses[-settings.log_every:]),
                                                            device=accelerator.device), "mean").item()
                progress.set_postfix(loss=f"{mean_loss:.4f}")
                if settings.tensorboard:
                    accelerator.log({"train/loss": mean_loss, "train/lr": lr_scheduler.get_last_lr()[0]},
                                    step=state.completed_steps)
            done = state.completed_steps >= max_steps
            if val_loader is not None and (state.completed_steps % eval_every == 0 or done):
                train_seconds += time.perf_counter() - t_epoch
                metrics, _, _ = evaluate(val_loader)
                log.info("step %d: validation accuracy %.4f, macro-F1 %.4f", state.completed_steps,
                         metrics["accuracy"], metrics["macro_f1"])
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
        candidates = {"final": None}
        if averager.enabled:
            candidates["ema"] = averager.ema
        if averager.best is not None and state.best_step != state.completed_steps:
            candidates["best"] = averager.best
        current = averager.snapshot(unwrapped)
        if averager.initial is not None:
            # WiSE-FT (Wortsman et al. 2022): interpolating towards the starting point (pretrained
            # encoder + logistic-regression head) keeps some of what fine-tuning forgets.
            for base in [k for k in ("final", "ema") if k in candidates]:
                trained = candidates[base] if candidates[base] is not None else current
                for alpha in settings.wise_alphas:
                    if alpha < 1:
                        candidates[f"wise{alpha:g}-{base}"] = averager.interpolate(trained, alpha)
        scores = {}
        for name, weights in candidates.items():
            averager.load(unwrapped, weights if weights is not None else current)
            metrics, logits, labels = evaluate(val_loader)
            scores[name] = (metrics["macro_f1"], metrics["accuracy"], metrics, logits, labels)
            log.info("candidate weights %-14s: validation accuracy %.4f, macro-F1 %.4f", name, metrics["accuracy"],
                     metrics["macro_f1"])
        chosen = max(scores, key=lambda k: scores[k][:2])
        _, _, val_metrics, val_logits, val_labels = scores[chosen]
        averager.load(unwrapped, candidates[chosen] if candidates[chosen] is not None else current)
    temperature = 1.0
    if settings.calibrate_temperature and val_logits is not None:
        # Without errors on validation the NLL falls as T -> 0: nothing to calibrate against.
        if len(val_logits) >= 2 * len(splits.labels) and val_metrics["accuracy"] < 1.0:
            temperature = fit_temperature(val_logits, val_labels)
        else:
            log.warning("validation set too small or without errors (%d examples): temperature left at 1",
                        len(val_logits))
    unwrapped.temperature.fill_(temperature)
    log.info("kept the %s weights; temperature %.3f", chosen, temperature)

    total_examples = int(accelerator.reduce(torch.tensor(examples_seen, device=accelerator.device), "sum").item())
    meta = {
        "steps": state.completed_steps,
        "epochs": round(state.completed_steps / steps_per_epoch, 3),
        "chosen_weights": chosen,
        "validation": val_metrics,
        "num_processes": accelerator.num_processes,
        "effective_batch_size": effective_batch,
        "train_examples": len(train_ds),
        "contrastive_pairs": len(pair_ds) if pair_ds is not None else 0,
        "settings": dataclasses.asdict(settings),
        "intents_file": str(args.train_file or config.data.intents),
    }
    rank_stats = {
        "rank": accelerator.process_index,
        "num_processes": accelerator.num_processes,
        "steps": state.completed_steps,
        "losses": step_losses,
        "examples": examples_seen,
        "param_checksum": parameter_checksum(unwrapped),
        "threads": torch.get_num_threads(),
    }
    ranks_dir = work_dir / "ranks"
    ranks_dir.mkdir(parents=True, exist_ok=True)
    (ranks_dir / f"rank{accelerator.process_index}.json").write_text(json.dumps(rank_stats))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        unwrapped.save_pretrained(output_dir, training=meta)
    accelerator.wait_for_everyone()
    wall_seconds = time.perf_counter() - t_start

    test_metrics, test_seconds = None, 0.0
    if test_ds is not None:  # scored once, after every choice was made on validation
        t0 = time.perf_counter()
        test_loader = prepare_data_loader(eval_loader_for(test_ds), accelerator.device, accelerator.num_processes,
                                          accelerator.process_index, put_on_device=True)
        test_metrics, _, _ = evaluate(test_loader)
        test_seconds = time.perf_counter() - t0
        log.info("test accuracy %.4f, macro-F1 %.4f (%d examples)", test_metrics["accuracy"], test_metrics["macro_f1"],
                 len(test_ds))

    if accelerator.is_main_process:
        results = {
            **meta,
            "output_dir": str(output_dir),
            "fingerprint": unwrapped.fingerprint,
            "temperature": temperature,
            "test": test_metrics,
            "wall_seconds": round(wall_seconds, 2),     # start to saved model (imports, data, init, training, calibration)
            "test_seconds": round(test_seconds, 2),
            "train_seconds": round(train_seconds, 2),   # the training loop alone (no evaluation, no checkpoints)
            "head_init_seconds": round(head_init_seconds, 2),
            "train_examples_seen": total_examples,
            "train_examples_per_second": round(total_examples / train_seconds, 2) if train_seconds else None,
            "threads_per_process": torch.get_num_threads(),
        }
        (work_dir / "results.json").write_text(json.dumps(results, indent=2, default=str))
        log.info("saved the teacher to %s (%d steps, %.0f s of training, %.1f examples/s)", output_dir,
                 state.completed_steps, train_seconds, results["train_examples_per_second"] or 0)
    accelerator.wait_for_everyone()
    if settings.tensorboard:
        accelerator.end_training()
    return 0


# ---------------------------------------------------------------------- helpers

@dataclass
class TrainerState:
    """What a checkpoint needs beyond the weights, optimizer, scheduler and RNG states."""
    completed_steps: int = 0
    best_f1: float = -1.0
    best_step: int = 0
    evals_since_best: int = 0
    pair_batches: int = 0       # contrastive batches consumed (the pair loader cycles on its own)


class WeightAverager:
    """An exponential moving average of the trainable weights, plus the best weights seen.

    Registered for checkpointing, so a resumed run continues the same average.
    """

    def __init__(self, model: Any, decay: float, keep_initial: bool = False) -> None:
        self.decay = decay
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        self.enabled = decay > 0
        self.ema = self.snapshot(model) if self.enabled else None
        self.best: dict[str, Any] | None = None
        self.initial = self.snapshot(model) if keep_initial else None

    def interpolate(self, trained: dict[str, Any], alpha: float) -> dict[str, Any]:
        return {n: self.initial[n] + alpha * (trained[n] - self.initial[n]) for n in self.names}

    def snapshot(self, model: Any) -> dict[str, Any]:
        params = dict(model.named_parameters())
        return {n: params[n].detach().clone() for n in self.names}

    def update(self, model: Any) -> None:
        if not self.enabled:
            return
        import torch

        params = dict(model.named_parameters())
        with torch.no_grad():
            torch._foreach_lerp_(list(self.ema.values()), [params[n].detach() for n in self.names], 1 - self.decay)

    def keep_best(self, model: Any) -> None:
        self.best = self.snapshot(model)

    def load(self, model: Any, weights: dict[str, Any]) -> None:
        import torch

        params = dict(model.named_parameters())
        with torch.no_grad():
            for n in self.names:
                params[n].copy_(weights[n])

    def state_dict(self) -> dict[str, Any]:
        return {"ema": self.ema, "best": self.best, "initial": self.initial}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ema, self.best, self.initial = state.get("ema"), state.get("best"), state.get("initial")


def param_groups(model: Any, settings: TrainingSettings) -> list[dict[str, Any]]:
    """AdamW groups: no decay on biases and LayerNorm weights; layer-wise lr decay; a separate head lr."""
    n_layers = int(getattr(model.encoder.config, "num_hidden_layers", 0) or 0)
    groups: dict[tuple[float, float], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = name.endswith("bias") or "LayerNorm" in name or "layer_norm" in name or "norm.weight" in name
        if name.startswith("intent_head."):
            lr = settings.head_learning_rate
        else:
            lr = settings.learning_rate * settings.layer_decay ** _depth_from_top(name, n_layers)
        key = (lr, 0.0 if no_decay else settings.weight_decay)
        groups.setdefault(key, []).append(p)
    return [{"params": ps, "lr": lr, "weight_decay": wd} for (lr, wd), ps in groups.items()]


def _depth_from_top(name: str, n_layers: int) -> int:
    # encoder.layer.{i}. -> n_layers - 1 - i; embeddings -> n_layers; anything above the layers -> 0
    parts = name.split(".")
    for i, part in enumerate(parts[:-1]):
        if part in ("layer", "layers") and parts[i + 1].isdigit():
            return max(0, n_layers - 1 - int(parts[i + 1]))
    return n_layers if "embeddings" in name else 0


def _side(batch: dict[str, Any], side: str) -> dict[str, Any]:
    return {k[len(side) + 1:]: v for k, v in batch.items() if k.startswith(side + "_")}


def concat_padded(batches: list[dict[str, Any]], pad_id: int) -> dict[str, Any]:
    """Stack token batches of different padded lengths into one batch (right padding)."""
    import torch

    width = max(b["input_ids"].size(1) for b in batches)
    out: dict[str, Any] = {}
    for key in batches[0]:
        pad = pad_id if key == "input_ids" else 0
        out[key] = torch.cat([torch.nn.functional.pad(b[key], (0, width - b[key].size(1)), value=pad) for b in batches])
    return out


def parameter_checksum(model: Any) -> str:
    """sha256 over every parameter and buffer: equal on all processes when DDP kept them in sync."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def latest_checkpoint(directory: Path) -> Path | None:
    found = sorted((p for p in directory.glob("step_*") if (p / "trainer_state.json").is_file()), key=_step_of)
    return found[-1] if found else None


def _step_of(path: Path) -> int:
    try:
        return int(path.name.split("_", 1)[1])
    except (IndexError, ValueError):
        return -1


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
