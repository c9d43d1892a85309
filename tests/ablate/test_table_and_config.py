"""Without JAX: the table pools seeds and matches hand-computed Wilson intervals; a resume with a
changed config is refused naming the keys; a `server:` eval entry needs eval's --server."""
from __future__ import annotations

import json
import math
import os

import pytest

from atlas_jax.ablate import runner, stages
from atlas_jax.ablate.config import load_ablation_config
from atlas_jax.ablate.table import write_table
from tests.ablate.conftest import REPO, tiny_ablation


def fake_row(cfg, row, seed, outcomes: dict[str, list[bool]], positions: int):
    """A finished (row, seed): DONE.json and per-episode files, as the runner writes them."""
    directory = runner.row_dir(cfg, row, seed)
    episodes = {}
    for env, results in outcomes.items():
        path = f"{directory}/eval/{env}/{env}.jsonl"
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            for i, ok in enumerate(results):
                f.write(json.dumps({"item_id": f"{env}_{i}", "success": ok, "reward": float(ok)}) + "\n")
        episodes[env] = f"eval/{env}/{env}.jsonl"
    cost = {"steps": 10, "trained_positions": positions, "tokens_processed": 1000, "padded_positions": 4096,
            "train_seconds": 3.0, "eval_seconds": 2.0}
    stages.write_json(f"{directory}/DONE.json", {"row": row, "seed": seed, "cost": cost, "episodes": episodes,
                                                 "mask_stats": {"trajectories": 4, "critical_steps": 6, "steps": 20}})


def test_table_pools_seeds_with_wilson_intervals(tmp_path):
    cfg = load_ablation_config(str(tiny_ablation(tmp_path)), ["seeds=[0,1]"])
    # row all: babyai 3/4 and 1/4 -> 4/8 pooled; textcraft 0/2 and 1/2 -> 1/4
    fake_row(cfg, "all", 0, {"babyai": [True, True, True, False], "textcraft": [False, False]}, 100)
    fake_row(cfg, "all", 1, {"babyai": [False, False, True, False], "textcraft": [True, False]}, 300)
    fake_row(cfg, "atlas", 0, {"babyai": [True] * 4, "textcraft": [False, False]}, 30)  # seed 1 missing
    table = write_table(cfg)
    z = 1.959963984540054

    def wilson(k, n):  # written out: (p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)
        p = k / n
        lo = (p + z * z / (2 * n) - z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))) / (1 + z * z / n)
        hi = (p + z * z / (2 * n) + z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))) / (1 + z * z / n)
        return max(lo, 0.0), min(hi, 1.0)

    row_all, row_atlas = table["rows"]
    assert (row_all["row"], row_all["seeds"], row_atlas["seeds"], row_atlas["missing_seeds"]) == \
        ("all", [0, 1], [0], [1])
    cell = row_all["cells"]["babyai"]
    assert (cell["successes"], cell["episodes"], cell["per_seed"]) == (4, 8, {"0": 0.75, "1": 0.25})
    assert cell["low"] == pytest.approx(wilson(4, 8)[0]) and cell["high"] == pytest.approx(wilson(4, 8)[1])
    assert wilson(4, 8)[0] == pytest.approx(0.2152, abs=1e-4)  # the textbook value for 4/8
    out = row_all["cells"]["textcraft"]
    assert (out["successes"], out["episodes"]) == (1, 4)
    assert (out["low"], out["high"]) == pytest.approx(wilson(1, 4))
    full = row_atlas["cells"]["babyai"]
    assert (full["rate"], full["high"]) == (1.0, 1.0) and full["low"] == pytest.approx(wilson(4, 4)[0])
    # one env per group: the average is the cell itself
    assert (row_all["held_in"]["rate"], row_all["held_in"]["low"]) == (0.5, pytest.approx(wilson(4, 8)[0]))
    assert row_all["held_out"]["high"] == pytest.approx(wilson(1, 4)[1])
    assert row_all["cost_mean_per_seed"]["trained_positions"] == 200
    md = (tmp_path / "out/table.md").read_text()
    assert "| all | 50.0 [21.5, 78.5] (n=8) | 25.0 [4.6, 69.9] (n=4) |" in md
    assert "atlas (seeds [1])" in md
    assert (tmp_path / "out/table.png").read_bytes()[:4] == b"\x89PNG"
    # the CLI rewrites the same table from the files alone
    from atlas_jax.cli import main
    (tmp_path / "out/table.md").unlink()
    assert main(["ablate", "--config", str(tmp_path / "ablation.yaml"), "--table-only", "seeds=[0,1]"]) == 0
    assert (tmp_path / "out/table.md").read_text() == md


