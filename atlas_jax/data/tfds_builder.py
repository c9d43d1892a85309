"""A TFDS builder: trajectory files (AgentTraj-L / ShareGPT / OpenAI JSONL or JSON) -> ArrayRecord.

Works without TensorFlow: TFDS writes and reads ArrayRecord through its numpy-only paths. Each
example holds the item_id and the validated trajectory as AgentTraj-L JSON, so the Grain
pipeline reads it back with the same parser as the JSONL source.
"""
from __future__ import annotations

import json
import os
from typing import Mapping, Sequence

from etils import epath

from atlas_jax.data.trajectory import ReadReport, Trajectory, parse_record, read_trajectories

DATASET_NAME = "atlas_trajectories"


def _builder_class():
    import tensorflow_datasets as tfds

    class AtlasTrajectories(tfds.core.GeneratorBasedBuilder):
        """Agent trajectories, one example per trajectory."""

        name = DATASET_NAME
        VERSION = tfds.core.Version("1.0.0")
        RELEASE_NOTES = {"1.0.0": "item_id + AgentTraj-L JSON per trajectory"}
        # No checksums/metadata files live beside this class; a None code path also keeps TFDS
        # from probing the package with importlib_resources (not installed).
        code_path = None

        def __init__(self, *, splits: Mapping[str, Sequence[str]] | None = None, on_error: str = "raise", **kwargs):
            self._split_files = {k: list(v) for k, v in (splits or {}).items()}
            self._on_error = on_error
            self.read_reports: dict[str, ReadReport] = {}
            super().__init__(**kwargs)

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, description=__doc__, features=tfds.features.FeaturesDict({
                "item_id": tfds.features.Text(), "trajectory": tfds.features.Text()}))

        def _split_generators(self, dl_manager):
            if not self._split_files:
                raise ValueError("no input files: pass splits={'train': [files]}")
            return {split: self._generate_examples(split, files) for split, files in self._split_files.items()}

        def _generate_examples(self, split, files):
            trajectories, report = read_trajectories(files, on_error=self._on_error)
            self.read_reports[split] = report
            for traj in trajectories:
                yield traj.item_id, {"item_id": traj.item_id, "trajectory": json.dumps(traj.to_json())}

    return AtlasTrajectories


_BUILDER = None


def builder_class():
    """The tfds builder class (created on first use so importing this module does not import TFDS)."""
    global _BUILDER
    if _BUILDER is None:
        _BUILDER = _builder_class()
    return _BUILDER


def build_array_record(files: Sequence[str] | Mapping[str, Sequence[str]], data_dir: str | os.PathLike, *,
                       on_error: str = "raise", overwrite: bool = False) -> tuple[str, dict[str, ReadReport]]:
    """Prepare the ArrayRecord dataset under ``data_dir``; returns (dataset directory, read report per split).

    ``files``: a list (the "train" split) or {split: files}. The returned directory is what
    ``data.train_files`` takes to train from ArrayRecord.
    """
    splits = dict(files) if isinstance(files, Mapping) else {"train": list(files)}
    builder = builder_class()(splits=splits, on_error=on_error, data_dir=os.fspath(data_dir),
                              file_format="array_record")
    if epath.Path(builder.data_dir).exists():  # TFDS would silently reuse a stale dataset built from other files
        if not overwrite:
            raise FileExistsError(f"{builder.data_dir} already exists; pass overwrite=True to rebuild it")
        epath.Path(builder.data_dir).rmtree()
    builder.download_and_prepare()
    return os.fspath(builder.data_dir), builder.read_reports


def is_tfds_dir(path: str | os.PathLike) -> bool:
    return epath.Path(path).is_dir() and (epath.Path(path) / "dataset_info.json").is_file()


def open_array_record(dataset_dir: str | os.PathLike, split: str = "train"):
    """Random-access source of {"item_id": bytes, "trajectory": bytes} records of a prepared dataset."""
    import tensorflow_datasets as tfds

    sources = tfds.builder_from_directory(os.fspath(dataset_dir)).as_data_source()
    if split not in sources:
        raise KeyError(f"{dataset_dir}: no split {split!r} (has {sorted(sources)})")
    return sources[split]


def decode_example(example: Mapping, where: str) -> Trajectory:
    text = example["trajectory"]
    return parse_record(json.loads(text.decode("utf-8") if isinstance(text, bytes) else text), where)
