"""training.distill: a student distilled from a tiny teacher, in one process and in two.

The teacher is the shared random 2-layer BERT (`tiny_encoder_dir`) with an intent head fitted by
logistic regression on its frozen embeddings: a decisive teacher built in a second, no training run.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from core.cli import run_cli
from core.errors import ConfigError
from runtime.loading import load_support_model
from runtime.model import SupportModel
from tests.helpers import DISTILL_INTENTS as INTENTS
from tests.helpers import HELD_OUT, accelerate_launch, make_teacher, write_project
from training import distill


@pytest.fixture()
def project(tmp_path, tiny_encoder_dir) -> Path:
    config = write_project(tmp_path / "proj", tiny_encoder_dir)
    make_teacher(tiny_encoder_dir, tmp_path / "proj" / "artifacts" / "teacher")
    return config


def run(argv: list[str], capsys) -> tuple[int, str]:
    code = run_cli(distill.main, argv)
    return code, capsys.readouterr().err


# ---------------------------------------------------------------------------- settings and errors

def test_help_lists_the_flags(capsys):
    with pytest.raises(SystemExit) as exc:
        distill.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--config", "--teacher", "--output-dir", "--max-steps", "--resume"):
        assert flag in out


@pytest.mark.parametrize("section, message", [
    ({"student_layrs": 2}, "unknown key(s) in 'distill': student_layrs"),
    ({"temperature": 0}, "distill.temperature must be positive"),
    ({"layer_selection": "middle"}, "distill.layer_selection must be one of"),
    ({"batch_size": "many"}, "distill.batch_size must be an integer"),
    ({"kd_weight": 0, "ce_weight": 0, "embedding_weight": 0}, "must leave some loss"),
])
def test_bad_distill_config_is_one_line(tmp_path, tiny_encoder_dir, capsys, section, message):
    config = write_project(tmp_path / "p", tiny_encoder_dir, section)
    code, err = run(["--config", str(config)], capsys)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1
    assert message in err


def test_missing_teacher_names_the_training_command(tmp_path, tiny_encoder_dir, capsys):
    config = write_project(tmp_path / "p", tiny_encoder_dir)
    code, err = run(["--config", str(config)], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "no teacher model at" in err and "training.train --config" in err


def test_layer_selection():
    assert distill.select_layers(6, 3, "alternate") == [1, 3, 5]
    assert distill.select_layers(6, 3, "spread") == [0, 2, 5]
    assert distill.select_layers(6, 3, "bottom") == [0, 1, 2]
    assert distill.select_layers(6, 3, "top") == [3, 4, 5]
    assert distill.select_layers(12, 4, "alternate") == [2, 5, 8, 11]
    assert distill.select_layers(6, 2, "0,4") == [0, 4]
    assert distill.select_layers(2, 1, "alternate") == [1]
    with pytest.raises(ConfigError):
        distill.select_layers(6, 3, "0,9")
    with pytest.raises(ConfigError):
        distill.select_layers(2, 3, "bottom")


def test_distillation_texts_keep_validation_out_and_label_only_gold_rows():
    corpus = distill.distillation_texts(["where is my order", "hello there"], [0, 1], ["track my parcel"], [0],
                                        ["track my parcel", "Shipping time?", "where is my order"],
                                        augment_copies=2, augment_prob=0.5, seed=1)
    assert corpus.kinds.count("train") == 2 and corpus.kinds.count("validation") == 1
    faq = [corpus.texts[i] for i in corpus.indices("faq")]
    assert faq == ["Shipping time?"]        # validation and duplicate texts never become training texts
    assert all(corpus.labels[i] == -1 for i in corpus.indices("faq", "augmented"))
    assert corpus.key() == distill.distillation_texts(
        ["where is my order", "hello there"], [0, 1], ["track my parcel"], [0],
        ["track my parcel", "Shipping time?", "where is my order"], augment_copies=2, augment_prob=0.5, seed=1).key()


# ---------------------------------------------------------------------------- a real distillation

def test_distil_a_student_from_a_tiny_teacher(project, capsys, tmp_path):
    artifacts = project.parent / "artifacts"
    common = ["--config", str(project), "--max-steps", "16", "--set", "distill.eval_every=8",
              "--set", "distill.checkpoint_every=8"]
    code, err = run(common, capsys)
    assert code == 0, err
    student_dir, work = artifacts / "student", artifacts / "runs" / "student"
    ranks = json.loads((work / "ranks" / "rank0.json").read_text())
    results = json.loads((work / "results.json").read_text())

    # the distillation loss went down (each term is logged too)
    losses = np.array(ranks["losses"])
    assert len(losses) == 16 and losses[-4:].mean() < losses[:4].mean(), losses
    assert set(ranks["loss_parts"]) == {"kd", "ce", "embedding"}
    # half the teacher's layers, taken from the teacher; FAQ and augmented texts were used
    teacher = SupportModel.from_pretrained(artifacts / "teacher")
    student = SupportModel.from_pretrained(student_dir)
    assert student.encoder.config.num_hidden_layers == 1 and teacher.encoder.config.num_hidden_layers == 2
    assert results["student"]["layers"] == [1]
    assert results["texts"]["faq"] > 0 and results["texts"]["augmented"] > 0
    # the teacher's held-out rows: validated on, never trained on, saved with the student
    from runtime.folder import read_validation_split

    assert results["texts"]["validation"] == len(HELD_OUT) and results["texts"]["train"] == 30 - len(HELD_OUT)
    assert read_validation_split(student_dir) == HELD_OUT
    assert results["samples_seen"] == 16 * 8 and results["global_batch_size"] == 8
    assert results["teacher_fingerprint"] == teacher.fingerprint
    assert "teacher_agreement" in results["validation"]
    assert sum(p.numel() for p in student.parameters()) < sum(p.numel() for p in teacher.parameters())
    # a SupportModel folder like any other: loads the same three ways
    served = load_support_model(student_dir)
    probs, emb = served.predict(["where is my parcel", "hello"])
    assert probs.shape == (2, 3) and emb.shape == (2, 32)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    assert served.metadata["kind"] == "student"
    from runtime.embedder import Embedder

    assert Embedder(student_dir, max_length=24).fingerprint == student.fingerprint
    # the teacher's outputs were computed once and cached
    assert len(list(work.glob("teacher-outputs-*.npz"))) == 1

    # resume from step 8: continues at step 9 and ends where the full run did
    code, err = run(common + ["--resume", str(work / "checkpoints" / "step_8"), "--output-dir",
                              str(tmp_path / "resumed"), "--work-dir", str(tmp_path / "resumed_run")], capsys)
    assert code == 0, err
    resumed = json.loads((tmp_path / "resumed_run" / "ranks" / "rank0.json").read_text())
    assert resumed["steps"] == 16 and len(resumed["losses"]) == 8
    np.testing.assert_allclose(resumed["losses"], ranks["losses"][8:], rtol=1e-4)
    assert resumed["param_checksum"] == ranks["param_checksum"]


def _tiny_encoder(folder, tokenizer_from, layers: int, seed: int):
    """A 16-wide BERT encoder with `layers` layers saved in `folder`, with the teacher's tokenizer."""
    import shutil

    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    BertModel(BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=layers, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=64)).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tokenizer_from / name, folder / name)
    return folder


