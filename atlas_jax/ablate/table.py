"""The ablation table, recomputed from the per-episode eval files of every finished (row, seed).

A cell pools the episodes of all seeds of a row in one environment: success rate k/n with the
Wilson score 95% interval. The held-in / held-out averages are the unweighted mean of their
environments' rates (as the paper averages tasks), with the mean of the environments' Wilson
bounds as interval: conservative (errors of different environments do not all align), and unlike a
normal approximation it does not collapse to a point at 0% or 100%.
Cells treat episodes as independent draws; the per-seed rates are listed too, so the spread
between training seeds can be seen.
"""
from __future__ import annotations

import json
import math

from atlas_jax import paths
from atlas_jax.ablate import stages
from atlas_jax.ablate.config import AblationConfig
from atlas_jax.ablate.runner import DONE, row_dir
from atlas_jax.outputs import atomic_write

Z95 = 1.959963984540054  # standard normal 97.5% quantile
INTERVAL = "Wilson score 95% interval over the pooled episodes of all seeds"
AVERAGE_INTERVAL = "mean of the environments' rates, between the means of their Wilson bounds (conservative)"
COST_KEYS = ("steps", "trained_positions", "tokens_processed", "padded_positions", "train_seconds", "eval_seconds")


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    low, high = max(0.0, centre - half), min(1.0, centre + half)
    return (0.0 if successes == 0 else low), (1.0 if successes == n else high)  # exact ends, no rounding


def read_episodes(path: str) -> tuple[int, int]:
    """(successes, episodes) of one eval file."""
    successes = episodes = 0
    with paths.Path(path).open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            record = json.loads(line)
            if "success" not in record:
                raise ValueError(f"{path}:{number}: episode record has no 'success' field")
            successes += bool(record["success"])
            episodes += 1
    return successes, episodes


def average(cells: list[dict]) -> dict | None:
    if not cells:
        return None
    m = len(cells)
    return {"rate": sum(c["rate"] for c in cells) / m, "low": sum(c["low"] for c in cells) / m,
            "high": sum(c["high"] for c in cells) / m, "envs": m}


def row_summary(cfg: AblationConfig, row: str) -> dict | None:
    done = {}
    for seed in cfg.seeds:
        directory = row_dir(cfg, row, seed)
        if paths.Path(directory, DONE).is_file():
            done[seed] = (directory, stages.read_json(paths.join(directory, DONE)))
    if not done:
        return None
    cells = {}
    for env in cfg.eval.envs:
        k = n = 0
        per_seed = {}
        for seed, (directory, marker) in done.items():
            ks, ns = read_episodes(paths.join(directory, marker["episodes"][env.label]))
            k, n = k + ks, n + ns
            per_seed[str(seed)] = ks / ns if ns else 0.0
        low, high = wilson(k, n)
        cells[env.label] = {"group": cfg.eval.group_of(env.label), "successes": k, "episodes": n,
                            "rate": k / n if n else 0.0, "low": low, "high": high, "per_seed": per_seed}
    cost = {key: sum(m["cost"].get(key) or 0 for _, m in done.values()) / len(done) for key in COST_KEYS}
    mask = {key: sum(m["mask_stats"][key] for _, m in done.values()) / len(done)
            for key in ("critical_steps", "steps")}
    return {"row": row, "seeds": sorted(done), "missing_seeds": [s for s in cfg.seeds if s not in done],
            "cells": cells, "cost_mean_per_seed": cost, "mask_mean_per_seed": mask,
            "held_in": average([c for c in cells.values() if c["group"] == "held_in"]),
            "held_out": average([c for c in cells.values() if c["group"] == "held_out"])}


def _pct(cell: dict | None) -> str:
    if cell is None:
        return "-"
    return f"{100 * cell['rate']:.1f} [{100 * cell['low']:.1f}, {100 * cell['high']:.1f}]"


