"""Several machines: the accelerate configs in configs/accelerate/, and a real two-node launch.

The two-node test starts two `accelerate launch` commands at once on this one CPU host, one per
"machine" (`--config_file configs/accelerate/multi_node_rank{0,1}.yaml`, i.e. `--multi_gpu
--num_machines 2 --machine_rank R`, with `--num_processes 2` in all: one gloo process per machine
and `--main_process_ip 127.0.0.1`). They meet through torchrun's rendezvous on machine 0 exactly as
two hosts would. Checked: both exit 0, both ranks trained the same model (the parameter checksum
each writes to `ranks/rank<N>.json`), the saved model (written by process 0 alone) is that model,
two machines of one process train bit for bit what one machine with two processes trains (same
losses, same parameters), and the run took the same optimizer steps and saw the same examples as
one process on the same config (`batch_size` is the global batch). The config tests below are quick: each YAML loads with
Accelerate's own loader and turns into the launch it promises, without a GPU.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import ROOT, accelerate_launch, free_port, make_project

CONFIGS = ROOT / "configs" / "accelerate"
EXPECTED = {  # file: (distributed_type, num_machines, machine_rank)
    "multi_gpu.yaml": ("MULTI_GPU", 1, 0),
    "multi_node_rank0.yaml": ("MULTI_GPU", 2, 0),
    "multi_node_rank1.yaml": ("MULTI_GPU", 2, 1),
    "fsdp.yaml": ("FSDP", 1, 0),
}


# ---------------------------------------------------------------------- the config files (quick)

def test_every_accelerate_config_is_listed():
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_accelerate_config_loads(name):
    from accelerate.commands.config.config_args import (
        ClusterConfig,
        load_config_from_file,
    )

    config = load_config_from_file(str(CONFIGS / name))   # what `accelerate launch --config_file` reads
    assert isinstance(config, ClusterConfig)
    distributed_type, machines, rank = EXPECTED[name]
    assert config.distributed_type.value == distributed_type
    assert (config.num_machines, config.machine_rank) == (machines, rank)
    assert config.num_processes % config.num_machines == 0
    assert config.compute_environment.value == "LOCAL_MACHINE"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_accelerate_config_makes_the_launch_it_promises(name, monkeypatch):
    """What `accelerate launch --config_file <name> -m training.train ...` validates and hands to
    torchrun, short of starting it (no GPU needed)."""
    from accelerate.commands.launch import (
        _validate_launch_command,
        launch_command_parser,
    )
    from accelerate.utils.launch import prepare_multi_gpu_env

    port = free_port()
    args = launch_command_parser().parse_args(
        ["--config_file", str(CONFIGS / name), "--main_process_port", str(port), "-m", "training.train",
         "--config", "configs/demo.yaml"])
    args, defaults, _ = _validate_launch_command(args)
    env = prepare_multi_gpu_env(args)
    processes, machines = defaults.num_processes, defaults.num_machines
    assert int(args.nproc_per_node) == processes // machines
    if machines > 1:   # torchrun --nnodes 2 --node_rank R --rdzv_endpoint <machine 0>:<port>
        assert (args.nnodes, args.node_rank) == (str(machines), defaults.machine_rank)
        assert args.rdzv_endpoint == f"{defaults.main_process_ip}:{port}"
    if name == "fsdp.yaml":
        assert args.use_fsdp and env["ACCELERATE_USE_FSDP"] == "true"
        from accelerate.utils import FullyShardedDataParallelPlugin

        for key, value in env.items():
            monkeypatch.setenv(key, value)
        plugin = FullyShardedDataParallelPlugin()   # built from the environment, as in each process
        assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True   # FULL_SHARD
        assert plugin.state_dict_type.name == "FULL_STATE_DICT"
        assert plugin.transformer_cls_names_to_wrap == ["BertLayer"]
    else:
        assert args.multi_gpu and not args.use_fsdp


def test_fsdp_wraps_a_layer_class_the_teacher_has(tiny_encoder_dir):
    from accelerate.commands.config.config_args import load_config_from_file

    from runtime.model import SupportModel

    wrap = load_config_from_file(str(CONFIGS / "fsdp.yaml")).fsdp_config["fsdp_transformer_layer_cls_to_wrap"]
    model = SupportModel.from_encoder(str(tiny_encoder_dir), ["a", "b"], max_length=24)
    assert set(wrap.split(",")) <= {type(m).__name__ for m in model.modules()}


# ---------------------------------------------------------------------- a real two-node run (slow)

def launch_machine(rank: int, port: int, args: list[str], log: Path) -> subprocess.Popen:
    """`accelerate launch --config_file multi_node_rank<rank>.yaml` as "machine" `rank`, with 1 process."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / f"multi_node_rank{rank}.yaml"),
           "--num_processes", "2", "--main_process_ip", "127.0.0.1", "--main_process_port", str(port),
           "-m", "training.train", *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    with open(log, "w") as fh:   # its own session: a failed test kills the launcher and its workers
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)


