"""Input errors from the user's side (issue 12, point 5): every bad input names its file and line,
decoding errors included; `--on-error skip` skips and counts them in every reader that offers it;
OS errors are one line naming the path, exit status 2, no traceback; programming errors keep theirs."""
import errno
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from atlas_jax.cli import main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def record(item_id: str, steps: int = 3) -> dict:
    conv = [{"from": "human", "value": f"Task {item_id}: reach the goal."}]
    for k in range(steps):
        conv.append({"from": "gpt", "value": f"Thought: step {k}. Action: move {k}"})
        if k < steps - 1:
            conv.append({"from": "human", "value": f"Observation: you moved {k}."})
    return {"item_id": item_id, "conversations": conv}


def write_lines(path, lines: list) -> str:
    """JSONL from records (dicts) and raw byte lines (bytes, written as they are)."""
    with open(path, "wb") as f:
        for line in lines:
            f.write((line if isinstance(line, bytes) else json.dumps(line).encode()) + b"\n")
    return str(path)


def bad_byte_line(item_id: str) -> bytes:
    """A record whose text holds a 0xff byte at byte 40 of its line (counting from 1)."""
    good = json.dumps(record(item_id)).encode()
    return good[:39] + b"\xff" + good[40:]


def one_line_error(capsys, *needles) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    from atlas_jax.data.tiny_tokenizer import build_tiny_tokenizer
    return build_tiny_tokenizer(tmp_path_factory.mktemp("tok") / "tok")


@pytest.fixture
def data(tmp_path) -> str:
    return write_lines(tmp_path / "traj.jsonl", [record("a"), bad_byte_line("b"), record("c")])


def test_bad_byte_in_trajectories_names_file_and_line_then_skip_counts_it(tmp_path, data, capsys):
    out = tmp_path / "mask.jsonl"
    assert main(["select", "--selector", "all", "--data", data, "--out", str(out)]) == 2
    one_line_error(capsys, f"{data}:2: not valid UTF-8 at byte 40 (0xff)")
    assert not out.exists()

    assert main(["select", "--selector", "all", "--data", data, "--out", str(out), "--on-error", "skip"]) == 0
    assert "read 3, used 2, rejected 1 (1 not valid UTF-8)" in capsys.readouterr().out
    assert [json.loads(line)["item_id"] for line in out.read_text().splitlines()] == ["a", "c"]


def test_bad_byte_in_a_json_document_names_its_line(tmp_path, capsys):
    doc = tmp_path / "traj.json"
    doc.write_bytes(b"[\n" + json.dumps(record("a")).encode() + b",\n" + bad_byte_line("b") + b"\n]\n")
    assert main(["select", "--selector", "all", "--data", str(doc), "--out", str(tmp_path / "m.jsonl")]) == 2
    one_line_error(capsys, f"{doc}:3: not valid UTF-8 at byte 40 (0xff)")


def test_bad_byte_in_mask_for_inspect(tmp_path, tokenizer_dir, capsys):
    data = write_lines(tmp_path / "traj.jsonl", [record("a"), record("b")])
    mask = write_lines(tmp_path / "mask.jsonl", [{"item_id": "a", "num_steps": 3, "critical": [1]},
                                                  b'{"item_id": "b", "num_steps": 3, "critical": [0], "x": "\xfe"}'])
    args = ["inspect", "--data", data, "--tokenizer", tokenizer_dir, "--mask", mask, "--color", "never"]
    assert main(args) == 2
    one_line_error(capsys, f"{mask}:2: not valid UTF-8 at byte 57 (0xfe)")
    # skipped, b has no mask entry: the --unmasked policy decides (here: train all of its steps)
    assert main(args + ["--on-error", "skip", "--unmasked", "all"]) == 0
    assert "mask: read 2, used 1, rejected 1 (1 not valid UTF-8)" in capsys.readouterr().out


