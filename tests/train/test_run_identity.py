"""A run directory remembers what it is (issue 12, point 2), from the user's side: `atlas-jax train`
into an output_dir that holds a checkpoint, with another model, learning rate or data; metrics
and TensorBoard after a resume."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from atlas_jax.cli import main
from atlas_jax.config_loader import ConfigError
from atlas_jax.train.metrics import drop_steps_after
from tests.train.conftest import TINY_CPU, TINY_MODEL, base_overrides, run_config


def _train(assets, out, data, *extra: str) -> int:
    return main(["train", "--config", TINY_CPU, *base_overrides(assets, out), f"data.train_files=[{data}]",
                 "train.steps=2", "train.save_every=2", "mesh.num_devices=1", *extra])


def _snapshot(out: Path) -> dict[str, bytes]:
    """Every file of the run directory but the metrics (byte for byte)."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and "tensorboard" not in p.parts and p.name != "metrics.jsonl"}


def _train_steps(out: Path) -> list[int]:
    return [r["step"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in r]


@pytest.fixture(scope="module")
def first_run(train_assets, tmp_path_factory):
    """A finished 2-step run (checkpoint at step 2) on its own copy of the data; tests copy the run
    directory before they change it."""
    root = tmp_path_factory.mktemp("first")
    data = root / "train.jsonl"
    data.write_text(Path(train_assets["train"]).read_text())
    out = root / "run"
    assert _train(train_assets, out, data) == 0
    return out, data


def _copy(src: Path, dst: Path) -> Path:
    import shutil
    shutil.copytree(src, dst)
    return dst


def test_another_model_config_refuses_before_writing_and_the_checkpoint_still_exports(
        first_run, train_assets, tmp_path, capsys):
    out, data = _copy(first_run[0], tmp_path / "run"), first_run[1]
    before = _snapshot(out)
    smaller = tmp_path / "smaller.json"
    smaller.write_text(json.dumps({**TINY_MODEL, "hidden_size": 32, "intermediate_size": 64}))
    for extra in ([], ["train.resume=force"]):  # other shapes can never resume, forced or not
        capsys.readouterr()
        assert _train(train_assets, out, data, f"model.config={smaller}", *extra) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        assert "another model architecture: hidden_size (64 -> 32), intermediate_size (128 -> 64)" in err
        assert "nothing was written" in err
        assert _snapshot(out) == before  # config.json, model_config.json and the checkpoint untouched
    assert main(["export", "--checkpoint", str(out / "checkpoints"), "--out", str(tmp_path / "hf")]) == 0
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["hidden_size"] == 64


def test_a_new_learning_rate_refuses_and_resume_force_resumes_and_records_it(
        first_run, train_assets, tmp_path, capsys):
    out, data = _copy(first_run[0], tmp_path / "run"), first_run[1]
    before = _snapshot(out)
    capsys.readouterr()
    # train.steps may change freely (a longer run); the learning rate is the run's identity
    assert _train(train_assets, out, data, "train.steps=4", "optim.learning_rate=1e-3") == 2
    err = capsys.readouterr().err
    assert "of a run with other settings: optim.learning_rate (0.003 -> 0.001); nothing was written" in err
    assert "train.steps" not in err and "train.resume=force" in err
    assert _snapshot(out) == before

    assert _train(train_assets, out, data, "train.steps=4", "optim.learning_rate=1e-3", "train.resume=force") == 0
    err = capsys.readouterr().err
    assert "train.resume=force: resuming" in err and "optim.learning_rate (0.003 -> 0.001)" in err
    assert "resumed from" in err and "step 2" in err
    log = [json.loads(line) for line in (out / "resume_log.jsonl").read_text().splitlines()]
    assert log[-1]["forced"] == ["optim.learning_rate"] and log[-1]["checkpoint_step"] == 2
    assert log[-1]["changed"]["train.steps"] == [2, 4]
    assert json.loads((out / "config.json").read_text())["optim"]["learning_rate"] == 1e-3
    assert _train_steps(out) == [1, 2, 3, 4]
    # the same command again: the stored config now matches, it resumes without force
    assert _train(train_assets, out, data, "train.steps=6", "optim.learning_rate=1e-3") == 0
    assert _train_steps(out) == [1, 2, 3, 4, 5, 6]
    _check_tensorboard(out / "tensorboard", expected=[1, 2, 3, 4, 5, 6])


def test_data_regenerated_in_place_refuses(first_run, train_assets, tmp_path, capsys):
    """Same path, other content (e.g. `select` rewrote the mask in place): not the same run."""
    out, data = _copy(first_run[0], tmp_path / "run"), first_run[1]
    original = data.read_text()
    try:
        data.write_text(original + original.splitlines(keepends=True)[0].replace("toy_0", "toy_99"))
        capsys.readouterr()
        assert _train(train_assets, out, data) == 2
        err = capsys.readouterr().err
        assert "data.train_files[0] content (" in err and "nothing was written" in err
    finally:
        data.write_text(original)


def test_resume_never_and_a_checkpoint_without_config(first_run, train_assets, tmp_path, capsys):
    out, data = _copy(first_run[0], tmp_path / "run"), first_run[1]
    capsys.readouterr()
    assert _train(train_assets, out, data, "train.resume=never") == 2
    assert "train.resume=never" in capsys.readouterr().err
    (out / "config.json").unlink()
    assert _train(train_assets, out, data) == 2
    assert "no config.json, so its settings cannot be compared" in capsys.readouterr().err
    assert not (out / "config.json").exists()


def test_resume_key_is_validated(train_assets, tmp_path):
    with pytest.raises(ConfigError, match="train.resume: expected one of auto, force, never, got 'sometimes'"):
        run_config(train_assets, tmp_path, "train.resume=sometimes")


def test_drop_steps_after_keeps_everything_up_to_the_checkpoint(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = ['{"step": 1, "loss": 5.0}\n', '{"step": 2, "loss": 4.0}\n', '{"step": 2, "eval_loss": 4.5}\n',
             'a line someone added\n', '{"step": 3, "loss": 3.0}\n', '{"step": 4, "loss"']
    path.write_text("".join(lines))
    assert drop_steps_after(path, 2) == 2  # step 3 and the torn step-4 line
    assert path.read_text() == "".join(lines[:4])
    assert drop_steps_after(path, 2) == 0 and path.read_text() == "".join(lines[:4])
    assert drop_steps_after(tmp_path / "absent.jsonl", 0) == 0


def _events(path: Path):
    """Events of one TFRecord file (length, crc, payload, crc), parsed with tensorboardX's protos."""
    from tensorboardX.proto.event_pb2 import Event

    data, at = path.read_bytes(), 0
    while at < len(data):
        (length,) = struct.unpack("<Q", data[at:at + 8])
        event = Event()
        event.ParseFromString(data[at + 12:at + 12 + length])
        yield event
        at += 12 + length + 4


def _check_tensorboard(directory: Path, expected: list[int]) -> None:
    """TensorBoard's rule, applied by hand: a SessionLog START at step s discards the earlier
    events at steps >= s. What remains of train/loss is each step once."""
    from tensorboardX.proto.event_pb2 import SessionLog

    files = sorted(directory.glob("events.out.tfevents.*"), key=lambda p: (p.stat().st_mtime_ns, p.name))
    kept: list[int] = []
    for f in files:
        for event in _events(f):
            if event.HasField("session_log") and event.session_log.status == SessionLog.START:
                kept = [s for s in kept if s < event.step]
            if event.HasField("summary") and any(v.tag == "train/loss" for v in event.summary.value):
                kept.append(event.step)
    assert kept == expected, kept
