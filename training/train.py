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

Outputs: the model folder (`--output-dir`, default `<artifacts>/teacher`) with the held-out
validation rows, and a work folder (`--work-dir`, default `<artifacts>/runs/<model folder name>`)
with checkpoints, TensorBoard logs, `results.json` and one `ranks/rank<N>.json` per process.
The loop itself (batches, N processes, checkpoints, choice of weights) is `training.loop`; this
module holds only the objective and its data. `train(config, options)` is the function to call.
"""
from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from core.cli import add_config_arguments, config_from_args, run_cli
from core.config import Config
from core.datafiles import TEACHER_FILES, training_file_hashes
from core.errors import ConfigError
from core.layout import TEACHER
from training.loop import Loop, Objective, RunOptions, Task, add_run_arguments
from training.warm import warm_start

logger = logging.getLogger("training.train")


@dataclass
class TrainOptions(RunOptions):
    """Options of a fine-tuning run (see `RunOptions`)."""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="accelerate launch -m training.train",
        description="Fine-tune the teacher SupportModel on a config's intents and FAQ (one or many processes).")
    add_config_arguments(parser)
    add_run_arguments(parser, section="training", default_output=TEACHER)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    train(config_from_args(args), TrainOptions.from_args(args))
    return 0


# ---------------------------------------------------------------------- the objective

class PairStream:
    """Contrastive pair batches, one per call, cycling over their own epochs; the position is
    checkpointed (`batches`), so a resumed run continues with the same pairs."""

    def __init__(self, loop: Loop, loader: Any) -> None:
        self.loop, self.loader = loop, loader
        self.sampler = loader.batch_sampler
        self.batches = 0
        self._iter: Any = None
        self._per_epoch = self.sampler.full_batches()

    def next(self) -> dict[str, Any]:
        if self._iter is None:
            epoch, done = divmod(self.batches, self._per_epoch)
            self.sampler.set_epoch(epoch)
            self.sampler.skip = done
            self._iter = iter(self.loader)
        batch = next(self._iter)
        self.batches += 1
        if self.batches % self._per_epoch == 0:
            self._iter = None
        return self.loop.to_device(batch)


class TeacherObjective(Objective):
    """Intent cross-entropy (label smoothing) + `contrastive_weight` x in-batch contrastive loss on FAQ
    pairs + `intent_pair_weight` x contrastive loss on same-intent pairs + `anchor_weight` x KL to
    the frozen-embedding regression. One forward pass for intents and pairs: DDP sees one graph."""

    def __init__(self, settings: Any, pad_id: int, pairs: PairStream | None = None, anchor_logits: Any = None) -> None:
        from training.losses import (
            InBatchContrastiveLoss,
            IntentClassificationLoss,
            SoftTargetDistillationLoss,
        )

        self.s = settings
        self.pad_id = pad_id
        self.pairs = pairs
        self.anchor_logits = anchor_logits
        self.intent_loss = IntentClassificationLoss(settings.label_smoothing)
        self.anchor_loss = SoftTargetDistillationLoss(settings.anchor_temperature)
        self.contrastive_loss = InBatchContrastiveLoss(settings.contrastive_scale)
        self.parts = {}

    def __call__(self, model: Any, batch: dict[str, Any]) -> Any:
        s = self.s
        labels, rows = batch.pop("labels"), batch.pop("idx")
        n_intent = labels.size(0)
        groups = None
        if self.pairs is not None:
            pair_batch = self.pairs.next()
            groups = pair_batch.pop("group")
            batch = concat_padded([batch, _side(pair_batch, "anchor"), _side(pair_batch, "positive")], self.pad_id)
        out = model(**batch)
        loss = self.intent_loss(out.logits[:n_intent], labels)
        if s.intent_pair_weight > 0:
            # the sampler put two examples of one intent at i and i + half
            half = n_intent // 2
            emb = out.embeddings[:n_intent]
            loss = loss + s.intent_pair_weight * self.contrastive_loss(emb[:half], emb[half:2 * half], labels[:half])
        if self.anchor_logits is not None:
            loss = loss + s.anchor_weight * self.anchor_loss(out.logits[:n_intent], self.anchor_logits[rows])
        if groups is not None:
            n_pairs = groups.size(0)
            emb = out.embeddings[n_intent:]
            loss = loss + s.contrastive_weight * self.contrastive_loss(emb[:n_pairs], emb[n_pairs:], groups)
        return loss

    def state_dict(self) -> dict[str, Any]:
        return {"pair_batches": self.pairs.batches if self.pairs is not None else 0}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.pairs is not None:
            self.pairs.batches = int(state.get("pair_batches", 0))


# ---------------------------------------------------------------------- the run

def train(config: Config, options: TrainOptions | None = None) -> dict[str, Any]:
    """Fine-tune the teacher for `config` (on however many processes this was launched on);
    returns what results.json holds."""
    options = options or TrainOptions()
    output_dir, work_dir = options.folders(config.layout.teacher, config.layout)
    settings, init_dir = warm_start(config.training, output_dir, Path(config.path).parent)
    max_length = settings.max_length or config.encoder.max_length
    encoder_name = settings.encoder or config.encoder.name
    fix_hint = f"accelerate launch -m training.train --config {config.path}"

    # Heavy imports after the cheap checks, so `--help` and config errors answer at once.
    import torch
    from accelerate.utils import broadcast
    from tqdm.auto import tqdm
    from transformers import DataCollatorWithPadding

    from runtime.folder import read_validation_split
    from runtime.model import SupportModel
    from training.data import (
        IntentPairBatchSampler,
        LengthGroupedBatchSampler,
        PairCollator,
        faq_pairs,
        load_faq,
        load_intent_splits,
        load_intents,
        rows_of,
        tokenize_intents,
        tokenize_pairs,
        with_augmented_rows,
        with_dialog_paraphrases,
    )
    from training.dialog_examples import with_dialog_rows
    from training.feedback import prepare_training_data

    loop = Loop(settings, options, work_dir=work_dir, name="training", fix_hint=fix_hint)
    acc, log = loop.accelerator, loop.log
    if settings.intent_pair_weight > 0 and loop.plan.per_process % 2:
        raise ConfigError(f"training.batch_size {settings.batch_size}: with intent_pair_weight each process's batch "
                          f"({loop.plan.per_process}) must be even (it holds pairs)")

    # ------------------------------------------------------------------ data
    # Operators' corrections merged into the pack (training.feedback); one process per machine writes them.
    with acc.local_main_process_first():
        data = prepare_training_data(config)
    intents_source = options.train_file or data.intents
    # A warm start keeps its starting model's validation rows as validation: they stay unseen.
    held_out = read_validation_split(init_dir) if init_dir and not options.validation_file else None
    splits = load_intent_splits(intents_source, validation_source=options.validation_file, held_out=held_out,
                                val_fraction=settings.val_fraction, seed=settings.seed,
                                min_examples=settings.min_examples_per_intent)
    test_set = load_intents(options.test_file, known_labels=splits.labels) if options.test_file else None
    # customers' own wordings from the written training dialogs (training/dialog_examples.py): training rows only
    splits.train, from_dialogs = with_dialog_rows(splits.train, config, splits.labels)
    if from_dialogs:
        log.info("  %d intent rows from the written training dialogs", from_dialogs)
    augmented = 0
    if settings.augment_copies > 0:   # noisy copies of the training rows only: validation stays as written
        splits.train, augmented = with_augmented_rows(splits.train, settings.augment_copies, settings.seed)
        log.info("  %d augmented training rows (typos, informal spelling, prefixes)", augmented)
    pairs = None
    if settings.contrastive_weight > 0 and not options.no_faq:
        records = with_dialog_paraphrases(config, load_faq(data.faq))   # + customers' wordings from the written dialogs
        pairs = faq_pairs(records, max_pairs_per_faq=settings.max_pairs_per_faq, seed=settings.seed,
                          augment_copies=settings.augment_copies)
    pair_plan = None
    if pairs is not None:
        # Fewer pairs than a batch: the largest batch that still divides over the processes.
        unit = acc.num_processes * settings.gradient_accumulation_steps
        pair_batch = min(settings.contrastive_batch_size, len(pairs) // unit * unit)
        if pair_batch < 2 * unit:
            log.warning("the FAQ has too few paraphrase pairs (%d) for a contrastive batch: training on intents only",
                        len(pairs))
            pairs = None
        else:
            pair_plan = loop.batch_plan(pair_batch, "training.contrastive_batch_size")

    head_kept = False
    if init_dir is not None:
        model = SupportModel.from_pretrained(init_dir, config_path=config.path)
        head_kept = model.labels == splits.labels
        if not head_kept:   # intents added or removed since: keep the encoder, fit a new head below
            log.warning("warm start from %s: its intents differ from the data's, the intent head starts afresh", init_dir)
            model = SupportModel(model.encoder, model.tokenizer, splits.labels, max_length=max_length,
                                 base_encoder=model.base_encoder)
        model.metadata, model.fingerprint = {}, ""
        log.info("warm start from %s: %.2g epochs, learning rates x %.2g", init_dir, settings.epochs,
                 settings.warm_lr_scale)
    else:
        model = SupportModel.from_encoder(encoder_name, splits.labels, max_length=max_length)
    tokenizer = model.tokenizer
    cache_dir = config.artifacts_dir / "cache" / "tokenized"
    with acc.local_main_process_first():  # one process per machine tokenises and caches; the others read it
        train_ds = tokenize_intents(splits.train, tokenizer, max_length, splits.label2id, cache_dir)
        val_ds = tokenize_intents(splits.validation, tokenizer, max_length, splits.label2id, cache_dir)
        test_ds = tokenize_intents(test_set, tokenizer, max_length, splits.label2id, cache_dir) if test_set else None
        pair_ds = tokenize_pairs(pairs, tokenizer, max_length, cache_dir) if pairs is not None else None

    collator = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=loop.pad_to_multiple_of)
    model_columns = [c for c in ("input_ids", "attention_mask", "token_type_ids", "labels") if c in train_ds.column_names]
    train_ds = train_ds.add_column("idx", list(range(len(train_ds))))  # row ids: the anchor predictions are per row
    train_lengths = list(train_ds["length"])
    window = 64 if settings.length_grouping else 1
    if settings.intent_pair_weight > 0:
        base_sampler = IntentPairBatchSampler(list(train_ds["labels"]), train_lengths, loop.plan.micro_global,
                                              seed=settings.seed, window=window, drop_last=True)
    else:
        base_sampler = LengthGroupedBatchSampler(train_lengths, loop.plan.micro_global, seed=settings.seed,
                                                 window=window, drop_last=True)
    pair_stream = None
    if pair_ds is not None:
        pair_sampler = LengthGroupedBatchSampler(list(pair_ds["length"]), pair_plan.micro_global, seed=settings.seed + 1,
                                                 drop_last=True)
        pair_stream = PairStream(loop, loop.sharded_loader(pair_ds.remove_columns(["length"]), pair_sampler,
                                                           PairCollator(tokenizer), pair_plan, whole_steps=False))

    # ------------------------------------------------------------------ head initialisation
    head_init_seconds = 0.0
    anchor_logits = None  # [n_train, n_labels]: the frozen-embedding regression's logits, per training row
    use_anchor = settings.anchor_weight > 0
    if use_anchor and head_kept:
        log.warning("training.anchor_weight is not used in a warm start (its anchor is the fresh head's regression)")
        use_anchor = False
    # On resume the head comes from the checkpoint, but the anchor is recomputed (deterministically).
    if settings.head_init == "logreg" and not head_kept and (not options.resume or use_anchor):
        t0 = time.perf_counter()
        model.to(acc.device)
        embs, ids, rows = [], [], []
        model.eval()
        with torch.inference_mode():
            for batch in tqdm(loop.eval_loader(train_ds, collator), desc="frozen embeddings",
                              disable=not acc.is_local_main_process):
                labels, idx = batch.pop("labels"), batch.pop("idx")
                emb, labels, idx = acc.gather_for_metrics((model.embed(**batch), labels, idx))
                embs.append(emb.float().cpu())
                ids.append(labels.cpu())
                rows.append(idx.cpu())
        if use_anchor:
            anchor_logits = torch.zeros(len(train_ds), len(splits.labels), device=acc.device)
        if acc.is_main_process:
            emb_all = torch.cat(embs)
            fit_acc = model.fit_head(emb_all.numpy(), torch.cat(ids).numpy(), C=settings.logreg_c)
            log.info("intent head initialised from a logistic regression on frozen embeddings (train acc %.4f)", fit_acc)
            if use_anchor:
                with torch.no_grad():
                    anchor_logits[torch.cat(rows).to(acc.device)] = model.intent_head(emb_all.to(acc.device)).float()
        # Every process starts from the main process's head (and anchor).
        with torch.no_grad():
            for p in model.intent_head.parameters():
                p.copy_(broadcast(p.data.contiguous(), from_process=0))
            if use_anchor:
                anchor_logits = broadcast(anchor_logits.contiguous(), from_process=0)
        head_init_seconds = time.perf_counter() - t0
        model.train()

    log.info("  %s contrastive pairs%s", len(pair_ds) if pair_ds is not None else "no",
             f" (batch {pair_plan.describe()})" if pair_plan else "")
    objective = TeacherObjective(settings, tokenizer.pad_token_id or 0, pair_stream,
                                 anchor_logits if use_anchor else None)
    task = Task(
        name="training", model=model, objective=objective,
        train_dataset=train_ds.select_columns(model_columns + ["idx"]), base_sampler=base_sampler, collator=collator,
        labels=splits.labels, output_dir=output_dir, validation_dataset=val_ds, test_dataset=test_ds,
        validation_rows=rows_of(splits.validation), wise_alphas=settings.wise_alphas,
        meta={"contrastive_pairs": len(pair_ds) if pair_ds is not None else 0,
              "intents_file": str(intents_source), "faq_file": str(data.faq), "corrections": data.corrections,
              "corrections_weight": data.weight, "data_sha256": data.digest,
              "data_files": training_file_hashes(config, TEACHER_FILES),
              "init_from": str(init_dir) if init_dir else None, "augmented_rows": augmented},
        results={"head_init_seconds": round(head_init_seconds, 2)},
    )
    return loop.run(task)


# ---------------------------------------------------------------------- helpers

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


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