def test_a_student_of_another_encoder_aligns_similarities(project, capsys, tmp_path):
    """`student_encoder`: any Hugging Face encoder (here a 16-wide one): the similarity matrices are matched."""
    other = _tiny_encoder(tmp_path / "narrow", project.parent / "artifacts" / "teacher", layers=1, seed=1)
    code, err = run(["--config", str(project), "--max-steps", "4", "--set", f"distill.student_encoder={other}",
                     "--output-dir", str(tmp_path / "narrow_student")], capsys)
    assert code == 0, err
    student = SupportModel.from_pretrained(tmp_path / "narrow_student")
    assert student.dim == 16 and student.labels == sorted(INTENTS)
    results = json.loads((project.parent / "artifacts" / "runs" / "narrow_student" / "results.json").read_text())
    assert results["embedding_alignment"] == "similarity_matrix" and results["student"]["init"] == "pretrained"



@pytest.mark.parametrize("selection, kept", [("spread", [0, 3]), ("bottom", [0, 1]), ("1,3", [1, 3])])
def test_a_pretrained_student_encoder_is_cut_to_student_layers(project, tmp_path, selection, kept):
    """`student_encoder` with `student_layers`: the pretrained encoder keeps that many of its own
    layers, chosen by `layer_selection` (the teacher's are never copied into it)."""
    import torch
    from transformers import BertModel

    from core.config import DistillSettings

    teacher_dir = project.parent / "artifacts" / "teacher"
    other = _tiny_encoder(tmp_path / "deep", teacher_dir, layers=4, seed=2)
    pretrained = BertModel.from_pretrained(other)
    teacher = SupportModel.from_pretrained(teacher_dir)

    student, how = distill.build_student(teacher, DistillSettings(student_encoder=str(other), student_layers=2,
                                                                  layer_selection=selection))
    assert how == {"init": "pretrained", "student_encoder": str(other), "layers": kept, "encoder_layers": 4,
                   "layer_selection": selection}
    assert student.encoder.config.num_hidden_layers == 2 and len(student.encoder.encoder.layer) == 2
    assert student.dim == 16 and student.labels == teacher.labels
    for new, old in enumerate(kept):   # the pretrained encoder's own blocks, in order
        for (name, a), (_, b) in zip(student.encoder.encoder.layer[new].state_dict().items(),
                                     pretrained.encoder.layer[old].state_dict().items()):
            assert torch.equal(a, b), (selection, new, old, name)
    # it runs and saves as a 2-layer model
    probs, emb = student.predict(["where is my parcel"])
    assert probs.shape == (1, 3) and emb.shape == (1, 16)
    student.save_pretrained(tmp_path / "cut")
    assert SupportModel.from_pretrained(tmp_path / "cut").encoder.config.num_hidden_layers == 2

    # without student_layers the pretrained encoder stays whole, as before
    whole, how = distill.build_student(teacher, DistillSettings(student_encoder=str(other)))
    assert whole.encoder.config.num_hidden_layers == 4 and how["layers"] is None
    # more layers than the encoder has: one clear error
    with pytest.raises(ConfigError, match="more than"):
        distill.build_student(teacher, DistillSettings(student_encoder=str(other), student_layers=5))

@pytest.mark.slow
def test_two_process_distillation(project):
    proc = accelerate_launch(["-m", "training.distill", "--config", str(project), "--max-steps", "6"], processes=2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    work = project.parent / "artifacts" / "runs" / "student"
    ranks = [json.loads((work / "ranks" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["num_processes"] == 2 and r["steps"] == 6 for r in ranks)
    assert ranks[0]["losses"] != ranks[1]["losses"]                  # each rank saw its own shard
    assert ranks[0]["param_checksum"] == ranks[1]["param_checksum"]  # DDP kept them identical
    results = json.loads((work / "results.json").read_text())
    # batch_size 8 is global: 4 per process, so the run sees what one process would
    assert results["num_processes"] == 2 and results["global_batch_size"] == 8 and results["per_process_batch_size"] == 4
    assert results["samples_seen"] == 6 * 8 == sum(r["examples"] for r in ranks)
    SupportModel.from_pretrained(project.parent / "artifacts" / "student")
