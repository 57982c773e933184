"""The one training loop: fine-tuning the teacher (`training.train`) and distilling the student
(`training.distill`) both run through `Loop`; each supplies only its objective and its data.

An objective is a small class, as in sentence-transformers: `__call__(model, batch) -> loss` on a
batch already on the device, holding whatever else it needs (losses, teacher outputs, a stream of
contrastive pairs). The loop owns everything else: Accelerate set-up (`Accelerator(cpu=True)` when
there is no GPU, CPU threads split between local processes), loaders, AdamW groups (no decay on
biases and LayerNorm, layer-wise learning-rate decay, a separate head learning rate), the schedule,
gradient accumulation, checkpoints and exact resume, evaluation, early stopping, the choice of the
best weights (final, EMA, best, WiSE interpolations), temperature calibration, the model folder
(with the held-out validation rows) and `results.json` / `ranks/rank<N>.json` in the work folder.

N processes train the same model as one
---------------------------------------
`batch_size` (and `training.contrastive_batch_size`) is the GLOBAL batch of one optimizer step,
summed over processes and gradient-accumulation steps. Each process loads
`batch_size / (processes x gradient_accumulation_steps)` examples per micro-batch; a batch size
that does not divide is a ConfigError naming the numbers (no silent rounding, so a run's recipe is
what its config says). The batch sampler builds the same sequence of global micro-batches
(`batch_size / gradient_accumulation_steps` examples each) on every process from (seed, epoch)
alone, and each process takes its own slice of each one. Only full batches are used, on any number
of processes (a short batch is dropped, as Accelerate's shard does on N processes). So the steps per
epoch, the schedule, the learning rate and the examples seen are identical for 1, 2 or N processes;
the run logs the plan before training and records it in results.json.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from core.config import LoopSettings
from core.errors import ConfigError, DataError
from core.threads import set_torch_threads

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


# ---------------------------------------------------------------------- options

@dataclass
class RunOptions:
    """What a run needs beyond the config's values."""
    output_dir: Path | None = None       # model folder (default: the layout's teacher/student)
    work_dir: Path | None = None         # checkpoints, logs, results.json (default: <artifacts>/runs/<output name>)
    max_steps: int | None = None         # stop after N optimizer steps (the schedule spans N steps)
    resume: str | None = None            # a checkpoint folder, or "latest" (the work dir's newest)
    train_file: str | None = None
    validation_file: str | None = None
    test_file: str | None = None         # scored once at the end, never used for choices
    no_faq: bool = False
    verbose: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "RunOptions":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in vars(args).items() if k in names})

    def folders(self, default_output: Path, layout: Any) -> tuple[Path, Path]:
        output_dir = Path(self.output_dir or default_output).resolve()
        work_dir = Path(self.work_dir or layout.run_dir(output_dir)).resolve()
        return output_dir, work_dir


def add_run_arguments(parser: argparse.ArgumentParser, *, section: str, default_output: str) -> None:
    """The flags `training.train` and `training.distill` share (besides --config/--set/--verbose)."""
    parser.add_argument("--output-dir", default=None, help=f"model folder to write (default: <artifacts_dir>/{default_output})")
    parser.add_argument("--work-dir", default=None,
                        help="checkpoints, TensorBoard logs, results.json (default: <artifacts_dir>/runs/<output name>)")
    parser.add_argument("--max-steps", type=int, default=None,
                        help=f"stop after N optimizer steps (overrides {section}.epochs; the schedule spans N steps)")
    parser.add_argument("--resume", nargs="?", const="latest", default=None, metavar="CKPT",
                        help="continue from a checkpoint folder, or the latest one in the work dir")
    parser.add_argument("--train-file", default=None, help="intents to train on instead of data.intents")
    parser.add_argument("--validation-file", default=None,
                        help="validation intents (default: the teacher's held-out split)")
    parser.add_argument("--test-file", default=None,
                        help="intents scored once at the end and reported in results.json (never used for choices)")
    parser.add_argument("--no-faq", action="store_true", help="do not use the FAQ")


# ---------------------------------------------------------------------- batches