def test_averages_are_means_of_rates_and_of_wilson_bounds(tmp_path):
    cfg = load_ablation_config(str(tiny_ablation(tmp_path)), ["seeds=[0]", "eval.held_in=[{env: babyai, episodes: 5},"
                                                              "{env: textcraft, episodes: 4, name: tc}]"])
    fake_row(cfg, "all", 0, {"babyai": [True, False, False, False, False], "tc": [True, True, True, False],
                             "textcraft": [False] * 3}, 10)
    row = write_table(cfg)["rows"][0]
    z = 1.959963984540054
    bounds = []
    for k, n in ((1, 5), (3, 4)):
        p = k / n
        centre, half = (p + z * z / (2 * n)), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        bounds.append(((centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)))
    held_in = row["held_in"]
    assert held_in["rate"] == pytest.approx((0.2 + 0.75) / 2) and held_in["envs"] == 2
    assert held_in["low"] == pytest.approx((bounds[0][0] + bounds[1][0]) / 2)
    assert held_in["high"] == pytest.approx((bounds[0][1] + bounds[1][1]) / 2)
    assert (row["held_out"]["rate"], row["held_out"]["low"]) == (0.0, 0.0) and row["held_out"]["high"] > 0.4


def test_resume_with_changed_config_is_refused(tmp_path):
    path = str(tiny_ablation(tmp_path))
    runner.check_resume(load_ablation_config(path))
    runner.check_resume(load_ablation_config(path, ["rows=[all]"]))  # which rows run changes no result
    with pytest.raises(ValueError, match=r"finetune\.epochs \(1 -> 2\).*ratio \(0\.3 -> 0\.5\)"):
        runner.check_resume(load_ablation_config(path, ["finetune.epochs=2", "ratio=0.5"]))
    # an edit of the train_config file counts too
    train_yaml = tmp_path / "train.yaml"
    train_yaml.write_text((REPO / "configs/tiny_cpu.yaml").read_text())
    other = tmp_path / "other"
    runner.check_resume(load_ablation_config(path, [f"train_config={train_yaml}", f"output_dir={other}"]))
    train_yaml.write_text(train_yaml.read_text().replace("learning_rate: 3.0e-3", "learning_rate: 1.0e-3"))
    with pytest.raises(ValueError, match=r"train_config_content\.optim\.learning_rate \(0\.003 -> 0\.001\)"):
        runner.check_resume(load_ablation_config(path, [f"train_config={train_yaml}", f"output_dir={other}"]))


def test_a_run_saved_before_an_optional_key_existed_resumes(tmp_path):
    """A newer atlas-jax adds optional keys (None by default): an older run's saved config lacks them."""
    import json

    path = str(tiny_ablation(tmp_path))
    runner.check_resume(load_ablation_config(path))
    saved = tmp_path / "out" / runner.CONFIG_FILE
    old = json.loads(saved.read_text())
    for source in old["finetune"]["data"]["experts"]:
        del source["families"]
    saved.write_text(json.dumps(old))
    runner.check_resume(load_ablation_config(path))
    with pytest.raises(ValueError, match=r"finetune\.data\.experts .*'families': 'GoTo\*'"):
        runner.check_resume(load_ablation_config(path, ['finetune.data.experts=[{env: babyai, episodes: 6, '
                                                        'families: "GoTo*"}]']))


def test_server_needs_eval_support(tmp_path, monkeypatch):
    cfg = load_ablation_config(str(tiny_ablation(tmp_path)), ["eval.held_out=[{env: textcraft, episodes: 2, "
                                                              "server: 'http://127.0.0.1:1'}]"])
    server_env = cfg.eval.held_out[0]
    argv = stages.eval_argv("M", "T", server_env, cfg.eval, 0, "O")
    assert argv[argv.index("--server") + 1] == "http://127.0.0.1:1"  # passed through to eval as is
    monkeypatch.setattr(stages, "command_accepts", lambda name, flag: False)
    with pytest.raises(ValueError, match="textcraft set `server:` but this atlas-jax's `eval` has no --server"):
        runner.Ablation(cfg).run()


