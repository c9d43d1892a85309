"""The ablation: base stage -> scores -> one mask, fine-tune and evaluation per (row, seed) -> table.

Layout under ``output_dir``::

    ablation_config.json      the resolved config; a resume with another config is refused
    tokenizer/  data/         the tiny tokenizer (tokenizer: tiny) and generated expert trajectories
    jax-cache/                compiled programs shared by the rows (unless a JAX cache dir is set)
    base/                     the base stage's train run (checkpoints/, metrics.jsonl) and DONE.json
    scores.jsonl              the base model's per-step scores (atlas `score` and `perplexity` rows)
    rows/ROW/seed_S/          mask.jsonl, train/ (checkpoints, metrics), train_cost.json, eval/ENV/ENV.jsonl,
                              DONE.json
    table.md  table.json  table.png

``DONE.json`` is written atomically and last: a directory with it is finished and never redone;
anything else is (re)done on the next run, training resuming from its own last checkpoint.
"""
from __future__ import annotations

import os
import time
from typing import Sequence

from atlas_jax import paths
from atlas_jax.ablate import stages
from atlas_jax.ablate.config import AblationConfig, as_dict, check_rows, config_diff

DONE = "DONE.json"
CONFIG_FILE = "ablation_config.json"
_NOT_FINGERPRINTED = ("output_dir", "rows")  # which rows run, and where, change no row's result


def fingerprint(cfg: AblationConfig) -> dict:
    """The config as saved, with the train_config file's content (an edit to it changes results too)."""
    from atlas_jax.config_loader import load_yaml

    saved = {k: v for k, v in as_dict(cfg).items() if k not in _NOT_FINGERPRINTED}
    return {**saved, "train_config_content": load_yaml(cfg.train_config)}


def check_resume(cfg: AblationConfig) -> None:
    """First run: save the config. Later runs: refuse if anything that shapes a result changed."""
    paths.Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
    path = paths.join(cfg.output_dir, CONFIG_FILE)
    new = fingerprint(cfg)
    if not paths.Path(path).exists():
        stages.write_json(path, new)
        return
    import json
    old = json.loads(json.dumps(stages.read_json(path)))
    new = json.loads(json.dumps(new))  # tuples -> lists, as saved
    diff = config_diff(old, new)
    if diff:
        raise ValueError(f"{cfg.output_dir} holds an ablation run with another config ({path}); keys that differ: "
                         f"{'; '.join(diff)}. Use a new output_dir, or restore those values to resume")


def enable_compilation_cache(directory: str) -> None:
    """Every row compiles the same train step and eval programs (same shapes): JAX's persistent
    cache compiles them once per ablation (and across a resume). A cache the user set is kept."""
    import jax

    if not jax.config.jax_compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", directory)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
        print(f"ablate: JAX compilation cache in {directory}", flush=True)


def row_dir(cfg: AblationConfig, row: str, seed: int) -> str:
    return paths.join(cfg.output_dir, "rows", row, f"seed_{seed}")


def is_done(directory: str) -> bool:
    return paths.Path(directory, DONE).is_file()


