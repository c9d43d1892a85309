"""Agreement between two masks: A is the reference (e.g. the oracle), B the candidate (e.g. score).

Per trajectory: precision = |A∩B| / |B|, recall = |A∩B| / |A|, Jaccard = |A∩B| / |A∪B| (None
when the denominator is 0). Overall: micro (pooled step counts) and macro (mean over the
trajectories where the value is defined). Per criterion of A's steps (the oracle's ``criteria``):
how many B selected too (recall), and, when B has criteria, how many with the same one.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import os

from etils import epath

from atlas_jax.data.mask import MaskEntry, MaskError, read_mask


def read_criteria(path: str | os.PathLike) -> dict[str, dict[int, str | None]]:
    """{item_id: {step: criterion}} for the lines that carry ``criteria`` (after read_mask validated them)."""
    out = {}
    with epath.Path(path).open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            rec = json.loads(line)
            criteria = rec.get("criteria")
            if criteria is None:
                continue
            if not isinstance(criteria, list) or len(criteria) != len(rec["critical"]):
                raise MaskError(f"{path}:{lineno} item_id={rec['item_id']!r}: 'criteria' must list one criterion "
                                f"per critical step")
            out[str(rec["item_id"])] = dict(zip(rec["critical"], criteria))
    return out


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


@dataclasses.dataclass
class Comparison:
    per_item: list[dict]
    overall: dict
    per_criterion: dict
    only_in_a: list[str]
    only_in_b: list[str]

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def compare_masks(a: dict[str, MaskEntry], b: dict[str, MaskEntry], criteria_a: dict | None = None,
                  criteria_b: dict | None = None) -> Comparison:
    criteria_a, criteria_b = criteria_a or {}, criteria_b or {}
    common = [i for i in a if i in b]
    per_item, tp, na, nb, nu = [], 0, 0, 0, 0
    by_criterion = collections.defaultdict(lambda: {"in_a": 0, "selected_by_b": 0, "same_criterion": 0})
    b_has_criteria = bool(criteria_b)
    for item_id in common:
        ea, eb = a[item_id], b[item_id]
        if ea.num_steps != eb.num_steps:
            raise MaskError(f"item_id={item_id!r}: num_steps {ea.num_steps} in {ea.source} but {eb.num_steps} in "
                            f"{eb.source}")
        sa, sb = set(ea.critical), set(eb.critical)
        inter, union = len(sa & sb), len(sa | sb)
        per_item.append({"item_id": item_id, "num_steps": ea.num_steps, "a": sorted(sa), "b": sorted(sb),
                         "precision": _ratio(inter, len(sb)), "recall": _ratio(inter, len(sa)),
                         "jaccard": _ratio(inter, union)})
        tp, na, nb, nu = tp + inter, na + len(sa), nb + len(sb), nu + union
        for step in sa:
            label = criteria_a.get(item_id, {}).get(step) or "unlabelled"
            row = by_criterion[label]
            row["in_a"] += 1
            row["selected_by_b"] += step in sb
            if b_has_criteria and step in sb:
                row["same_criterion"] += criteria_b.get(item_id, {}).get(step) == criteria_a.get(item_id, {}).get(step)

    def macro(key):
        values = [r[key] for r in per_item if r[key] is not None]
        return sum(values) / len(values) if values else None

    overall = {"trajectories": len(common), "steps_a": na, "steps_b": nb, "steps_both": tp,
               "precision": _ratio(tp, nb), "recall": _ratio(tp, na), "jaccard": _ratio(tp, nu),
               "macro_precision": macro("precision"), "macro_recall": macro("recall"),
               "macro_jaccard": macro("jaccard")}
    per_criterion = {}
    for label, row in sorted(by_criterion.items()):
        row = dict(row, recall=_ratio(row["selected_by_b"], row["in_a"]))
        if b_has_criteria:
            row["same_criterion_rate"] = _ratio(row["same_criterion"], row["selected_by_b"])
        else:
            del row["same_criterion"]
        per_criterion[label] = row
    return Comparison(per_item, overall, per_criterion, [i for i in a if i not in b], [i for i in b if i not in a])


def compare_files(path_a: str, path_b: str) -> Comparison:
    return compare_masks(read_mask(path_a), read_mask(path_b), read_criteria(path_a), read_criteria(path_b))
