"""Output files from the user's side: checked before the work, never half-written, never an input."""
from __future__ import annotations

import json
import os

import pytest

from atlas_jax.cli import main
from atlas_jax.outputs import atomic_write, prepare_output

MASK = {"item_id": "x", "num_steps": 3, "critical": [1]}


def write_mask(path):
    path.write_text(json.dumps(MASK) + "\n")
    return str(path)


def test_output_into_a_new_folder_is_created(tmp_path, capsys):
    a = write_mask(tmp_path / "a.jsonl")
    out = tmp_path / "new" / "deeper" / "c.json"
    assert main(["compare-masks", a, a, "--json", str(out)]) == 0
    assert json.loads(out.read_text())["overall"]["steps_both"] == 1
    assert [p.name for p in out.parent.iterdir()] == ["c.json"], "temporary files left behind"


def test_output_that_is_an_input_is_refused_before_work(tmp_path, capsys):
    a = write_mask(tmp_path / "a.jsonl")
    before = (tmp_path / "a.jsonl").read_bytes()
    assert main(["compare-masks", a, a, "--json", a]) == 2
    err = capsys.readouterr().err
    assert "the output is the input" in err and a in err and "Traceback" not in err
    assert (tmp_path / "a.jsonl").read_bytes() == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder_is_one_line(tmp_path, capsys):
    a = write_mask(tmp_path / "a.jsonl")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    assert main(["compare-masks", a, a, "--json", str(locked / "c.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "cannot write into" in err and str(locked) in err


def test_a_file_where_the_folder_should_be_is_one_line(tmp_path, capsys):
    a = write_mask(tmp_path / "a.jsonl")
    (tmp_path / "blocker").write_text("not a folder")
    assert main(["compare-masks", a, a, "--json", str(tmp_path / "blocker" / "c.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "cannot write into" in err and "blocker" in err


def test_atomic_write_keeps_the_old_file_when_interrupted(tmp_path):
    target = tmp_path / "scores.jsonl"
    target.write_text("old\n")
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(target) as f:
            f.write("half of the new ")
            raise KeyboardInterrupt
    assert target.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["scores.jsonl"]
    with atomic_write(target) as f:
        f.write("new\n")
    assert target.read_text() == "new\n"


def test_prepare_output_names_the_relation(tmp_path):
    run = tmp_path / "run"
    (run / "ckpt").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="lies inside the input"):
        prepare_output(run / "ckpt" / "x.json", inputs=[run])
    with pytest.raises(IsADirectoryError):
        prepare_output(run)
    assert prepare_output(tmp_path / "n" / "x.json", inputs=[run]).parent.is_dir()


def test_experts_keep_the_old_file_and_the_finished_episodes_when_interrupted(tmp_path, capsys):
    from atlas_jax.envs.experts_cmd import write_jsonl

    out = tmp_path / "traj.jsonl"
    out.write_text('{"item_id": "mine"}\n')

    def records():
        yield {"item_id": "babyai_0"}
        yield {"item_id": "babyai_1"}
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_jsonl(str(out), records())
    assert out.read_text() == '{"item_id": "mine"}\n'
    assert [json.loads(x)["item_id"] for x in (tmp_path / "traj.jsonl.partial").read_text().splitlines()] == \
        ["babyai_0", "babyai_1"]
    assert "2 finished trajectories kept" in capsys.readouterr().err
    assert write_jsonl(str(out), iter([{"item_id": "babyai_2"}])) == 1
    assert json.loads(out.read_text())["item_id"] == "babyai_2"


def test_score_and_inspect_check_their_output_before_any_work(tmp_path, capsys):
    """A whole scoring pass used to be lost to `No such file or directory: 'newdir/scores.jsonl.tmp'`."""
    data = tmp_path / "t.jsonl"
    data.write_text(json.dumps({"item_id": "a", "conversations": [
        {"from": "human", "value": "Go."}, {"from": "gpt", "value": "Action: go"}]}) + "\n")
    (tmp_path / "blocker").write_text("a file, not a folder")
    for command in (["score", "--model", str(tmp_path / "no-model"), "--data", str(data),
                     "--out", str(tmp_path / "blocker" / "s.jsonl")],
                    ["inspect", "--data", str(data), "--tokenizer", str(tmp_path / "no-tokenizer"),
                     "--json", str(tmp_path / "blocker" / "i.jsonl")]):
        assert main(command) == 2
        err = capsys.readouterr().err  # the output is refused first, before the missing model/tokenizer
        assert "cannot write into" in err and "blocker" in err, err
    assert main(["inspect", "--data", str(data), "--tokenizer", "x", "--json", str(data)]) == 2
    assert "the output is the input" in capsys.readouterr().err
    assert json.loads(data.read_text())["item_id"] == "a"
