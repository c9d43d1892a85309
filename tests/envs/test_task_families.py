"""--families / --exclude-families: held-out columns keep whole task families out of training.

Expected indices are written out from AgentGym's BabyAI level order (task i is level i % 40,
seed i // 40; seeds 0-9 are the eval split): Pickup-v0 is level 17, PickupLoc 19,
PickupDistDebug 20, PickupAbove 21 (0-based 16, 18, 19, 20); UnblockPickup (17) does not
match ``Pickup*``."""
from __future__ import annotations

import argparse
import json

import pytest

from atlas_jax.cli import main
from atlas_jax.envs import eval_cmd
from atlas_jax.envs.base import TaskFamilies
from atlas_jax.envs.registry import make_env


@pytest.fixture(scope="module")
def babyai():
    env = make_env("babyai")
    yield env
    env.close()


def test_babyai_families_pick_whole_levels(babyai):
    pickup = TaskFamilies.parse("Pickup*", None)
    assert babyai.task_indices("eval", 6, families=pickup) == [16, 18, 19, 20, 56, 58]
    assert babyai.task_indices("train", 3, start=1, families=pickup) == [418, 419, 420]
    not_pickup = TaskFamilies.parse(None, "Pickup*, GoTo*")
    # levels 0-10 are GoTo*, 11-15 Open*, 16 Pickup, 17 UnblockPickup, 18-20 Pickup*, 21 PutNext...
    assert babyai.task_indices("eval", 8, families=not_pickup) == [11, 12, 13, 14, 15, 17, 21, 22]
    assert TaskFamilies.parse(" ", "") is None


def test_experts_families_play_only_those_levels(tmp_path, capsys):
    out = tmp_path / "pickup.jsonl"
    assert main(["experts", "--env", "babyai", "--episodes", "3", "--families", "PickupLoc,PickupAbove",
                 "--out", str(out), "--no-progress"]) == 0
    ids = [json.loads(line)["item_id"] for line in out.read_text().splitlines()]
    assert ids and set(ids) <= {"babyai_418", "babyai_420", "babyai_458"}  # the bot may fail one
    first = json.loads(out.read_text().splitlines()[0])["conversations"][2]["value"]
    assert first.startswith("Your goal: pick up")


def eval_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    eval_cmd.add_arguments(parser)
    return parser.parse_args(["--model", "M", "--env", "babyai", *argv])


def test_eval_families_choose_the_task_indices():
    make, ids, _, _ = eval_cmd.env_factory("babyai", eval_args("--episodes", "3", "--exclude-families", "GoTo*"))
    assert ids == [11, 12, 13]
    with pytest.raises(ValueError, match="with --server or --task-ids give the task indices"):
        eval_cmd.env_factory("babyai", eval_args("--episodes", "3", "--families", "Pickup", "--task-ids", "1-3"))
    with pytest.raises(ValueError, match=r"no task of split 'eval' after skipping 0 \(families Nope\*\)"):
        eval_cmd.env_factory("babyai", eval_args("--episodes", "3", "--families", "Nope*"))
