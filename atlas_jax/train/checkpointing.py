"""Training checkpoints: one Orbax step holds the parameters, the optimizer state, the Grain
iterator state and the loop's counters, so a restart continues on the exact next batch.

The directory is also a model checkpoint (model_config.json, item "params" as in
atlas_jax/convert/checkpoint.py): `atlas-jax export --checkpoint OUTPUT_DIR/checkpoints`.
"""
from __future__ import annotations

import sys
from typing import Any

import jax
import orbax.checkpoint as ocp
from flax import nnx

from atlas_jax import paths
from atlas_jax.convert.checkpoint import PARAMS_ITEM, write_model_metadata
from atlas_jax.model import ModelConfig

OPT_ITEM, DATA_ITEM, META_ITEM = "opt_state", "data_iter", "meta"


class TrainCheckpointer:
    def __init__(self, directory: paths.PathLike, model_cfg: ModelConfig, *, keep: int, async_save: bool,
                 hf_dir: paths.PathLike | None = None, tokenizer_dir: paths.PathLike | None = None):
        self.directory = paths.absolute(directory)
        write_model_metadata(self.directory, model_cfg, hf_dir=hf_dir, tokenizer_dir=tokenizer_dir)
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=async_save, create=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options,
                                             item_names=(PARAMS_ITEM, OPT_ITEM, DATA_ITEM, META_ITEM))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, params: nnx.State, opt_state: Any, data_state: dict, meta: dict) -> None:
        self.manager.save(step, args=ocp.args.Composite(**{
            PARAMS_ITEM: ocp.args.StandardSave(nnx.to_pure_dict(params)),
            OPT_ITEM: ocp.args.StandardSave(opt_state),
            DATA_ITEM: ocp.args.JsonSave(data_state),
            META_ITEM: ocp.args.JsonSave(meta),
        }), force=True)

    def restore_latest(self, params: nnx.State, opt_state: Any) -> tuple[int, nnx.State, Any, dict, dict] | None:
        """The newest step that restores (None when there is none): a damaged newest step (a torn
        copy, a deleted file) is named and skipped, so one bad save never loses the good ones."""
        failures = []
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                restored = self.restore(step, params, opt_state)
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as e:  # noqa: BLE001  (Orbax/TensorStore raise many kinds)
                reason = (str(e).splitlines() or [type(e).__name__])[0][:200]
                failures.append(step)
                print(f"warning: {self.directory}: checkpoint step {step} cannot be restored ({reason}); "
                      "trying an older step", file=sys.stderr)
                continue
            if failures:
                kept = self._set_aside(failures)
                print(f"warning: {self.directory}: resuming from step {step}, not from the damaged "
                      f"step(s) {failures} (kept as {', '.join(kept)})", file=sys.stderr)
            return (step, *restored)
        if failures:
            raise ValueError(f"{self.directory}: no checkpoint step can be restored (tried {failures}); "
                             "move the folder away to start afresh")
        return None

    def latest_data_shards(self) -> int | None:
        """The number of data shards of the newest step whose data state reads (None: no checkpoint),
        so a resumed run builds its pipeline in the layout it will restore."""
        from atlas_jax.data.pipeline import shard_states

        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                states = self.manager.restore(step, args=ocp.args.Composite(**{DATA_ITEM: ocp.args.JsonRestore()}))
                return len(shard_states(states[DATA_ITEM]))
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception:  # noqa: BLE001  a damaged step: restore_latest names it and falls back
                continue
        return None

    def _set_aside(self, steps: list[int]) -> list[str]:
        """Rename damaged step folders out of Orbax's way (the run saves those steps again), keeping
        them for inspection rather than deleting anything."""
        names = []
        for step in steps:
            name = f"{step}.damaged"
            n = 1
            while (self.directory / name).exists():
                n += 1
                name = f"{step}.damaged-{n}"
            if jax.process_index() == 0:
                (self.directory / str(step)).rename(self.directory / name)
            names.append(name)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            multihost_utils.sync_global_devices("atlas_jax_set_aside_damaged_steps")
        self.manager.reload()
        return names

    def restore(self, step: int, params: nnx.State, opt_state: Any) -> tuple[nnx.State, Any, dict, dict]:
        """Restore into the layout (shapes, dtypes, shardings) of the given live state."""
        def abstract(tree):
            return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)
        restored = self.manager.restore(step, args=ocp.args.Composite(**{
            PARAMS_ITEM: ocp.args.StandardRestore(abstract(nnx.to_pure_dict(params))),
            OPT_ITEM: ocp.args.StandardRestore(abstract(opt_state)),
            DATA_ITEM: ocp.args.JsonRestore(),
            META_ITEM: ocp.args.JsonRestore(),
        }))
        new_params = jax.tree.map(lambda x: x, params)  # same structure, then filled in
        nnx.replace_by_pure_dict(new_params, restored[PARAMS_ITEM])
        return new_params, restored[OPT_ITEM], restored[DATA_ITEM], restored[META_ITEM]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
