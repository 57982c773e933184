"""Operators' corrections as training data: export, diff against the pack, merge into training, and
the regression set of corrected turns.

    python -m training.feedback --config configs/demo.yaml export [--out DIR]   # corrections only
    python -m training.feedback --config configs/demo.yaml diff                 # what they add or change
    python -m training.feedback --config configs/demo.yaml prepare              # the merged training data

What each correction kind becomes (kinds: service/corrections.py):

| kind           | intents (`{"text", "intent"}`)                  | FAQ (`{"id", "question", "answer", "paraphrases"}`) |
|----------------|-------------------------------------------------|------------------------------------------------------|
| `intent`       | the message under the corrected intent          | -                                                    |
| `out_of_scope` | the message under `out_of_scope`                | -                                                    |
| `faq`          | the message under the FAQ's topic (`faq_<category>`) | the message added to the entry's paraphrases    |
| `paraphrase`   | the wording under the FAQ's topic               | the wording added to the entry's paraphrases          |
| `new_faq`      | -                                               | a new entry `new-<id>` (the turn's message, if any, as a paraphrase) |

Weighting: the corrected examples are few against the pack's hundreds, and each one is a message the
served model got wrong, so the merged intents file holds each of them `training.corrections_weight`
times (default 3); a pack example with the same text under another intent is dropped (the operator's
label wins). FAQ wordings are added once (the contrastive pairs already pair them with every other
wording of the entry). `training.corrections: false` trains on the pack alone.

The merged files go to `<artifacts>/training_data/` (intents.jsonl, faq.jsonl, manifest.json);
`training.train` writes them before it loads its data and records the intents file in the model
(distillation reads it from there), and `retrieval.build` indexes that FAQ file when it exists. With
no corrections (or corrections off) the folder is removed and the pack is used as it is.

`regression_dialogs(corrections)` turns every corrected turn into a one-turn dialog in the
evaluator's format (evaluation/dialog.py), so a gate can check that what operators fixed stays fixed.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from core.atomic import atomic_write_json, atomic_write_text
from core.cli import add_config_arguments, config_from_args, run_cli, setup_logging
from core.config import Config
from core.jsonl import jsonl_text, read_jsonl, write_jsonl
from retrieval.build import CORRECTED_DATA_DIR
from service import corrections as corr
from service.domain import FAQ_PREFIX

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"


@dataclass
class Export:
    """Corrections as training data: intent rows (each once), and FAQ records that are new or changed
    (a changed record is the pack's with the added paraphrases), with where each addition came from."""
    intents: list[dict[str, str]] = field(default_factory=list)
    faq: list[dict[str, Any]] = field(default_factory=list)
    added_paraphrases: dict[str, list[str]] = field(default_factory=dict)   # faq id -> wordings added
    new_faq_ids: list[str] = field(default_factory=list)
    origin: dict[str, str] = field(default_factory=dict)                     # text key -> "correction N (kind) by X"
    skipped: list[str] = field(default_factory=list)


@dataclass
class TrainingData:
    """Where training reads its intents and FAQ from, and how many corrections they hold."""
    intents: Path
    faq: Path
    corrections: int = 0
    weight: int = 0
    digest: str = ""


def _key(text: str) -> str:
    return " ".join(str(text).lower().split())


def _line(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False)


# --------------------------------------------------------------------------- reading corrections

def read_corrections(config: Config, store: Any = None) -> list[dict[str, Any]]:
    """The store's active corrections (later labels of a turn supersede earlier ones). The store is
    `store`, else the config's (store.url, or the SQLite file in the artifacts folder when it exists:
    a deployment that never served has none, and none is created)."""
    if store is None:
        from service.store import Store

        if config.store.url:
            target: Any = config.store.url
        elif config.layout.store.is_file():
            target = config.layout.store
        else:
            return []
        store = Store(target, pool_size=2)
        try:
            return corr.active_corrections(store.corrections())
        finally:
            store.close()
    return corr.active_corrections(store.corrections())


# --------------------------------------------------------------------------- export

def _faq_intent(record: dict[str, Any], pack_intents: frozenset[str]) -> str | None:
    category = record.get("category")
    intent = f"{FAQ_PREFIX}{category}" if category else None
    return intent if intent in pack_intents else None


def export_corrections(corrections: Sequence[dict[str, Any]], pack: corr.Pack) -> Export:
    """What the (active) corrections add to the pack, in the pack's formats."""
    out = Export()
    pack = pack.with_new_faqs(corrections)
    rows: dict[str, dict[str, str]] = {}

    def add_row(text: str, intent: str, c: dict[str, Any]) -> None:
        rows[_key(text)] = {"text": text, "intent": intent}   # a later correction of the same text wins
        out.origin[_key(text)] = f"correction {c['id']} ({c['kind']}) by {c.get('author', '?')}"

    def add_paraphrase(faq_id: str, text: str) -> None:
        record = pack.faqs[faq_id]
        known = {_key(record["question"]), *(_key(p) for p in record.get("paraphrases") or []),
                 *(_key(p) for p in out.added_paraphrases.get(faq_id, []))}
        if _key(text) not in known:
            out.added_paraphrases.setdefault(faq_id, []).append(text)

    for c in corrections:
        p, kind = c.get("payload") or {}, c.get("kind")
        text = p.get("text")
        if kind == corr.INTENT and text:
            add_row(text, p["intent"], c)
        elif kind == corr.OUT_OF_SCOPE and text:
            if corr.OUT_OF_SCOPE_INTENT in pack.intents:
                add_row(text, corr.OUT_OF_SCOPE_INTENT, c)
            else:
                out.skipped.append(f"correction {c['id']}: the pack has no '{corr.OUT_OF_SCOPE_INTENT}' intent")
        elif kind in (corr.FAQ, corr.PARAPHRASE) and text:
            faq_id = p.get("faq_id")
            if faq_id not in pack.faqs:
                out.skipped.append(f"correction {c['id']}: FAQ {faq_id!r} is no longer in the pack")
                continue
            add_paraphrase(faq_id, text)
            intent = _faq_intent(pack.faqs[faq_id], pack.intents)
            if intent:
                add_row(text, intent, c)
        elif kind == corr.NEW_FAQ:
            entry = corr.new_faq_entry(c)
            if p.get("text") and _key(p["text"]) not in {_key(x) for x in [entry["question"], *entry["paraphrases"]]}:
                entry["paraphrases"].append(p["text"])
            out.faq.append(entry)
            out.new_faq_ids.append(entry["id"])
    out.intents = list(rows.values())
    for faq_id, added in out.added_paraphrases.items():
        if faq_id in out.new_faq_ids:
            entry = next(e for e in out.faq if e["id"] == faq_id)
            entry["paraphrases"] += added
        else:
            record = dict(pack.faqs[faq_id])
            record["paraphrases"] = list(record.get("paraphrases") or []) + added
            out.faq.append(record)
    return out


def write_export(export: Export, out_dir: str | Path) -> list[Path]:
    """intents.jsonl and faq.jsonl of an export in `out_dir` (each written atomically)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return [write_jsonl(out / "intents.jsonl", export.intents), write_jsonl(out / "faq.jsonl", export.faq)]


# --------------------------------------------------------------------------- merge and diff

def merge(pack_intents: Sequence[dict[str, Any]], pack_faq: Sequence[dict[str, Any]], export: Export,
          weight: int) -> tuple[list[dict[str, str]], list[dict[str, Any]], list[dict[str, str]]]:
    """(merged intent rows, merged FAQ records, pack rows dropped): the pack's intent rows minus those
    whose text an operator labelled otherwise, then each corrected row `weight` times; the pack's FAQ
    with changed records replaced (in place) and new ones appended."""
    corrected = {_key(r["text"]): r["intent"] for r in export.intents}
    kept, dropped = [], []
    for r in pack_intents:
        label = corrected.get(_key(r["text"]))
        (dropped if label is not None and label != r["intent"] else kept).append(
            {"text": str(r["text"]), "intent": str(r["intent"])})
    intents = kept + [dict(r) for r in export.intents for _ in range(max(1, int(weight)))]
    changed = {str(r["id"]): r for r in export.faq}
    faq = [changed.pop(str(r["id"]), r) for r in pack_faq]
    faq += [r for r in export.faq if str(r["id"]) in changed]
    return intents, faq, dropped


def diff_lines(export: Export, pack_intents: Sequence[dict[str, Any]],
               intents_name: str = "intents.jsonl", faq_name: str = "faq.jsonl") -> list[str]:
    """What the corrections add to or change in the pack, as a readable diff: `+` added, `-` removed,
    `~` a record that changes."""
    by_text = {_key(r["text"]): str(r["intent"]) for r in pack_intents}
    lines = [f"--- {intents_name} (pack)", f"+++ {intents_name} (with corrections)"]
    if not export.intents:
        lines.append("  (no change)")
    for r in export.intents:
        before = by_text.get(_key(r["text"]))
        note = f"  # {export.origin.get(_key(r['text']), '')}"
        if before == r["intent"]:
            lines.append(f"  {_line(r)}  # already in the pack")
        elif before is not None:
            lines.append(f"- {_line({'text': r['text'], 'intent': before})}")
            lines.append(f"+ {_line(r)}{note}")
        else:
            lines.append(f"+ {_line(r)}{note}")
    lines += [f"--- {faq_name} (pack)", f"+++ {faq_name} (with corrections)"]
    if not export.faq:
        lines.append("  (no change)")
    for r in export.faq:
        if r["id"] in export.new_faq_ids:
            lines.append(f"+ {_line(r)}")
        else:
            lines.append(f"~ {r['id']}: {r['question']}")
            lines += [f"+     paraphrase: {_line(p)}" for p in export.added_paraphrases.get(r["id"], [])]
    lines += [f"! {s}" for s in export.skipped]
    return lines


# --------------------------------------------------------------------------- training data

def corrected_data_dir(config: Config) -> Path:
    return Path(config.artifacts_dir) / CORRECTED_DATA_DIR


def prepare_training_data(config: Config, store: Any = None,
                          corrections: Sequence[dict[str, Any]] | None = None) -> TrainingData:
    """The intents and FAQ files training should read: the pack's, or (with `training.corrections` on
    and corrections stored) the pack merged with them, written to `<artifacts>/training_data/`."""
    settings = config.training
    plain = TrainingData(Path(config.data.intents), Path(config.data.faq))
    folder = corrected_data_dir(config)
    if corrections is None:
        corrections = read_corrections(config, store) if settings.corrections else []
    if not settings.corrections or not corrections:
        if folder.exists():
            shutil.rmtree(folder)   # stale merged data would otherwise keep feeding the index
            log.info("no operator corrections to merge: removed %s", folder)
        return plain
    pack = corr.Pack.from_config(config)
    export = export_corrections(corrections, pack)
    pack_intents = read_jsonl(config.data.intents, ("text", "intent"), "intent example")
    pack_faq = read_jsonl(config.data.faq, ("id", "question", "answer"), "FAQ entry")
    intents, faq, dropped = merge(pack_intents, pack_faq, export, settings.corrections_weight)
    intents_text, faq_text = jsonl_text(intents), jsonl_text(faq)
    digest = hashlib.sha256((intents_text + faq_text).encode()).hexdigest()[:16]
    folder.mkdir(parents=True, exist_ok=True)
    data = TrainingData(folder / "intents.jsonl", folder / "faq.jsonl", len(corrections),
                        settings.corrections_weight, digest)
    atomic_write_text(data.intents, intents_text)
    atomic_write_text(data.faq, faq_text)
    atomic_write_json(folder / MANIFEST, {
        "corrections": len(corrections), "correction_ids": [c["id"] for c in corrections],
        "weight": settings.corrections_weight, "intent_rows_added": len(export.intents),
        "pack_rows_dropped": len(dropped), "faq_changed": len(export.added_paraphrases),
        "faq_new": len(export.new_faq_ids), "sha256": digest, "skipped": export.skipped,
        "pack": {"intents": str(config.data.intents), "faq": str(config.data.faq)}})
    log.info("training data: the pack plus %d correction(s) (%d intent example(s) x%d, %d FAQ entr(ies) "
             "changed, %d new, %d pack example(s) relabelled) in %s", len(corrections), len(export.intents),
             settings.corrections_weight, len(export.added_paraphrases), len(export.new_faq_ids), len(dropped),
             folder)
    return data


# --------------------------------------------------------------------------- regression dialogs
# Lives in service.corrections so the evaluation layer (the gate) can use it without importing training.
regression_dialogs = corr.regression_dialogs


# --------------------------------------------------------------------------- CLI

def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.feedback",
        description="Operators' corrections as training data: export them, diff them against the pack, "
                    "or write the merged training data.")
    add_config_arguments(parser)
    sub = parser.add_subparsers(dest="command", metavar="{export,diff,prepare}")
    export_p = sub.add_parser("export", help="write the corrections as intents.jsonl and faq.jsonl")
    export_p.add_argument("--out", default=None, help="output folder (default: <artifacts>/feedback)")
    sub.add_parser("diff", help="show what the corrections add to or change in the pack")
    sub.add_parser("prepare", help="write the pack merged with the corrections to <artifacts>/training_data "
                                   "(what training reads; then `python -m retrieval.build` indexes the FAQ)")
    args = parser.parse_args(argv)
    if not args.command:
        parser.error("choose a command: export, diff or prepare")
    setup_logging(args.verbose)
    config = config_from_args(args)
    corrections = read_corrections(config)
    if args.command == "prepare":
        data = prepare_training_data(config, corrections=corrections)
        print(f"{data.corrections} correction(s) merged (weight {data.weight}): {data.intents}, {data.faq}"
              if data.corrections else "no corrections: training uses the pack as it is")
        return 0
    pack = corr.Pack.from_config(config)
    export = export_corrections(corrections, pack)
    if args.command == "export":
        paths = write_export(export, args.out or Path(config.artifacts_dir) / "feedback")
        print(f"{len(corrections)} correction(s): {len(export.intents)} intent example(s) -> {paths[0]}, "
              f"{len(export.faq)} FAQ entr(ies) ({len(export.new_faq_ids)} new) -> {paths[1]}")
        for s in export.skipped:
            print(f"skipped: {s}")
        return 0
    pack_intents = read_jsonl(config.data.intents, ("text", "intent"), "intent example")
    print("\n".join(diff_lines(export, pack_intents, Path(config.data.intents).name, Path(config.data.faq).name)))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
