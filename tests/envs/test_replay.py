"""Every expert trajectory, bundled or freshly generated, replays to success in a fresh env."""
import pytest

from atlas_jax.envs import make_env
from atlas_jax.envs.experts import ExpertReport, generate

from tests.envs.conftest import load_sample, replay


@pytest.mark.parametrize("stem, env_name, split", [("babyai_train", "babyai", "train"),
                                                    ("textcraft_train", "textcraft", "train")])
def test_bundled_sample_replays(stem, env_name, split):
    records = load_sample(stem)
    assert len(records) >= 20
    env = make_env(env_name)  # a fresh instance, not the one that generated them
    assert len({r["item_id"] for r in records}) == len(records)
    for record in records:
        assert env.split_of(int(record["item_id"].rsplit("_", 1)[1])) == split
        replay(env, record)


@pytest.mark.parametrize("env_name, first, count", [("babyai", 440, 40), ("textcraft", 200, 25)])
def test_generated_trajectories_replay(env_name, first, count):
    generator = make_env(env_name)
    report = ExpertReport(env_name)
    records = list(generate(generator, list(range(first, first + count)), report))
    assert report.attempted == count and report.kept == len(records) >= count // 2
    assert sum(report.dropped.values()) == count - report.kept
    fresh = make_env(env_name)
    for record in records:
        replay(fresh, record)
        thoughts = [t["value"] for t in record["conversations"] if t["from"] == "gpt"][1:]
        assert all(t.startswith("Thought:\n") and len(t.split("\n")[1]) > 20 for t in thoughts)


def test_sample_regenerates_bit_for_bit(tmp_path):
    """The documented command rebuilds the committed BabyAI and TextCraft files byte for byte
    (SciWorld is left out here only for time; the manifest records its sha256)."""
    import json
    import os

    from atlas_jax.envs import sample
    from tests.envs.conftest import SAMPLE_DIR

    stems = ["babyai_train", "textcraft_train"]
    manifest = sample.build(str(tmp_path), stems)
    with open(os.path.join(SAMPLE_DIR, "manifest.json"), encoding="utf-8") as f:
        committed = json.load(f)["files"]
    for stem in stems:
        with open(tmp_path / f"{stem}.jsonl", "rb") as new, open(os.path.join(SAMPLE_DIR, f"{stem}.jsonl"), "rb") as old:
            assert new.read() == old.read(), stem
        assert manifest[stem] == committed[stem]