@dataclass(frozen=True)
class BatchPlan:
    """A global batch split over processes and accumulation steps (see the module docstring)."""
    global_batch: int
    processes: int
    accumulation: int

    @classmethod
    def make(cls, global_batch: int, processes: int, accumulation: int, key: str) -> "BatchPlan":
        if global_batch % (processes * accumulation):
            raise ConfigError(
                f"{key} {global_batch} is the global batch of one optimizer step; it must divide evenly over "
                f"{processes} process(es) x {accumulation} accumulation step(s) = {processes * accumulation} "
                f"(e.g. {key}={max(1, round(global_batch / (processes * accumulation))) * processes * accumulation})")
        return cls(global_batch, processes, accumulation)

    @property
    def micro_global(self) -> int:
        """Examples of one micro-step over all processes (the base sampler's batch size)."""
        return self.global_batch // self.accumulation

    @property
    def per_process(self) -> int:
        return self.global_batch // (self.processes * self.accumulation)

    def describe(self) -> str:
        return (f"{self.per_process} per process x {self.processes} process(es) x {self.accumulation} accumulation "
                f"= global batch {self.global_batch}")


class ShardedBatchSampler:
    """This process's slice of every global micro-batch of `base`.

    `base` yields global micro-batches (lists of indices, `plan.micro_global` each, full batches
    only) in an order that depends on (seed, epoch) alone; `base.shard(batch, n, i)` (when it has
    one) or a contiguous slice gives process i its part. With `whole_steps`, a trailing group of
    micro-batches too short for an optimizer step is left out. `skip` micro-batches are skipped on
    the next pass (exact resume).
    """

    def __init__(self, base: Any, plan: BatchPlan, process_index: int, *, whole_steps: bool = True) -> None:
        self.base = base
        self.plan = plan
        self.process_index = process_index
        self.whole_steps = whole_steps
        self.skip = 0

    def set_epoch(self, epoch: int) -> None:
        self.base.set_epoch(epoch)

    def full_batches(self) -> int:
        n = len(self.base)
        return n // self.plan.accumulation * self.plan.accumulation if self.whole_steps else n

    def __len__(self) -> int:
        return max(0, self.full_batches() - self.skip)

    def __iter__(self) -> Iterator[list[int]]:
        limit, skip = self.full_batches(), self.skip
        self.skip = 0
        shard = getattr(self.base, "shard", None)
        n, i = self.plan.processes, self.process_index
        used = 0
        for batch in self.base:
            if len(batch) != self.plan.micro_global:
                continue
            if used >= limit:
                break
            used += 1
            if used <= skip:
                continue
            if shard is not None:
                yield shard(batch, n, i)
            else:
                k = len(batch) // n
                yield list(batch[i * k:(i + 1) * k])


# ---------------------------------------------------------------------- objectives

class Objective:
    """A training objective: `__call__(model, batch) -> loss` on a batch already on the device.

    `parts` holds the named terms of the last loss (logged per step, optional); `state_dict` /
    `load_state_dict` what a checkpoint must keep of the objective (e.g. a pair stream's position).
    """
    parts: dict[str, Any] = {}

    def __call__(self, model: Any, batch: dict[str, Any]) -> Any:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


@dataclass
class Task:
    """What one run trains: a model, its objective and data; the loop does the rest."""
    name: str                             # "training" | "distillation" (logs, progress bar)
    model: Any                            # a SupportModel, not yet prepared
    objective: Objective
    train_dataset: Any                    # tokenized rows, the collator's columns only
    base_sampler: Any                     # global micro-batches of plan.micro_global, full batches only
    collator: Callable[[list[dict[str, Any]]], dict[str, Any]]
    labels: list[str]
    output_dir: Path
    validation_dataset: Any | None = None
    test_dataset: Any | None = None
    validation_rows: list[dict[str, str]] | None = None   # saved with the model (service calibration)
    extra_metrics: Callable[[Any, dict[str, Any]], dict[str, float]] | None = None  # (predictions, extras)
    wise_alphas: Sequence[float] = ()
    meta: dict[str, Any] = field(default_factory=dict)     # attendant.json "training" and results.json
    results: dict[str, Any] = field(default_factory=dict)  # results.json only (timings)