class Ablation:
    def __init__(self, cfg: AblationConfig, rows: Sequence[str] | None = None):
        self.cfg = cfg
        self.rows = check_rows(rows, "--rows") if rows else check_rows(cfg.rows, "rows")
        self._scores: str | None = None

    def run(self) -> dict:
        cfg = self.cfg
        stages.check_eval(cfg.eval)  # before any training
        stages.check_train_configs(cfg)
        check_resume(cfg)
        enable_compilation_cache(paths.join(cfg.output_dir, "jax-cache"))
        self.base_model = self.base_stage()
        self.tokenizer = stages.tokenizer_dir(cfg, self.base_model)  # (`trained`: built by the base stage)
        self.files = stages.stage_files(cfg, cfg.finetune)
        for row in self.rows:
            for seed in cfg.seeds:
                self.row(row, seed)
        from atlas_jax.ablate.table import write_table
        return write_table(cfg)

    # -- stages --------------------------------------------------------------------------------
    def base_stage(self) -> str:
        cfg = self.cfg
        if cfg.base.model is not None:
            return cfg.base.model
        out = paths.join(cfg.output_dir, "base")
        files = stages.stage_files(cfg, cfg.base)
        tokenizer = stages.tokenizer_dir(cfg, None, files)
        if not is_done(out):
            run_cfg, budget = stages.run_config(cfg, cfg.base, output_dir=out, files=files, tokenizer=tokenizer,
                                                mask=None, init_from=None, seed=cfg.seeds[0])
            cost = stages.train_stage(run_cfg, budget)
            stages.write_json(paths.join(out, DONE), {"stage": "base", "files": files, "cost": cost})
        else:
            print(f"ablate: base stage already done ({out})", flush=True)
        return stages.read_json(paths.join(out, DONE))["cost"]["checkpoint"]

    def scores(self) -> str:
        if self._scores is None:
            self._scores = stages.score(self.cfg, self.base_model, self.tokenizer, self.files)
        return self._scores

    def mask(self, row: str, seed: int) -> str:
        cfg = self.cfg
        out = paths.join(row_dir(cfg, row, seed), "mask.jsonl")
        if paths.Path(out).exists():
            return out
        if row == "all":
            return stages.select(cfg, "all", self.files, out, seed)
        if row == "random":
            return stages.select(cfg, "random", self.files, out, seed)
        if row == "perplexity":
            return stages.select(cfg, "perplexity", self.files, out, seed, scores=self.scores())
        if row == "atlas":
            selector = cfg.selection.atlas_selector
            scores = self.scores() if selector == "score" else None
            return stages.select(cfg, selector, self.files, out, seed, scores=scores)
        # noncritical: the same ratio drawn from the steps the atlas selector did not pick
        return stages.select(cfg, "noncritical", self.files, out, seed, reference=self.mask("atlas", seed))

    def row(self, row: str, seed: int) -> None:
        cfg = self.cfg
        out = row_dir(cfg, row, seed)
        if is_done(out):
            print(f"ablate: row {row} seed {seed} already done ({out})", flush=True)
            return
        print(f"ablate: row {row} seed {seed}", flush=True)
        mask = self.mask(row, seed)
        cost_file = paths.join(out, "train_cost.json")  # a kill during eval does not redo (or re-time) training
        if not paths.Path(cost_file).exists():
            run_cfg, budget = stages.run_config(cfg, cfg.finetune, output_dir=paths.join(out, "train"),
                                                files=self.files, tokenizer=self.tokenizer, mask=mask,
                                                init_from=self.base_model, seed=seed)
            stages.write_json(cost_file, stages.train_stage(run_cfg, budget))
        cost = stages.read_json(cost_file)
        start = time.perf_counter()
        episodes = {}
        for env in cfg.eval.envs:
            path = stages.evaluate(cost["checkpoint"], self.tokenizer, env, cfg.eval, seed,
                                   paths.join(out, "eval", env.label))
            episodes[env.label] = os.fspath(paths.Path(path).relative_to(out))
        cost["eval_seconds"] = round(time.perf_counter() - start, 2)
        stages.write_json(paths.join(out, DONE), {"row": row, "seed": seed, "mask": "mask.jsonl",
                                                    "mask_stats": mask_stats(mask, self.files), "cost": cost,
                                                    "episodes": episodes})
        print(f"ablate: row {row} seed {seed} done ({cost['train_seconds']:.0f} s train, "
              f"{cost['eval_seconds']:.0f} s eval)", flush=True)


def mask_stats(path: str, files: list[str]) -> dict:
    """Chosen steps against *trainable* steps (AgentGym's acknowledgement is a step of the mask
    file but never trainable), so the `all` row reads 100%."""
    from atlas_jax.data.mask import read_mask
    from atlas_jax.data.trajectory import read_trajectories

    entries = read_mask(path)
    trainable = {t.item_id: len(t.trainable_steps) for t in read_trajectories(files)[0]}
    chosen = sum(len(e.critical) for e in entries.values())
    total = sum(trainable[item] for item in entries)
    return {"trajectories": len(entries), "critical_steps": chosen, "steps": total}
