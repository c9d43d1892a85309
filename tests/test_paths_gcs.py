"""gs:// paths for real, against a local GCS emulator (gcp-storage-emulator, in-process on an
ephemeral 127.0.0.1 port): a training run whose output_dir is a bucket writes its config,
metrics, TensorBoard events and Orbax checkpoints there and resumes from them; score, select,
export and the atomic writes read and write the bucket. gcsfs (behind etils.epath) finds the
emulator through STORAGE_EMULATOR_HOST, TensorStore (behind Orbax) through
TENSORSTORE_GCS_HTTP_URL with a fake token. Needs the "test" extra (gcsfs, gcp-storage-emulator)."""
from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

if importlib.util.find_spec("gcsfs") is None or importlib.util.find_spec("gcp_storage_emulator") is None:
    pytest.skip("needs the test extra: gcsfs and gcp-storage-emulator", allow_module_level=True)

from etils import epath  # noqa: E402

from atlas_jax import paths  # noqa: E402
from atlas_jax.cli import main  # noqa: E402
from atlas_jax.outputs import atomic_write  # noqa: E402
from tests.train.conftest import TINY_CPU, TINY_MODEL, base_overrides, trajectory  # noqa: E402
from tests.train.test_train_loop import read_losses  # noqa: E402

BUCKET = "atlas-test"


def _serve_generations():
    """Make the emulator's media downloads answer as GCS does: an ``x-goog-generation`` header
    and 304 for ``ifGenerationNotMatch`` of the current generation. TensorStore conditions its
    next write on the generation it read; without the header an OCDBT manifest rewrite can fail
    with "Malformed StorageGeneration" (seen once in three runs of this module)."""
    from http import HTTPStatus

    from gcp_storage_emulator import server
    from gcp_storage_emulator.handlers import objects

    original = getattr(objects.download, "original", objects.download)

    def download(request, response, storage, *args, **kwargs):
        try:
            obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
        except Exception:  # noqa: BLE001  (the original answers 404)
            obj = None
        if obj is not None:
            if request.query.get("ifGenerationNotMatch", [None])[0] == obj["generation"]:
                response.status = HTTPStatus.NOT_MODIFIED
                return None
            response["x-goog-generation"] = obj["generation"]
        return original(request, response, storage, *args, **kwargs)

    download.original = original
    objects.download = download  # objects.get(alt=media) calls it by name
    for _, handlers in server.HANDLERS:
        for method, handler in list(handlers.items()):
            if handler is original:
                handlers[method] = download


@pytest.fixture(scope="module")
def gcs():
    """The emulator's bucket URL, with gcsfs and TensorStore pointed at it for this module."""
    from gcp_storage_emulator.server import Server

    _serve_generations()
    server = Server("127.0.0.1", 0, in_memory=True, default_bucket=BUCKET)
    server.start()
    url = "http://127.0.0.1:%d" % server._api._httpd.server_address[1]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")  # read at import: no bucket-type lookups
        mp.setenv("NO_GCE_CHECK", "true")  # no probe of the GCE metadata server for credentials
        mp.setenv("STORAGE_EMULATOR_HOST", url)
        mp.setenv("TENSORSTORE_GCS_HTTP_URL", url)
        mp.setenv("GOOGLE_AUTH_TOKEN_FOR_TESTING", "emulator")
        _forget_filesystems()
        yield f"gs://{BUCKET}"
    _forget_filesystems()
    server.stop()


def _forget_filesystems():
    import gcsfs
    from etils.epath import backend

    gcsfs.GCSFileSystem.clear_instance_cache()
    backend.fsspec_backend._get_filesystem.cache_clear()


@pytest.fixture(scope="module")
def assets(gcs, tmp_path_factory):
    """Tokenizer, model config and trajectories, all in the bucket."""
    from atlas_jax.data.tiny_tokenizer import build_tiny_tokenizer

    root = tmp_path_factory.mktemp("gcs_assets")
    tokenizer = build_tiny_tokenizer(root / "tokenizer")
    remote = epath.Path(gcs) / "inputs"
    for f in epath.Path(tokenizer).iterdir():
        f.copy(remote / "tokenizer" / f.name)
    (remote / "tiny_model.json").write_text(json.dumps(TINY_MODEL))
    (remote / "train.jsonl").write_text("".join(json.dumps(trajectory(i)) + "\n" for i in range(8)))
    return {"tokenizer": f"{remote}/tokenizer", "model_config": f"{remote}/tiny_model.json",
            "train": f"{remote}/train.jsonl"}


def _train(assets, output_dir, *extra):
    from atlas_jax.train.config import load_run_config
    from atlas_jax.train.trainer import train

    return train(load_run_config(TINY_CPU, base_overrides(assets, output_dir) + list(extra)))


@pytest.fixture(scope="module")
def gcs_run(gcs, assets):
    """6 steps into gs://; then the newest checkpoint is deleted and the run resumes from step 4."""
    out = f"{gcs}/runs/tiny"
    first = _train(assets, out)
    assert first.status == "completed" and str(first.checkpoint_dir) == f"{out}/checkpoints"
    ckpt = epath.Path(out) / "checkpoints"
    assert sorted(p.name for p in ckpt.iterdir() if p.name.isdigit()) == ["4", "6"]
    (ckpt / "6").rmtree()
    second = _train(assets, out)
    return out, first, second