@dataclass
class TrainerState:
    """What a checkpoint needs beyond the weights, optimizer, scheduler and RNG states."""
    completed_steps: int = 0
    best_f1: float = -1.0
    best_step: int = 0
    evals_since_best: int = 0
    objective: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------- the loop

class Loop:
    """Accelerate set-up at construction; `run(task)` trains, chooses, calibrates and saves."""

    def __init__(self, settings: LoopSettings, options: RunOptions, *, work_dir: Path, name: str, fix_hint: str,
                 seed: int | None = None) -> None:
        import datasets
        import torch
        import transformers
        from accelerate import Accelerator
        from accelerate.logging import get_logger
        from accelerate.utils import ProjectConfiguration, set_seed

        from core.cli import setup_logging

        self.settings = settings
        self.options = options
        verbose = options.verbose
        self.work_dir = Path(work_dir)
        self.fix_hint = fix_hint
        self.seed = settings.seed if seed is None else seed
        use_cuda = torch.cuda.is_available()
        precision = settings.mixed_precision
        if precision == "auto":
            precision = "bf16" if use_cuda and torch.cuda.is_bf16_supported() else "no"
        self.precision = precision
        self.work_dir.mkdir(parents=True, exist_ok=True)
        # Gradient accumulation is done here (no_sync + one optimizer step per group), not by
        # Accelerate: the loader is this loop's own, sharded as the module docstring says.
        self.accelerator = Accelerator(
            cpu=not use_cuda,
            mixed_precision=precision,
            log_with="tensorboard" if settings.tensorboard else None,
            project_config=ProjectConfiguration(project_dir=str(self.work_dir),
                                                logging_dir=str(self.work_dir / "tensorboard")),
        )
        setup_logging(verbose)
        if not verbose:  # one line per saved file at every checkpoint is noise
            logging.getLogger("accelerate.checkpointing").setLevel(logging.WARNING)
            logging.getLogger("accelerate.accelerator").setLevel(logging.WARNING)
        self.log = get_logger(f"training.{name}")  # the main process only unless asked otherwise
        acc = self.accelerator
        if acc.is_local_main_process:
            datasets.utils.logging.set_verbosity_warning()
            transformers.utils.logging.set_verbosity_warning()
        else:
            datasets.utils.logging.set_verbosity_error()
            transformers.utils.logging.set_verbosity_error()
            datasets.disable_progress_bars()
        if not use_cuda:
            import os

            # N processes on one CPU: split the cores, or they fight over them.
            set_torch_threads(settings.num_threads, int(os.environ.get("LOCAL_WORLD_SIZE", acc.num_processes)))
        self.log.info("%s; %d torch thread(s) per process", str(acc.state).replace("\n", " ").strip(),
                      torch.get_num_threads())
        set_seed(self.seed)
        self.plan = self.batch_plan(settings.batch_size, f"{settings.SECTION}.batch_size")
        self.t_start = time.perf_counter()

    # ------------------------------------------------------------------ helpers for the tasks

    def batch_plan(self, global_batch: int, key: str) -> BatchPlan:
        return BatchPlan.make(global_batch, self.accelerator.num_processes, self.settings.gradient_accumulation_steps, key)

    @property
    def pad_to_multiple_of(self) -> int | None:
        return 8 if self.precision != "no" else None

    def sharded_loader(self, dataset: Any, base_sampler: Any, collator: Callable, plan: BatchPlan | None = None,
                       *, whole_steps: bool = True) -> Any:
        """A DataLoader over this process's slice of `base_sampler`'s global micro-batches."""
        import torch
        from torch.utils.data import DataLoader

        sampler = ShardedBatchSampler(base_sampler, plan or self.plan, self.accelerator.process_index,
                                      whole_steps=whole_steps)
        # Its own generator keeps the loader's per-pass seed draw out of the global RNG (dropout),
        # so a resumed run replays the same dropout masks.
        return DataLoader(dataset, batch_sampler=sampler, collate_fn=collator,
                          generator=torch.Generator().manual_seed(self.seed))

    def eval_loader(self, dataset: Any, collator: Callable) -> Any:
        """Sorted by length (order does not matter, padding does), sharded over the processes,
        batches on the device; not registered for checkpointing."""
        import numpy as np
        from accelerate.data_loader import prepare_data_loader
        from torch.utils.data import DataLoader

        by_length = np.argsort(np.asarray(list(dataset["length"])), kind="stable")
        columns = [c for c in dataset.column_names if c != "length"]
        loader = DataLoader(dataset.select(by_length).select_columns(columns), batch_size=self.settings.eval_batch_size,
                            collate_fn=collator)
        acc = self.accelerator
        return prepare_data_loader(loader, acc.device, acc.num_processes, acc.process_index, put_on_device=True)

    def to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        device = self.accelerator.device
        return {k: v.to(device) if hasattr(v, "to") else v for k, v in batch.items()}

    def evaluate(self, model: Any, loader: Any, n_labels: int,
                 extra_metrics: Callable | None = None) -> tuple[dict[str, float], Any, Any]:
        """Accuracy, macro-F1 and the cross-entropy loss (temperature 1) over a prepared loader."""
        import torch
        import torch.nn.functional as F

        from training.metrics import classification_metrics

        acc = self.accelerator
        model.eval()
        all_logits, all_labels, all_extras = [], [], []
        with torch.inference_mode():
            for batch in loader:
                labels = batch.pop("labels")
                extras = {k: batch.pop(k) for k in list(batch) if k not in MODEL_INPUTS}
                out = model(**batch)
                logits, labels, extras = acc.gather_for_metrics((out.logits.float(), labels, extras))
                all_logits.append(logits.cpu())
                all_labels.append(labels.cpu())
                all_extras.append({k: v.cpu() for k, v in extras.items()})
        model.train()
        logits, labels = torch.cat(all_logits), torch.cat(all_labels)
        predictions = logits.argmax(-1).numpy()
        metrics = classification_metrics(predictions, labels.numpy(), n_labels)
        metrics["loss"] = float(F.cross_entropy(logits, labels)) if len(labels) else 0.0
        if extra_metrics is not None:
            extras = {k: torch.cat([e[k] for e in all_extras]).numpy() for k in (all_extras[0] if all_extras else {})}
            metrics.update(extra_metrics(predictions, extras))
        return metrics, logits, labels

    # ------------------------------------------------------------------ the run

    def run(self, task: Task) -> dict[str, Any]:
        import numpy as np
        import torch
        from tqdm.auto import tqdm
        from transformers import get_scheduler

        from runtime.calibration import fit_temperature

        s, acc, log, plan = self.settings, self.accelerator, self.log, self.plan
        model, objective = task.model, task.objective
        n_labels = len(task.labels)

        # ------------------------------------------------------------------ optimizer, loaders
        if s.freeze_embeddings:
            model.encoder.get_input_embeddings().weight.requires_grad_(False)
        for name, p in model.encoder.named_parameters():
            if name.startswith("pooler."):  # the [CLS] pooler is not used by mean pooling (and would stall DDP)
                p.requires_grad_(False)
        optimizer = torch.optim.AdamW(param_groups(model, s), lr=s.learning_rate)
        model, optimizer = acc.prepare(model, optimizer)
        if acc.num_processes > 1:
            # Everything that must agree across processes is built by now (DDP has broadcast the
            # weights). From here the random draws are dropout masks: give each process its own
            # stream, or every process would drop the same units of its rows (one process drops
            # independently for each row of the global batch).
            torch.manual_seed(self.seed + acc.process_index)
        train_loader = self.sharded_loader(task.train_dataset, task.base_sampler, task.collator)
        sampler: ShardedBatchSampler = train_loader.batch_sampler
        micro_per_epoch = sampler.full_batches()
        steps_per_epoch = micro_per_epoch // plan.accumulation
        if steps_per_epoch < 1:
            raise ConfigError(f"{s.SECTION}.batch_size {plan.global_batch} is more than the {len(task.train_dataset)} "
                              f"training examples: lower it")
        val_loader = None
        if task.validation_dataset is not None and len(task.validation_dataset):
            val_loader = self.eval_loader(task.validation_dataset, task.collator)

        max_steps = self.options.max_steps or max(1, math.ceil(s.epochs * steps_per_epoch))
        num_epochs = math.ceil(max_steps / steps_per_epoch)
        warmup = int(s.warmup_ratio * max_steps)
        lr_scheduler = get_scheduler(s.scheduler, optimizer=optimizer, num_warmup_steps=warmup,
                                     num_training_steps=max_steps)
        acc.register_for_checkpointing(lr_scheduler)  # stepped by hand, once per optimizer step
        averager = WeightAverager(acc.unwrap_model(model), s.ema_decay, keep_initial=bool(task.wise_alphas))
        acc.register_for_checkpointing(averager)
        eval_every = s.eval_every or steps_per_epoch
        checkpoint_every = s.checkpoint_every or eval_every
        if s.tensorboard:
            acc.init_trackers(task.output_dir.name, config={k: v for k, v in dataclasses.asdict(s).items()
                                                            if isinstance(v, (int, float, str, bool))})

        log.info("***** %s *****", task.name)
        log.info("  examples: %d train, %d validation, %d intents", len(task.train_dataset),
                 len(task.validation_dataset) if task.validation_dataset is not None else 0, n_labels)
        log.info("  batch %s", plan.describe())
        log.info("  optimizer steps: %d (%d per epoch, %d epoch(s)); warm-up %d; %d examples per epoch", max_steps,
                 steps_per_epoch, num_epochs, warmup, steps_per_epoch * plan.global_batch)

        # ------------------------------------------------------------------ resume
        state = TrainerState()
        checkpoints_dir = self.work_dir / "checkpoints"
        resume = self.options.resume
        if resume:
            ckpt = latest_checkpoint(checkpoints_dir) if resume == "latest" else Path(resume)
            if ckpt is None or not (ckpt / "trainer_state.json").is_file():
                raise DataError(f"no checkpoint to resume from in {checkpoints_dir if resume == 'latest' else ckpt}; "
                                f"start without --resume: {self.fix_hint}")
            acc.load_state(str(ckpt))
            state = TrainerState(**json.loads((ckpt / "trainer_state.json").read_text()))
            objective.load_state_dict(state.objective)
            log.info("resumed from %s at step %d", ckpt, state.completed_steps)
        starting_epoch, skip = divmod(state.completed_steps * plan.accumulation, micro_per_epoch)

        def save_checkpoint() -> None:
            ckpt = checkpoints_dir / f"step_{state.completed_steps}"
            acc.save_state(str(ckpt))
            if acc.is_main_process:
                state.objective = objective.state_dict()
                (ckpt / "trainer_state.json").write_text(json.dumps(dataclasses.asdict(state)))
                for old in sorted(checkpoints_dir.glob("step_*"), key=_step_of)[:-s.keep_checkpoints]:
                    shutil.rmtree(old, ignore_errors=True)
            acc.wait_for_everyone()

        # ------------------------------------------------------------------ train
        progress = tqdm(range(max_steps), initial=state.completed_steps, desc=task.name,
                        disable=not acc.is_local_main_process)
        step_losses: list[float] = []
        parts_log: dict[str, list[float]] = {}
        examples_seen = 0
        train_seconds = 0.0
        stop = state.completed_steps >= max_steps
        micro_losses: list[float] = []
        micro_parts: list[dict[str, float]] = []
        model.train()
        for epoch in range(starting_epoch, num_epochs):
            if stop:
                break
            sampler.set_epoch(epoch)
            sampler.skip = skip if epoch == starting_epoch else 0
            t_epoch = time.perf_counter()
            for micro, batch in enumerate(train_loader, 1):
                batch = self.to_device(batch)
                examples_seen += int(batch["input_ids"].size(0))
                last = micro % plan.accumulation == 0
                with contextlib.nullcontext() if last else acc.no_sync(model):
                    loss = objective(model, batch)
                    acc.backward(loss / plan.accumulation)
                micro_losses.append(float(loss.detach()))
                micro_parts.append({k: float(v.detach()) for k, v in (objective.parts or {}).items()})
                if not last:
                    continue
                if s.max_grad_norm > 0:
                    acc.clip_grad_norm_(model.parameters(), s.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad()
                state.completed_steps += 1
                step_losses.append(float(np.mean(micro_losses)))
                for k in micro_parts[0]:
                    parts_log.setdefault(k, []).append(float(np.mean([p[k] for p in micro_parts])))
                micro_losses, micro_parts = [], []
                averager.update(acc.unwrap_model(model))
                progress.update(1)
                if state.completed_steps % s.log_every == 0 or state.completed_steps == max_steps:
                    mean_loss = acc.reduce(torch.tensor(np.mean(step_losses[-s.log_every:]), device=acc.device),
                                           "mean").item()
                    progress.set_postfix(loss=f"{mean_loss:.4f}")
                    if s.tensorboard:
                        acc.log({"train/loss": mean_loss, "train/lr": lr_scheduler.get_last_lr()[0],
                                 **{f"train/{k}": float(np.mean(v[-s.log_every:])) for k, v in parts_log.items()}},
                                step=state.completed_steps)
                done = state.completed_steps >= max_steps
                if val_loader is not None and (state.completed_steps % eval_every == 0 or done):
                    train_seconds += time.perf_counter() - t_epoch
                    metrics, _, _ = self.evaluate(model, val_loader, n_labels, task.extra_metrics)
                    log.info("step %d: validation %s", state.completed_steps, _format(metrics))
                    if s.tensorboard:
                        acc.log({f"validation/{k}": v for k, v in metrics.items()}, step=state.completed_steps)
                    if metrics["macro_f1"] > state.best_f1:
                        state.best_f1, state.best_step, state.evals_since_best = (metrics["macro_f1"],
                                                                                  state.completed_steps, 0)
                        averager.keep_best(acc.unwrap_model(model))
                    else:
                        state.evals_since_best += 1
                        if s.early_stopping_patience and state.evals_since_best >= s.early_stopping_patience:
                            log.info("early stopping: no better validation macro-F1 in %d evaluations",
                                     state.evals_since_best)
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
        acc.wait_for_everyone()
        unwrapped = acc.unwrap_model(model)
        chosen, val_metrics, val_logits, val_labels = "final", {}, None, None
        if val_loader is not None:
            candidates: dict[str, Any] = {"final": None}
            if averager.enabled:
                candidates["ema"] = averager.ema
            if averager.best is not None and state.best_step != state.completed_steps:
                candidates["best"] = averager.best
            current = averager.snapshot(unwrapped)
            if averager.initial is not None:
                # WiSE-FT (Wortsman et al. 2022): interpolating towards the starting point keeps some
                # of what fine-tuning forgets.
                for base in [k for k in ("final", "ema") if k in candidates]:
                    trained = candidates[base] if candidates[base] is not None else current
                    for alpha in task.wise_alphas:
                        if alpha < 1:
                            candidates[f"wise{alpha:g}-{base}"] = averager.interpolate(trained, alpha)
            scores = {}
            for name, weights in candidates.items():
                averager.load(unwrapped, weights if weights is not None else current)
                metrics, logits, labels = self.evaluate(model, val_loader, n_labels, task.extra_metrics)
                scores[name] = (metrics["macro_f1"], metrics["accuracy"], metrics, logits, labels)
                log.info("candidate weights %-14s: validation %s", name, _format(metrics))
            chosen = max(scores, key=lambda k: scores[k][:2])
            _, _, val_metrics, val_logits, val_labels = scores[chosen]
            averager.load(unwrapped, candidates[chosen] if candidates[chosen] is not None else current)
        temperature = 1.0
        if s.calibrate_temperature and val_logits is not None:
            # Without errors on validation the NLL falls as T -> 0: nothing to calibrate against.
            if len(val_logits) >= 2 * n_labels and val_metrics["accuracy"] < 1.0:
                temperature = fit_temperature(val_logits, val_labels)
            else:
                log.warning("validation set too small or without errors (%d examples): temperature left at 1",
                            len(val_logits))
        unwrapped.temperature.fill_(temperature)
        log.info("kept the %s weights; temperature %.3f", chosen, temperature)

        samples_seen = int(acc.reduce(torch.tensor(examples_seen, device=acc.device), "sum").item())
        meta = {
            **task.meta,
            "steps": state.completed_steps,
            "optimizer_steps": state.completed_steps,
            "epochs": round(state.completed_steps / steps_per_epoch, 3),
            "chosen_weights": chosen,
            "validation": val_metrics,
            "num_processes": acc.num_processes,
            "processes": acc.num_processes,
            "global_batch_size": plan.global_batch,
            "effective_batch_size": plan.global_batch,
            "per_process_batch_size": plan.per_process,
            "gradient_accumulation_steps": plan.accumulation,
            "train_examples": len(task.train_dataset),
            "settings": dataclasses.asdict(s),
        }
        rank_stats = {
            "rank": acc.process_index,
            "num_processes": acc.num_processes,
            "steps": state.completed_steps,
            "losses": step_losses,
            "loss_parts": parts_log,
            "examples": examples_seen,
            "param_checksum": parameter_checksum(unwrapped),
            "threads": torch.get_num_threads(),
        }
        ranks_dir = self.work_dir / "ranks"
        ranks_dir.mkdir(parents=True, exist_ok=True)
        (ranks_dir / f"rank{acc.process_index}.json").write_text(json.dumps(rank_stats))
        acc.wait_for_everyone()
        if acc.is_main_process:
            unwrapped.save_pretrained(task.output_dir, training=meta, validation=task.validation_rows)
        acc.wait_for_everyone()
        wall_seconds = time.perf_counter() - self.t_start

        test_metrics, test_seconds = None, 0.0
        if task.test_dataset is not None and len(task.test_dataset):  # once, after every choice was made
            t0 = time.perf_counter()
            test_metrics, _, _ = self.evaluate(model, self.eval_loader(task.test_dataset, task.collator), n_labels,
                                               task.extra_metrics)
            test_seconds = time.perf_counter() - t0
            log.info("test %s (%d examples)", _format(test_metrics), len(task.test_dataset))

        results = {
            **meta,
            **task.results,
            "output_dir": str(task.output_dir),
            "fingerprint": unwrapped.fingerprint if acc.is_main_process else None,
            "temperature": temperature,
            "test": test_metrics,
            "wall_seconds": round(wall_seconds, 2),     # start to saved model
            "test_seconds": round(test_seconds, 2),
            "train_seconds": round(train_seconds, 2),   # the training loop alone (no evaluation, no checkpoints)
            "samples_seen": samples_seen,
            "train_examples_seen": samples_seen,
            "train_examples_per_second": round(samples_seen / train_seconds, 2) if train_seconds else None,
            "threads_per_process": torch.get_num_threads(),
        }
        if acc.is_main_process:
            (self.work_dir / "results.json").write_text(json.dumps(results, indent=2, default=str))
            log.info("saved the model to %s (%d steps, %d examples seen, %.0f s of training)", task.output_dir,
                     state.completed_steps, samples_seen, train_seconds)
        acc.wait_for_everyone()
        if s.tensorboard:
            acc.end_training()
        return results


def _format(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k != "n" and isinstance(v, float))


# ---------------------------------------------------------------------- pieces

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


def param_groups(model: Any, settings: LoopSettings) -> list[dict[str, Any]]:
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
        groups.setdefault((lr, 0.0 if no_decay else settings.weight_decay), []).append(p)
    return [{"params": ps, "lr": lr, "weight_decay": wd} for (lr, wd), ps in groups.items()]


def _depth_from_top(name: str, n_layers: int) -> int:
    # encoder.layer.{i}. -> n_layers - 1 - i; embeddings -> n_layers; anything above the layers -> 0
    parts = name.split(".")
    for i, part in enumerate(parts[:-1]):
        if part in ("layer", "layers") and parts[i + 1].isdigit():
            return max(0, n_layers - 1 - int(parts[i + 1]))
    return n_layers if "embeddings" in name else 0


def parameter_checksum(model: Any) -> str:
    """sha256 over every parameter and buffer: equal on all processes when DDP kept them in sync."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def latest_checkpoint(directory: Path) -> Path | None:
    found = sorted((p for p in Path(directory).glob("step_*") if (p / "trainer_state.json").is_file()), key=_step_of)
    return found[-1] if found else None


def _step_of(path: Path) -> int:
    try:
        return int(path.name.split("_", 1)[1])
    except (IndexError, ValueError):
        return -1
