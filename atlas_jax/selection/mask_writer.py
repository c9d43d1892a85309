"""Writing mask JSONL files (the format atlas_jax.data.mask reads).

Each line: ``{"item_id", "num_steps", "critical", "selector": {...}}`` plus, from the oracle,
``"criteria"`` (one criterion or null per critical step, aligned with ``critical``) and ``"plan"``.
Every record is checked with the reader's own parser before anything is written, so a file
this writes always reads back.
"""
from __future__ import annotations

import json
import os
from typing import Iterable

from atlas_jax.data.mask import parse_mask_entry
from atlas_jax.outputs import atomic_write
from atlas_jax.selection.selectors import Selection


def mask_record(sel: Selection, selector: dict) -> dict:
    critical = sel.critical()
    rec = {"item_id": sel.item_id, "num_steps": sel.num_steps, "critical": critical}
    if sel.criteria is not None:
        rec["criteria"] = [sel.criteria.get(k) for k in critical]
    if sel.plan is not None:
        rec["plan"] = sel.plan
    rec["selector"] = selector
    return rec


def write_mask(path: str | os.PathLike, selections: Iterable[Selection], selector: dict) -> int:
    """Write one line per selection atomically (outputs.atomic_write, gs:// too); returns the number written."""
    path = os.fspath(path)
    lines = []
    for n, sel in enumerate(selections, start=1):
        rec = mask_record(sel, selector)
        parse_mask_entry(rec, f"{path}:{n}")  # what training will read
        lines.append(json.dumps(rec, ensure_ascii=False) + "\n")
    with atomic_write(path) as f:
        f.writelines(lines)
    return len(lines)
