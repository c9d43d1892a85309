"""The train loop on CPU: overfitting, sharded == unsharded losses, exact resume after SIGKILL,
SIGTERM handling, NaN stop, and a checkpoint that exports like an imported one."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from atlas_jax.train.trainer import train
from tests.train.conftest import REPO, TINY_CPU, base_overrides, run_config


def read_losses(metrics_file: Path) -> dict[int, list[float]]:
    losses: dict[int, list[float]] = {}
    for line in metrics_file.read_text().splitlines():
        record = json.loads(line)
        if "loss" in record:
            losses.setdefault(record["step"], []).append(record["loss"])
    return losses


@pytest.fixture(scope="module")
def reference_run(train_assets, tmp_path_factory):
    """6 steps on all 8 emulated devices (fsdp=8), never interrupted, held-out eval every 3 steps."""
    out = tmp_path_factory.mktemp("reference")
    result = train(run_config(train_assets, out, f"eval.files=[{train_assets['heldout']}]", "eval.every=3"))
    assert result.status == "completed" and result.step == 6
    return out, result


def test_overfits_small_set(train_assets, tmp_path):
    result = train(run_config(train_assets, tmp_path, "train.steps=40", "train.save_every=0",
                              "data.global_batch_size=8", "optim.learning_rate=1e-2", "optim.warmup_steps=3"))
    first, last = result.losses[1], result.losses[40]
    assert first > 5.0  # ~log(512) at random init
    assert last < 0.5 * first, (first, last)


def test_sharded_and_unsharded_losses_agree(reference_run, train_assets, tmp_path):
    _, sharded = reference_run
    single = train(run_config(train_assets, tmp_path, "mesh.num_devices=1", "train.save_every=0"))
    for step in range(1, 7):
        np.testing.assert_allclose(single.losses[step], sharded.losses[step], rtol=2e-5, err_msg=f"step {step}")


def test_metrics_and_checkpoints_written(reference_run):
    out, result = reference_run
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_records = [r for r in records if "loss" in r]
    assert [r["step"] for r in train_records] == [1, 2, 3, 4, 5, 6]
    for key in ("loss", "weighted_tokens", "tokens_per_sec", "lr", "grad_norm", "tokens"):
        assert all(key in r for r in train_records), key
    assert train_records[0]["lr"] == 0.0 and train_records[1]["lr"] == pytest.approx(3e-3)  # 1 warmup step
    assert list((out / "tensorboard").iterdir()), "TensorBoard events missing"
    steps = sorted(int(p.name) for p in result.checkpoint_dir.iterdir() if p.name.isdigit())
    assert steps == [4, 6]  # saved at 2, 4, 6; keep_checkpoints=2 rotated 2 out
    evals = [r for r in records if "eval_loss" in r]
    assert [r["step"] for r in evals] == [3, 6]
    assert all(0 < r["eval_loss"] < 10 for r in evals)


def _cli(train_assets, out, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=8",
               PYTHONPATH=str(REPO))
    args = ["train", "--config", TINY_CPU, *base_overrides(train_assets, out), *extra]
    return subprocess.Popen([sys.executable, "-m", "atlas_jax.cli", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(predicate, proc, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(f"process exited early ({proc.returncode}): {proc.stderr.read()[-2000:]}")
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("timed out")


def test_sigkill_then_resume_reproduces_every_loss(reference_run, train_assets, tmp_path):
    _, reference = reference_run
    out = tmp_path / "run"
    proc = _cli(train_assets, out)
    _wait_for(lambda: (out / "checkpoints" / "2").is_dir() and any((out / "checkpoints").glob("2/*")) and
              (out / "metrics.jsonl").exists() and 3 in read_losses(out / "metrics.jsonl"), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    resumed = _cli(train_assets, out)
    stdout, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr[-3000:]
    assert "resumed from" in stderr
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6], steps  # the killed run's lines after step 2 were replaced, not repeated
    logged = read_losses(out / "metrics.jsonl")
    for step, values in logged.items():
        assert values == [pytest.approx(reference.losses[step], rel=1e-6)], (step, values)


def test_sigterm_saves_and_exits_cleanly(train_assets, tmp_path):
    out = tmp_path / "run"
    proc = _cli(train_assets, out, "train.steps=200", "train.save_every=0")
    _wait_for(lambda: (out / "metrics.jsonl").exists() and 2 in read_losses(out / "metrics.jsonl"), proc)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr[-3000:]
    assert "SIGTERM: saved step" in stderr and "train preempted at step" in stdout
    saved = [int(p.name) for p in (out / "checkpoints").iterdir() if p.name.isdigit()]
    assert len(saved) == 1 and 2 <= saved[0] < 200


def test_nan_stops_and_keeps_last_good_checkpoint(train_assets, tmp_path, capsys):
    from atlas_jax.cli import main

    code = main(["train", "--config", TINY_CPU, *base_overrides(train_assets, tmp_path), "train.save_every=1",
                 "optim.learning_rate=1e30", "optim.clip_norm=0", "optim.warmup_steps=0"])
    err = capsys.readouterr().err
    assert code == 3, err[-2000:]
    assert "is not finite; stopping (the last good checkpoint is step" in err
    saved = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    bad_step = int(err.split("is not finite")[0].rsplit("step ", 1)[1].split(":")[0].split("/")[0])
    assert saved and max(saved) < bad_step


def test_training_checkpoint_exports_to_transformers(reference_run, train_assets, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from atlas_jax.cli import main
    from atlas_jax.convert.checkpoint import restore_model

    out, result = reference_run
    hf = tmp_path / "hf"
    assert main(["export", "--checkpoint", str(result.checkpoint_dir), "--out", str(hf)]) == 0
    assert (hf / "tokenizer.json").is_file()  # the run's tokenizer travels with the checkpoint
    model = restore_model(result.checkpoint_dir, dtype="float32")
    ids = np.arange(12, dtype=np.int32)[None] * 7 % 512
    ours = np.asarray(model(ids))
    reloaded = AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float32).eval()
    with torch.no_grad():
        theirs = reloaded(torch.tensor(ids, dtype=torch.long)).logits.numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)

    # model.init_from accepts the HF export and the checkpoint alike: both start from the same weights
    first_losses = []
    for source in (hf, result.checkpoint_dir):
        run = train(run_config(train_assets, tmp_path / f"from_{source.name}", "model.config=null",
                               f"model.init_from={source}", "train.steps=1", "train.save_every=0"))
        first_losses.append(run.losses[1])
    assert first_losses[0] == pytest.approx(first_losses[1], rel=1e-6)
    assert first_losses[0] < reference_run[1].losses[1]  # trained weights, not a fresh init


def test_damaged_newest_checkpoint_resumes_from_the_one_before(reference_run, train_assets, tmp_path, capsys):
    """A torn newest save is named and skipped: the run resumes from the newest good step and
    retrains exactly what the uninterrupted run trained."""
    from atlas_jax.cli import main

    _, reference = reference_run
    args = ["train", "--config", TINY_CPU, *base_overrides(train_assets, tmp_path)]
    assert main(args) == 0  # saves 2, 4, 6 and keeps 4 and 6
    for f in (tmp_path / "checkpoints" / "6" / "params").rglob("*"):
        if f.is_file() and f.stat().st_size > 0 and "manifest" not in f.name:
            f.write_bytes(b"\0" * 7)
    capsys.readouterr()
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "checkpoint step 6 cannot be restored" in err and "resuming from step 4" in err
    assert (tmp_path / "checkpoints" / "6.damaged").is_dir(), "the damaged step is kept aside, not deleted"
    assert "resumed from" in err and "step 4" in err
    logged = read_losses(tmp_path / "metrics.jsonl")
    assert sorted(logged) == [1, 2, 3, 4, 5, 6] and all(len(v) == 1 for v in logged.values())  # 5, 6 replaced
    for step in (5, 6):  # trained again from step 4
        assert logged[step] == [pytest.approx(reference.losses[step], rel=1e-6)]