def markdown(cfg: AblationConfig, rows: list[dict]) -> str:
    envs = cfg.eval.envs
    head = ([f"{e.label} ({'in' if cfg.eval.group_of(e.label) == 'held_in' else 'out'})" for e in envs]
            + ["held-in avg", "held-out avg", "critical/steps", "trained positions", "tokens processed",
               "train s", "eval s", "seeds"])
    lines = ["| row | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
    for r in rows:
        c, m = r["cost_mean_per_seed"], r["mask_mean_per_seed"]
        cells = [_pct(r["cells"][e.label]) + f" (n={r['cells'][e.label]['episodes']})" for e in envs]
        cells += [_pct(r["held_in"]), _pct(r["held_out"]), f"{m['critical_steps']:.0f}/{m['steps']:.0f}",
                  f"{c['trained_positions']:.0f}", f"{c['tokens_processed']:.0f}", f"{c['train_seconds']:.0f}",
                  f"{c['eval_seconds']:.0f}", ",".join(map(str, r["seeds"]))]
        lines.append(f"| {r['row']} | " + " | ".join(cells) + " |")
    notes = [f"Success rate in % with [95% interval]; cells: {INTERVAL}; averages: {AVERAGE_INTERVAL}.",
             f"Ratio {cfg.ratio}; atlas selector: {cfg.selection.atlas_selector}; costs are means per seed "
             "(trained positions: positions with loss weight > 0; tokens processed: non-padding positions)."]
    missing = [f"{r['row']} (seeds {r['missing_seeds']})" for r in rows if r["missing_seeds"]]
    if missing:
        notes.append("Not finished yet: " + ", ".join(missing) + ".")
    return "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n"


def plot(cfg: AblationConfig, rows: list[dict], path: str) -> bool:
    """Grouped bars: success rate per environment and row, Wilson error bars. False without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("ablate: matplotlib is not installed; no plot written (pip install matplotlib)", flush=True)
        return False
    labels = [e.label for e in cfg.eval.envs]
    width = 0.8 / max(len(rows), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(labels) * max(1, len(rows) / 3)), 4))
    for i, r in enumerate(rows):
        rates = [r["cells"][x]["rate"] for x in labels]
        err = [[max(0.0, r["cells"][x]["rate"] - r["cells"][x]["low"]) for x in labels],
               [max(0.0, r["cells"][x]["high"] - r["cells"][x]["rate"]) for x in labels]]
        xs = [j + (i - (len(rows) - 1) / 2) * width for j in range(len(labels))]
        ax.bar(xs, rates, width, yerr=err, capsize=3, label=r["row"])
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels([f"{x}\n({cfg.eval.group_of(x).replace('_', '-')})" for x in labels])
    ax.set_ylabel("success rate")
    ax.set_ylim(0, 1)
    ax.set_title(f"ablation at ratio {cfg.ratio} (95% Wilson intervals, seeds pooled)")
    ax.legend(fontsize="small")
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120)
    plt.close(fig)
    return True


def write_table(cfg: AblationConfig) -> dict:
    """table.json, table.md and table.png from every row with at least one finished seed."""
    from atlas_jax.ablate.config import ROWS

    summaries = [s for s in (row_summary(cfg, r) for r in ROWS) if s is not None]
    table = {"ratio": cfg.ratio, "seeds": list(cfg.seeds), "atlas_selector": cfg.selection.atlas_selector,
             "interval": INTERVAL, "average_interval": AVERAGE_INTERVAL,
             "envs": [{"label": e.label, "env": e.env, "group": cfg.eval.group_of(e.label), "split": e.split,
                       "episodes": e.episodes} for e in cfg.eval.envs],
             "rows": summaries}
    stages.write_json(paths.join(cfg.output_dir, "table.json"), table)
    text = markdown(cfg, summaries)
    with atomic_write(paths.join(cfg.output_dir, "table.md")) as f:
        f.write(text)
    plotted = plot(cfg, summaries, paths.join(cfg.output_dir, "table.png")) if summaries else False
    print(text + f"wrote {cfg.output_dir}/table.md, table.json{', table.png' if plotted else ''}", flush=True)
    return table
