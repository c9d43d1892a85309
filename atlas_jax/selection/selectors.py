"""Selectors: which steps of each trajectory are critical.

Every selector chooses among a trajectory's trainable steps (``Trajectory.trainable_steps``: never a
turn the data marks ``loss: false``, such as AgentGym's "OK. I'll follow your instructions"
acknowledgement) and returns a *ranked* list (most important first) already cut to the
per-trajectory cap ``trajectory_cap(traj, ratio)`` = floor(ratio * trainable steps), at least 1, as
in the paper (at most ~30% of the steps). Step indices are the data's (acknowledgement included).
``apply_token_budget`` can then trim the ranked lists to a global budget of step tokens; the mask
keeps the surviving steps in step order.

- ``all``: every trainable step (plain agent SFT as a mask; the ratio does not apply).
- ``random``: a uniform sample, seeded per (seed, item_id), so a trajectory's choice does not
  depend on file order or on the other trajectories.
- ``noncritical``: a seeded sample of the steps *not* in a reference mask (the paper's
  non-critical baseline); a trajectory whose steps are all critical gets none, and is counted.
- ``perplexity``: the highest base-model nll_mean (the paper's perplexity baseline).
- ``score``: the highest weighted sum of per-trajectory z-scored metrics from the scoring pass.
- ``oracle``: an LLM's answer (atlas_jax.selection.oracle); ranked in the order it listed them.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
from typing import Mapping, Sequence

import numpy as np

from atlas_jax.data.mask import MaskEntry
from atlas_jax.data.trajectory import Trajectory
from atlas_jax.selection.scores_io import METRICS, ScoresError

SELECTORS = ("all", "random", "noncritical", "perplexity", "score", "oracle")
DEFAULT_COMBINE = "obs_dependence=1,ifd=-1"


@dataclasses.dataclass
class Selection:
    item_id: str
    num_steps: int
    ranked: list[int]  # most important first, at most the cap
    criteria: dict[int, str | None] | None = None  # oracle: step -> criterion
    plan: str | None = None  # oracle: its high-level plan

    def critical(self) -> list[int]:
        return sorted(self.ranked)


def step_cap(num_steps: int, ratio: float) -> int:
    """floor(ratio * n) steps, at least one (the paper's per-trajectory cap)."""
    if not 0 < ratio <= 1:
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    return max(1, min(num_steps, math.floor(ratio * num_steps + 1e-9)))


def item_rng(seed: int, item_id: str) -> np.random.Generator:
    digest = hashlib.sha256(item_id.encode("utf-8")).digest()
    return np.random.default_rng([seed, int.from_bytes(digest[:8], "little")])


def candidate_steps(traj: Trajectory) -> list[int]:
    """Steps a selector may choose: the trainable steps (never a ``loss: false`` turn)."""
    return list(traj.trainable_steps)


def trajectory_cap(traj: Trajectory, ratio: float) -> int:
    """The per-trajectory cap, counted on trainable steps: floor(ratio * trainable), at least one."""
    return step_cap(len(traj.trainable_steps), ratio)


def select_all(traj: Trajectory) -> Selection:
    return Selection(traj.item_id, traj.num_steps, candidate_steps(traj))


def select_random(traj: Trajectory, ratio: float, seed: int) -> Selection:
    candidates = np.array(candidate_steps(traj), np.int64)
    order = candidates[item_rng(seed, traj.item_id).permutation(len(candidates))]
    return Selection(traj.item_id, traj.num_steps, [int(i) for i in order[:trajectory_cap(traj, ratio)]])


def select_noncritical(traj: Trajectory, ratio: float, seed: int, reference: MaskEntry) -> Selection:
    if reference.num_steps != traj.num_steps:
        raise ValueError(f"{reference.source} item_id={traj.item_id!r}: reference mask says "
                         f"num_steps={reference.num_steps}, the trajectory has {traj.num_steps}")
    rest = np.array(sorted(set(candidate_steps(traj)) - set(reference.critical)), np.int64)
    order = rest[item_rng(seed, traj.item_id).permutation(len(rest))]
    return Selection(traj.item_id, traj.num_steps, [int(i) for i in order[:trajectory_cap(traj, ratio)]])


def select_top(traj: Trajectory, ratio: float, values: Sequence[float | None]) -> Selection:
    """Highest values first; ties by step index; steps without a value (truncated) come last."""
    order = sorted(candidate_steps(traj), key=lambda k: (values[k] is None, -(values[k] or 0.0), k))
    return Selection(traj.item_id, traj.num_steps, order[:trajectory_cap(traj, ratio)])


def parse_combine(text: str) -> dict[str, float]:
    """"metric=weight,..." -> {metric: weight}; metrics from the scores file."""
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, weight = part.partition("=")
        name = name.strip()
        if name not in METRICS:
            raise ValueError(f"--combine: unknown metric {name!r}; expected one of {', '.join(METRICS)}")
        try:
            out[name] = float(weight) if sep else 1.0
        except ValueError:
            raise ValueError(f"--combine: weight of {name!r} must be a number, got {weight!r}") from None
    if not out:
        raise ValueError("--combine names no metric")
    return out


def metric_values(record: dict, name: str) -> list[float | None]:
    steps = record["steps"]
    if steps and name not in steps[0]:
        raise ScoresError(f"{record.get('source', 'scores')} item_id={record['item_id']!r}: no {name!r} "
                          f"(score with the variant that computes it)")
    return [s.get(name) for s in steps]


def combined_scores(record: dict, combine: Mapping[str, float],
                    steps: Sequence[int] | None = None) -> list[float | None]:
    """Σ weight · z(metric) per step, z-scored within the trajectory over ``steps`` (default: all; pass the
    trainable steps so context turns do not shift the statistics); a missing value counts as the mean;
    steps outside ``steps`` get None."""
    total = np.zeros(record["num_steps"])
    known = np.zeros(record["num_steps"], bool)
    inside = np.zeros(record["num_steps"], bool)
    inside[list(range(record["num_steps"]) if steps is None else steps)] = True
    for name, weight in combine.items():
        values = metric_values(record, name)
        have = np.array([v is not None for v in values]) & inside
        if not have.any():
            continue
        x = np.array([v if v is not None else 0.0 for v in values], np.float64)
        mean, std = x[have].mean(), x[have].std()
        z = np.where(have, (x - mean) / std if std > 0 else 0.0, 0.0)
        total += weight * z
        known |= have
    return [float(v) if k else None for v, k in zip(total, known)]


def scores_for(traj: Trajectory, scores: Mapping[str, dict]) -> dict:
    record = scores.get(traj.item_id)
    if record is None:
        raise ScoresError(f"{traj.source} item_id={traj.item_id!r}: not in the scores file")
    if record["num_steps"] != traj.num_steps:
        raise ScoresError(f"{record['source']} item_id={traj.item_id!r}: scores have {record['num_steps']} steps, "
                          f"the trajectory has {traj.num_steps}")
    return record


@dataclasses.dataclass
class BudgetReport:
    budget: int
    tokens_before: int
    tokens_after: int
    steps_before: int
    steps_after: int

    def summary(self) -> str:
        return (f"token budget {self.budget}: kept {self.steps_after}/{self.steps_before} ranked steps, "
                f"{self.tokens_after}/{self.tokens_before} step tokens")


def apply_token_budget(selections: Sequence[Selection], step_tokens: Mapping[str, Sequence[int]],
                       budget: int) -> BudgetReport:
    """Trim ``ranked`` lists in place so the selected step tokens total at most ``budget``.

    Rank by rank: every trajectory's first step is kept (the at-least-one rule; an error if that
    alone exceeds the budget), then every second-ranked step in input order, and so on; a
    trajectory stops at its first step that no longer fits.
    """
    def tokens(sel, k):
        return int(step_tokens[sel.item_id][k])

    before = sum(tokens(s, k) for s in selections for k in s.ranked)
    steps_before = sum(len(s.ranked) for s in selections)
    floor = sum(tokens(s, s.ranked[0]) for s in selections if s.ranked)
    if floor > budget:
        raise ValueError(f"token budget {budget} is below the {floor} tokens of one step per trajectory")
    used, kept = floor, {id(s): s.ranked[:1] for s in selections}
    open_ = [s for s in selections if len(s.ranked) > 1]
    level = 1
    while open_:
        still = []
        for s in open_:
            t = tokens(s, s.ranked[level])
            if used + t <= budget:
                used += t
                kept[id(s)].append(s.ranked[level])
                if len(s.ranked) > level + 1:
                    still.append(s)
        open_, level = still, level + 1
    for s in selections:
        s.ranked = kept[id(s)]
    return BudgetReport(budget, before, used, steps_before, sum(len(s.ranked) for s in selections))