def test_bad_byte_in_scores_for_select(tmp_path, capsys):
    data = write_lines(tmp_path / "traj.jsonl", [record("a"), record("b")])

    def scores(item_id, nll):  # a scores record as `atlas-jax score` writes it, values by hand
        return {"item_id": item_id, "num_steps": 3, "steps": [
            {"index": k, "tokens": 5, "nll_sum": 5 * v, "nll_mean": v, "entropy_mean": 1.0, "truncated": False}
            for k, v in enumerate(nll)]}
    bad = json.dumps(scores("b", [1.0, 2.0, 3.0])).encode().replace(b'"b"', b'"b\xc3"')  # cut 2-byte sequence
    path = write_lines(tmp_path / "scores.jsonl", [scores("a", [0.5, 3.0, 1.0]), bad])
    out = tmp_path / "mask.jsonl"
    args = ["select", "--selector", "perplexity", "--ratio", "0.34", "--data", data, "--scores", path,
            "--out", str(out)]
    assert main(args) == 2
    one_line_error(capsys, f"{path}:2: not valid UTF-8 at byte 15 (0xc3)")
    assert main(args + ["--on-error", "skip"]) == 0
    printed = capsys.readouterr().out
    assert "scores: read 2, used 1, rejected 1 (1 not valid UTF-8)" in printed
    assert "skipped 1 trajectories without a scores record" in printed
    assert [(r["item_id"], r["critical"]) for r in map(json.loads, out.read_text().splitlines())] == [("a", [1])]


def test_score_reads_and_counts_before_loading_the_model(tmp_path, data, capsys):
    out = str(tmp_path / "s.jsonl")
    args = ["score", "--model", str(tmp_path / "no-model"), "--data", data, "--out", out, "--seq-len", "64",
            "--chunk", "64"]
    assert main(args) == 2
    one_line_error(capsys, f"{data}:2: not valid UTF-8 at byte 40")
    assert main(args + ["--on-error", "skip"]) == 2  # past the data, the missing model stops it
    captured = capsys.readouterr()
    assert "read 3, used 2, rejected 1 (1 not valid UTF-8)" in captured.out
    assert "no-model" in captured.err and "Traceback" not in captured.err


def test_train_data_and_mask_skip_bad_bytes(tmp_path, tokenizer_dir):
    from atlas_jax.data.pipeline import DataConfig, TrainData

    data = write_lines(tmp_path / "traj.jsonl", [record("a"), bad_byte_line("b"), record("c")])
    mask = write_lines(tmp_path / "mask.jsonl", [{"item_id": "a", "num_steps": 3, "critical": [1]},
                                                  b"\xff", {"item_id": "c", "num_steps": 3, "critical": [2]}])
    cfg = dict(train_files=[data], tokenizer=tokenizer_dir, mask_file=mask, seq_len=128, global_batch_size=2)
    with pytest.raises(ValueError, match=f"{data}:2: not valid UTF-8 at byte 40"):
        TrainData(DataConfig(**cfg), process_index=0, process_count=1)
    train = TrainData(DataConfig(**cfg, on_error="skip"), process_index=0, process_count=1)
    assert train.read_report.summary() == "read 3, used 2, rejected 1 (1 not valid UTF-8)"
    batch = next(train)
    assert (batch["loss_weights"] > 0).any()