def test_training_writes_to_the_bucket_and_resumes_from_it(gcs_run):
    out, first, second = gcs_run
    run = epath.Path(out)
    assert second.status == "completed" and sorted(second.losses) == [5, 6]  # resumed after step 4
    for step in (5, 6):
        assert second.losses[step] == pytest.approx(first.losses[step], rel=1e-6), step
    config = json.loads((run / "config.json").read_text())
    assert config["output_dir"] == out and config["data"]["train_files"] == [f"{run.parent.parent}/inputs/train.jsonl"]
    # the resumed run dropped the killed run's steps 5-6 from the remote file, then appended its own
    logged = read_losses(run / "metrics.jsonl")
    assert sorted(logged) == [1, 2, 3, 4, 5, 6] and all(len(v) == 1 for v in logged.values())
    assert all(v == pytest.approx(first.losses[s], rel=1e-6) for s, vs in logged.items() for v in vs)
    assert len((run / "resume_log.jsonl").read_text().splitlines()) == 1  # one resume, logged in the bucket
    assert list((run / "tensorboard").glob("events.out.tfevents.*")), "TensorBoard events not uploaded"
    assert (run / "checkpoints" / "model_config.json").is_file()
    assert (run / "checkpoints" / "tokenizer" / "tokenizer.json").is_file()
    # nothing of the run landed on the local disk under a "gs:" folder
    assert not epath.Path("gs:").exists()


def test_score_select_export_read_and_write_the_bucket(gcs, gcs_run, assets, capsys):
    out, _, _ = gcs_run
    ckpt, scores, mask, hf = f"{out}/checkpoints", f"{gcs}/sel/scores.jsonl", f"{gcs}/sel/mask.jsonl", f"{gcs}/hf"
    assert main(["score", "--model", ckpt, "--tokenizer", assets["tokenizer"], "--data", assets["train"],
                 "--out", scores, "--dtype", "float32"]) == 0, capsys.readouterr().err
    rows = [json.loads(line) for line in epath.Path(scores).read_text().splitlines()]
    assert [r["item_id"] for r in rows] == [f"toy_{i}" for i in range(8)]
    assert all(len(r["steps"]) == 4 and all(s["nll_mean"] is not None for s in r["steps"]) for r in rows)
    assert main(["select", "--selector", "perplexity", "--ratio", "0.3", "--data",
                 assets["train"], "--scores", scores, "--out", mask]) == 0, capsys.readouterr().err
    masks = [json.loads(line) for line in epath.Path(mask).read_text().splitlines()]
    assert [m["item_id"] for m in masks] == [r["item_id"] for r in rows]
    for m, r in zip(masks, rows):  # the highest-NLL step of each trajectory is among the chosen ones
        top = max(r["steps"], key=lambda s: s["nll_mean"])["index"]
        assert m["critical"] == [top], (m, r)
    assert main(["export", "--checkpoint", ckpt, "--out", hf]) == 0, capsys.readouterr().err
    assert (epath.Path(hf) / "config.json").is_file()
    assert not [p.name for p in epath.Path(gcs).iterdir() if ".partial" in p.name]
    _same_logits(ckpt, hf)


def _same_logits(ckpt: str, hf: str) -> None:
    """The exported folder, downloaded, loads in transformers with the checkpoint's logits."""
    import torch
    from transformers import AutoModelForCausalLM

    from atlas_jax.convert.checkpoint import restore_model

    ids_BxT = np.array([[1, 5, 9, 33, 7, 2]])
    ours_BxTxV = np.asarray(restore_model(ckpt, dtype="float32")(ids_BxT))
    ref = AutoModelForCausalLM.from_pretrained(paths.local_copy(hf), torch_dtype=torch.float32)
    with torch.no_grad():
        theirs_BxTxV = ref(torch.tensor(ids_BxT)).logits.numpy()
    np.testing.assert_allclose(ours_BxTxV, theirs_BxTxV, atol=2e-4, rtol=2e-4)


def test_atomic_write_on_the_bucket_publishes_whole_files_only(gcs):
    target = epath.Path(gcs) / "atomic" / "a.jsonl"
    with atomic_write(target) as f:
        f.write("old\n")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as f:
            f.write("half of a new file\n")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old\n"
    partial = epath.Path(gcs) / "atomic" / "kept.partial"
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(target, keep_partial=partial) as f:
            f.write("episode 1\n")
            raise KeyboardInterrupt
    assert target.read_text() == "old\n" and partial.read_text() == "episode 1\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.jsonl", "kept.partial"]


def test_is_remote_and_absolute_keep_urls():
    assert paths.is_remote("gs://b/x") and not paths.is_remote("/tmp/x") and not paths.is_remote("file:///tmp/x")
    assert str(paths.absolute("gs://b/x/y")) == "gs://b/x/y"  # epath's own absolute() gives ./gs:/b/x/y
    assert str(paths.absolute("rel")).startswith("/")
