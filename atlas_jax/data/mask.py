"""Critical-step mask files and per-step loss weights.

Mask JSONL (the output of `atlas-jax select`), one line per trajectory:
``{"item_id", "num_steps", "critical": [step indices], "weights": [optional floats], "selector": {...}}``.
``weights[k]`` is the weight of step ``critical[k]``; without ``weights`` every critical step weighs 1.

Step indices count every assistant turn (atlas_jax.data.trajectory); a mask never names a step
the data marks ``loss: false`` (AgentGym's acknowledgement): such a mask is an error.

Weight modes:
- ``mask``: ATLaS; critical steps carry their weight, every other step 0.
- ``all``: plain agent SFT; every trainable step weighs 1, the acknowledgement 0.
- ``agentgym``: each assistant turn's own ``loss`` flag (true or missing -> 1, false -> 0), as AgentGym
  trains; by the definition of trainable steps this gives the same weights as ``all``.
"""
from __future__ import annotations

import dataclasses
import math
import os
from typing import Mapping

import numpy as np

from atlas_jax.jsonl import ReadReport, iter_jsonl, skip_or_raise
from atlas_jax.data.trajectory import Trajectory

WEIGHT_MODES = ("mask", "all", "agentgym")
UNMASKED_POLICIES = ("error", "skip", "all")


class MaskError(ValueError):
    """Bad mask input; the message names file, line and item_id."""


@dataclasses.dataclass(frozen=True)
class MaskEntry:
    item_id: str
    num_steps: int
    critical: tuple[int, ...]
    weights: tuple[float, ...] | None = None
    source: str = ""

    def step_weights(self) -> np.ndarray:
        """float32[num_steps]: weight of every step."""
        out = np.zeros(self.num_steps, np.float32)
        out[list(self.critical)] = self.weights if self.weights is not None else 1.0
        return out


def parse_mask_entry(obj, where: str) -> MaskEntry:
    if not isinstance(obj, dict):
        raise MaskError(f"{where}: mask record must be a JSON object")
    item_id = obj.get("item_id")
    if not isinstance(item_id, (str, int)) or isinstance(item_id, bool):
        raise MaskError(f"{where}: mask record has no string 'item_id'")
    item_id = str(item_id)
    at = f"{where} item_id={item_id!r}"
    num_steps = obj.get("num_steps")
    if not isinstance(num_steps, int) or isinstance(num_steps, bool) or num_steps < 0:
        raise MaskError(f"{at}: 'num_steps' must be a non-negative integer, got {num_steps!r}")
    critical = obj.get("critical")
    if not isinstance(critical, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in critical):
        raise MaskError(f"{at}: 'critical' must be a list of step indices, got {critical!r:.80}")
    bad = [i for i in critical if not 0 <= i < num_steps]
    if bad:
        raise MaskError(f"{at}: critical step index {bad[0]} out of range for {num_steps} steps")
    if len(set(critical)) != len(critical):
        raise MaskError(f"{at}: 'critical' repeats a step index: {critical}")
    weights = obj.get("weights")
    if weights is not None:
        if not isinstance(weights, list) or len(weights) != len(critical):
            raise MaskError(f"{at}: 'weights' must be a list with one float per critical step "
                            f"({len(critical)}), got {weights!r:.80}")
        if not all(isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) and w >= 0
                   for w in weights):
            raise MaskError(f"{at}: 'weights' must be finite non-negative numbers, got {weights!r:.80}")
        weights = tuple(float(w) for w in weights)
    return MaskEntry(item_id, num_steps, tuple(critical), weights, where)


def read_mask(path: str | os.PathLike, *, on_error: str = "raise",
              report: ReadReport | None = None) -> dict[str, MaskEntry]:
    """Read a mask JSONL file into {item_id: MaskEntry}; bad lines and duplicate ids are errors, or
    with ``on_error="skip"`` are left out and counted in ``report`` (their trajectories then have no
    mask entry: the ``unmasked`` policy decides)."""
    entries: dict[str, MaskEntry] = {}
    for where, obj in iter_jsonl(path, "mask file", MaskError, on_error=on_error, report=report):
        try:
            entry = parse_mask_entry(obj, where)
            if entry.item_id in entries:
                raise MaskError(f"{where} item_id={entry.item_id!r}: duplicate; first at "
                                f"{entries[entry.item_id].source}")
        except MaskError as e:
            skip_or_raise(e, on_error, report)
            continue
        entries[entry.item_id] = entry
        if report is not None:
            report.used += 1
    return entries


def check_mask_against(mask: Mapping[str, MaskEntry], trajectories: list[Trajectory] | Mapping[str, int]) -> None:
    """Every mask entry must name a trajectory that exists and has the same number of steps.

    ``trajectories``: the trajectories, or {item_id: num_steps}.
    """
    steps = trajectories if isinstance(trajectories, Mapping) else {t.item_id: t.num_steps for t in trajectories}
    for item_id, entry in mask.items():
        if item_id not in steps:
            raise MaskError(f"{entry.source} item_id={item_id!r}: the mask names a trajectory that is not in the data")
        if steps[item_id] != entry.num_steps:
            raise MaskError(f"{entry.source} item_id={item_id!r}: mask says num_steps={entry.num_steps} but the "
                            f"trajectory has {steps[item_id]} assistant turns")


def step_weights(traj: Trajectory, mode: str, mask: Mapping[str, MaskEntry] | None = None,
                 unmasked: str = "error") -> np.ndarray | None:
    """float32[num_steps] weights of ``traj``'s steps, or None when ``unmasked="skip"`` drops it.

    ``unmasked`` decides, in mode "mask", what happens to a trajectory without a mask entry:
    "error" (default), "skip" (caller counts it) or "all" (train on every step).
    """
    if mode == "all":
        out = np.zeros(traj.num_steps, np.float32)
        out[list(traj.trainable_steps)] = 1.0
        return out
    if mode == "agentgym":
        return np.array([0.0 if t.loss is False else 1.0 for t in traj.step_turns], np.float32)
    if mode != "mask":
        raise ValueError(f"weight mode must be one of {WEIGHT_MODES}, got {mode!r}")
    if unmasked not in UNMASKED_POLICIES:
        raise ValueError(f"unmasked must be one of {UNMASKED_POLICIES}, got {unmasked!r}")
    if mask is None:
        raise ValueError("weight mode 'mask' needs a mask file (data.mask_file)")
    entry = mask.get(traj.item_id)
    if entry is None:
        if unmasked == "error":
            raise MaskError(f"{traj.source} item_id={traj.item_id!r}: no entry in the mask file; set "
                            f"unmasked (data.encode.unmasked, inspect --unmasked) to 'skip' or 'all' to handle "
                            f"trajectories without one")
        return None if unmasked == "skip" else step_weights(traj, "all")
    if entry.num_steps != traj.num_steps:
        raise MaskError(f"{entry.source} item_id={traj.item_id!r}: mask says num_steps={entry.num_steps} but the "
                        f"trajectory has {traj.num_steps} assistant turns")
    context = sorted(set(entry.critical) - set(traj.trainable_steps))
    if context:
        raise MaskError(f"{entry.source} item_id={traj.item_id!r}: critical step {context[0]} is marked loss: false "
                        f"in the data (context such as AgentGym's acknowledgement), never a trainable step")
    return entry.step_weights()