def test_bad_byte_in_config_names_its_line(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_bytes(b"output_dir: runs/x\ntrain:\n  steps: 2 # caf\xe9\n")
    assert main(["train", "--config", str(config)]) == 2
    one_line_error(capsys, f"{config}:3: not valid UTF-8 at byte 17 (0xe9)")


@pytest.mark.parametrize("command", [
    ["import", "--hf", "{missing}", "--out", "{tmp}/ckpt"],
    ["export", "--checkpoint", "{missing}", "--out", "{tmp}/hf"],
    ["train", "--config", "{missing}.yaml"],
    ["inspect", "--data", "{missing}.jsonl", "--tokenizer", "{tmp}"],
    ["score", "--model", "{tmp}/model", "--data", "{missing}.jsonl", "--out", "{tmp}/out/s.jsonl"],
    ["select", "--selector", "all", "--data", "{missing}.jsonl", "--out", "{tmp}/m.jsonl"],
    ["compare-masks", "{missing}.jsonl", "{missing}.jsonl"],
    ["ablate", "--config", "{missing}.yaml"],
    ["eval", "--model", "{missing}", "--env", "babyai", "--episodes", "1", "--out", "{tmp}/ev"],
], ids=lambda c: c[0])
def test_missing_input_is_one_line_naming_it(tmp_path, capsys, command):
    missing = str(tmp_path / "missing")
    assert main([a.format(missing=missing, tmp=tmp_path) for a in command]) == 2
    one_line_error(capsys, missing)


def test_directory_given_as_a_file(tmp_path, capsys):
    (tmp_path / "d").mkdir()
    assert main(["select", "--selector", "all", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "m.jsonl")]) == 2
    one_line_error(capsys, "trajectory file is a directory", str(tmp_path / "d"))


def refuse_writes_under(monkeypatch, folder, code) -> None:
    """epath's open as on a read-only (EROFS at open) or full (ENOSPC at write) filesystem, for writes
    under ``folder`` only: root ignores permission bits, so the real thing cannot be made in a test."""
    from etils import epath

    cls = type(epath.Path(folder))
    real_open = cls.open

    class Full:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, text):  # the empty probe of prepare_output fits; the output does not
            if text:
                raise OSError(code, os.strerror(code))  # as the kernel reports it: no file name

    def refusing_open(path, mode="r", *args, **kwargs):
        if "w" not in mode or not str(path).startswith(str(folder)):
            return real_open(path, mode, *args, **kwargs)
        if code == errno.EROFS:
            raise OSError(code, os.strerror(code), str(path))
        return Full(real_open(path, mode, *args, **kwargs))
    monkeypatch.setattr(cls, "open", refusing_open)


@pytest.mark.parametrize("code", [errno.EROFS, errno.ENOSPC], ids=["read-only", "full"])
def test_read_only_or_full_output_folder_is_one_line(tmp_path, capsys, monkeypatch, code):
    data = write_lines(tmp_path / "traj.jsonl", [record("a")])
    out_dir = tmp_path / "out"
    refuse_writes_under(monkeypatch, out_dir, code)
    out = out_dir / "mask.jsonl"
    # compare-masks --json goes through prepare_output (probe write) and atomic_write
    mask = tmp_path / "mask.jsonl"
    assert main(["select", "--selector", "all", "--data", data, "--out", str(mask)]) == 0
    capsys.readouterr()
    assert main(["compare-masks", str(mask), str(mask), "--json", str(out)]) == 2
    err = one_line_error(capsys, os.strerror(code))
    assert str(out if code == errno.ENOSPC else out_dir) in err  # full: found writing, the file is named
    assert not out.exists()


def test_programming_errors_keep_their_traceback(monkeypatch, tmp_path, capsys):
    import atlas_jax.selection.compare_cmd as compare_cmd

    monkeypatch.setattr(compare_cmd, "run", lambda args: np.zeros(3).reshape(2, 2))  # numpy's ValueError
    with pytest.raises(ValueError, match="cannot reshape"):
        main(["compare-masks", "a", "b"])
    monkeypatch.setattr(compare_cmd, "run", lambda args: None + 1)
    with pytest.raises(TypeError):
        main(["compare-masks", "a", "b"])
    monkeypatch.setattr(compare_cmd, "run", lambda args: json.loads("{"))  # a reader that names no file
    with pytest.raises(json.JSONDecodeError):
        main(["compare-masks", "a", "b"])


def test_real_process_prints_one_line_and_exits_2(tmp_path):
    missing = str(tmp_path / "missing.jsonl")
    proc = subprocess.run([sys.executable, "-m", "atlas_jax.cli", "select", "--selector", "all", "--data", missing,
                           "--out", str(tmp_path / "m.jsonl")], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": REPO}, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"atlas-jax select: error: trajectory file not found: {missing}"
