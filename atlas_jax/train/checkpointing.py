"""Training checkpoints: one Orbax step holds the parameters, the optimizer state, the Grain
iterator state and the loop's counters, so a restart continues on the exact next batch.

The directory is also a model checkpoint (model_config.json, item "params" as in
atlas_jax/convert/checkpoint.py): `atlas-jax export --checkpoint OUTPUT_DIR/checkpoints`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from flax import nnx

from atlas_jax.convert.checkpoint import PARAMS_ITEM, write_model_metadata
from atlas_jax.model import ModelConfig

OPT_ITEM, DATA_ITEM, META_ITEM = "opt_state", "data_iter", "meta"


class TrainCheckpointer:
    def __init__(self, directory: str | Path, model_cfg: ModelConfig, *, keep: int, async_save: bool,
                 hf_dir: str | Path | None = None, tokenizer_dir: str | Path | None = None):
        self.directory = Path(directory).absolute()
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