def run_machines(args: list[str], logs: Path, timeout: float = 400) -> None:
    """Both machines at once; fails the test (after killing both) unless both exit 0 in time."""
    port = free_port()
    procs = [launch_machine(rank, port, args, logs / f"machine{rank}.log") for rank in (0, 1)]
    deadline = time.monotonic() + timeout
    try:
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            if any(p.poll() not in (None, 0) for p in procs):   # one failed: the other would wait for it
                time.sleep(5)   # give the other its chance to report too
                break
            time.sleep(0.5)
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    codes = [p.returncode for p in procs]
    if codes != [0, 0]:
        out = "\n".join(f"---- machine {r} (exit {c}) ----\n{(logs / f'machine{r}.log').read_text()[-4000:]}"
                        for r, c in enumerate(codes))
        pytest.fail(f"two-node launch failed or timed out ({timeout:.0f} s): exit codes {codes}\n{out}")


@pytest.mark.slow
def test_two_machines_train_one_model(tmp_path, tiny_encoder_dir):
    from core.config import load_config
    from runtime.model import SupportModel
    from training.loop import parameter_checksum
    from training.train import TrainOptions, train

    # the tiny project and run of test_train_multiprocess.py; one thread per process, as 2 local processes get
    config = make_project(tmp_path / "proj", tiny_encoder_dir, "  early_stopping_patience: 0\n")
    artifacts = tmp_path / "proj" / "artifacts"
    overrides = ["training.batch_size=6", "training.eval_every=8", "training.checkpoint_every=8",
                 "training.num_threads=1"]
    t0 = time.monotonic()
    args = ["--config", str(config), "--max-steps", "16"] + [f"--set={o}" for o in overrides]
    run_machines(args, tmp_path)
    print(f"two-node run: {time.monotonic() - t0:.1f} s")

    work = artifacts / "runs" / "teacher"
    ranks = [json.loads((work / "ranks" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["num_processes"] == 2 for r in ranks)
    assert all(r["steps"] == 16 and len(r["losses"]) == 16 and r["examples"] > 0 for r in ranks)
    assert ranks[0]["losses"] != ranks[1]["losses"]               # each machine trained on its own shard
    assert ranks[0]["param_checksum"] == ranks[1]["param_checksum"]   # ... and both ended with one model

    # only process 0 (machine 0) saved, and what it saved is that model
    model = SupportModel.from_pretrained(artifacts / "teacher")
    assert parameter_checksum(model) == ranks[0]["param_checksum"]
    assert model.metadata["num_processes"] == 2
    probs, _ = model.predict(["where is my order", "hello"])
    assert probs.shape == (2, 3)
    results = json.loads((work / "results.json").read_text())
    assert results["num_processes"] == 2 and results["global_batch_size"] == 6 and results["per_process_batch_size"] == 3
    assert results["samples_seen"] == sum(r["examples"] for r in ranks) == 16 * 6
    assert results["fingerprint"] == model.fingerprint

    # the same two processes on one machine (`--multi_gpu --num_processes 2`): the same model, bit for bit
    t0 = time.monotonic()
    proc = accelerate_launch(["-m", "training.train", *args, "--output-dir", str(tmp_path / "local"),
                              "--work-dir", str(tmp_path / "local_run")], processes=2, timeout=400)
    print(f"one-machine two-process run: {time.monotonic() - t0:.1f} s")
    assert proc.returncode == 0, proc.stderr[-3000:]
    local = [json.loads((tmp_path / "local_run" / "ranks" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["losses"] for r in local] == [r["losses"] for r in ranks]
    assert [r["param_checksum"] for r in local] == [r["param_checksum"] for r in ranks]

    # one process on the same config: the same steps, examples and schedule (batch_size is global)
    t0 = time.monotonic()
    one = train(load_config(config, overrides), TrainOptions(max_steps=16, output_dir=tmp_path / "one",
                                                             work_dir=tmp_path / "one_run"))
    print(f"one-process run: {time.monotonic() - t0:.1f} s")
    assert one["processes"] == 1
    for key in ("samples_seen", "optimizer_steps", "global_batch_size", "epochs"):
        assert one[key] == results[key], key