def test_bad_configs_name_the_key(tmp_path):
    path = str(tiny_ablation(tmp_path))
    with pytest.raises(ValueError, match="--rows: unknown row"):
        runner.Ablation(load_ablation_config(path), ["all", "best"])
    with pytest.raises(ValueError, match=r"train\.train\.steps: set by the ablation runner"):
        load_ablation_config(path, ["train.train.steps=5"])
    with pytest.raises(ValueError, match="tokenizer: not set, and there is no base.model"):
        load_ablation_config(path, ["tokenizer=null"])
    with pytest.raises(ValueError, match="tokenizer: `trained` learns a tokenizer from the base stage's data, but "
                                         "base.model is set"):
        load_ablation_config(path, ["base.model=/some/model"])
    with pytest.raises(ValueError, match="tokenizer_vocab_size: needs room for 256 bytes"):
        load_ablation_config(path, ["tokenizer_vocab_size=200"])
    with pytest.raises(ValueError, match="finetune.data: no files and no experts"):
        load_ablation_config(path, ["finetune.data.experts=[]"])


def test_eval_entries_are_checked_before_training(tmp_path):
    cfg = load_ablation_config(str(tiny_ablation(tmp_path)), ["eval.held_out=[{env: nosuchenv, episodes: 2}]"])
    with pytest.raises(ValueError, match="eval entry nosuchenv: atlas-jax eval: argument --env"):
        runner.Ablation(cfg).run()
    assert not (tmp_path / "out").exists()


def test_train_config_errors_come_before_any_work(tmp_path):
    cfg = load_ablation_config(str(tiny_ablation(tmp_path)), ["finetune.train.optim.learning_rat=0.1"])
    with pytest.raises(ValueError, match=r"finetune stage's train config .*optim\.learning_rat"):
        runner.Ablation(cfg).run()
    assert not (tmp_path / "out").exists()


def test_shipped_configs_load():
    from tests.ablate.conftest import REPO
    for name in ("cpu_small", "paper_llama3.1_8b"):
        cfg = load_ablation_config(str(REPO / f"configs/ablation/{name}.yaml"))
        stages.check_train_configs(cfg)
        assert cfg.ratio == 0.3 and set(cfg.rows) == {"all", "atlas", "random", "noncritical", "perplexity"}
    small = load_ablation_config(str(REPO / "configs/ablation/cpu_small.yaml"))
    # >= 100 held-in episodes per cell (seeds pooled), >= 2 seeds; held-out families never trained on
    assert all(e.episodes * len(small.seeds) >= 100 for e in small.eval.held_in) and len(small.seeds) >= 2
    trained = [s.families for stage in (small.base, small.finetune) for s in stage.data.experts]
    assert all(e.families and e.families not in trained for e in small.eval.held_out)
    paper = load_ablation_config(str(REPO / "configs/ablation/paper_llama3.1_8b.yaml"))
    assert all(e.server for e in paper.eval.envs) and paper.base.model


def test_atlas_row_asks_the_oracle_when_one_is_configured(tmp_path):
    from atlas_jax.data.mask import read_mask
    from tests.selection.conftest import agenttraj, write_jsonl
    from tests.selection.fake_oracle import FakeOracle

    records = [agenttraj(f"traj_{n}", [f"Thought: step {s}. Action: move forward" for s in range(n)],
                         task=f"Task ID: traj_{n} Go to the red key.") for n in (3, 4)]
    data = write_jsonl(tmp_path / "traj.jsonl", records)  # 3 and 4 steps: one critical step each
    with FakeOracle({}) as fake:
        cfg = load_ablation_config(str(tiny_ablation(tmp_path)), [
            f"finetune.data.files=[{data}]", "finetune.data.experts=[]", f"selection.oracle_url={fake.url}",
            "selection.oracle_model=fake-model", "seeds=[3]"])
        assert cfg.selection.atlas_selector == "oracle"
        ablation = runner.Ablation(cfg)
        ablation.files = [data]
        noncritical_path = ablation.mask("noncritical", 3)  # needs the atlas mask: asks the oracle first
        assert sorted(i for i, _ in fake.requests) == ["traj_3", "traj_4"]
    atlas_path = runner.row_dir(cfg, "atlas", 3) + "/mask.jsonl"
    head = [json.loads(open(p).readline())["selector"] for p in (atlas_path, noncritical_path)]
    assert head[0]["name"] == "oracle" and head[0]["model"] == "fake-model"
    assert head[1]["name"] == "noncritical" and head[1]["reference_mask"] == os.path.abspath(atlas_path)
    atlas, noncritical = read_mask(atlas_path), read_mask(noncritical_path)
    for item in ("traj_3", "traj_4"):
        assert atlas[item].critical == (2,)  # the oracle's first answer, capped at floor(0.3 x steps) = 1
        assert len(noncritical[item].critical) == 1 and not set(noncritical[item].critical) & {2}
