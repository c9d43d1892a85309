"""Epochs and data shards: every epoch reshuffled (same records, new order), shards that cover each
epoch once, and iterator states that resume exactly on another process count."""
import collections

import numpy as np
import pytest

from atlas_jax.data.encode import EncodeOptions
from atlas_jax.data.order import EpochOrder
from atlas_jax.data.pipeline import DataConfig, TrainData
from tests.data.conftest import corpus, reference_sequence, write_jsonl

SEQ_LEN = 96


@pytest.fixture(scope="module")
def corpus_ids(tmp_path_factory, tokenizer):
    """A 10-record file and {token ids of a record's sequence: item_id} (sequences identify records)."""
    path = write_jsonl(tmp_path_factory.mktemp("shards") / "traj.jsonl", corpus(10))
    ids = {reference_sequence(tokenizer, rec, SEQ_LEN): rec["item_id"] for rec in corpus(10)}
    return path, ids


def items(batches, ids) -> list[str]:
    """The records of every packed sequence of the batches, in order."""
    out = []
    for batch in batches:
        for r in range(len(batch["input_ids"])):
            seg = batch["segment_ids"][r]
            for s in sorted(set(seg.tolist()) - {0}):
                out.append(ids[tuple(batch["input_ids"][r][seg == s].tolist())])
    return out


def data(path, tokenizer_dir, index=0, count=1, **kw):
    cfg = DataConfig(train_files=[path], tokenizer=tokenizer_dir, seq_len=SEQ_LEN, global_batch_size=4, seed=5,
                     encode=EncodeOptions(weight_mode="all"), num_packing_bins=2, **kw)
    return TrainData(cfg, process_index=index, process_count=count)


def assert_same(a, b):
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_epoch_order_is_grains_and_reshuffles_every_epoch():
    import grain

    for shards in (1, 2, 3):
        for shard in range(shards):
            ours = EpochOrder(10, seed=7, shuffle=True, shard=shard, shards=shards, num_epochs=3)
            # the Grain chain the pipeline used to build (pinned Grain: the slice carries the epoch)
            theirs = grain.MapDataset.range(10).shuffle(seed=7)[shard::shards].repeat(3)
            assert [ours[i] for i in range(len(ours))] == list(theirs)
    epochs = [[EpochOrder(10, seed=7, shuffle=True, shard=s, shards=2, num_epochs=None)[e * 5 + i]
               for s in range(2) for i in range(5)] for e in range(3)]
    assert all(sorted(e) == list(range(10)) for e in epochs)  # shards disjoint, each record once an epoch
    assert epochs[0] != epochs[1] != epochs[2] != epochs[0]  # a new order every epoch
    assert [EpochOrder(4, seed=0, shuffle=False, shard=0, shards=1, num_epochs=2)[i] for i in range(8)] == \
        [0, 1, 2, 3, 0, 1, 2, 3]


def test_two_epochs_reshuffle_and_resume_across_the_boundary(corpus_ids, tokenizer_dirs):
    path, ids = corpus_ids
    batches = list(data(path, tokenizer_dirs["marked"], num_epochs=2))
    seen = items(batches, ids)
    assert collections.Counter(seen) == collections.Counter({i: 2 for i in ids.values()})  # same records twice
    assert seen[:10] != seen[10:]  # in another order
    # stop near the end of epoch 1, resume in a new pipeline: the same batches across the boundary
    first = data(path, tokenizer_dirs["marked"], num_epochs=2)
    consumed = [next(first) for _ in range(len(batches) // 2 - 1)]
    resumed = data(path, tokenizer_dirs["marked"], num_epochs=2)
    resumed.set_state(first.get_state())
    rest = list(resumed)
    assert len(consumed) + len(rest) == len(batches)
    for got, want in zip(consumed + rest, batches):
        assert_same(got, want)


def test_two_shards_resume_on_one_process_and_back(corpus_ids, tokenizer_dirs):
    """Two processes (one shard each) -> one process -> two processes: the global batches are
    those of an uninterrupted run, and the epoch holds every record exactly once."""
    path, ids = corpus_ids
    tok = tokenizer_dirs["marked"]
    reference = list(data(path, tok, num_epochs=1, shards=2))  # one process reading both shards
    two = [data(path, tok, p, 2, num_epochs=1) for p in range(2)]
    got = []
    for _ in range(2):  # two global steps on two processes
        parts = [next(d) for d in two]
        got.append({k: np.concatenate([p[k] for p in parts]) for k in parts[0]})
    one = data(path, tok, num_epochs=1)  # one process, no data.shards: takes the checkpoint's two
    one.restore([d.get_state() for d in two])
    assert one.shards == 2 and one.local_shards == [0, 1]
    got.append(next(one))
    back = [data(path, tok, p, 2, num_epochs=1) for p in range(2)]
    for d in back:
        d.restore([one.get_state()])
    for parts in zip(*back):
        got.append({k: np.concatenate([p[k] for p in parts]) for k in parts[0]})
    assert len(got) == len(reference)
    for g, want in zip(got, reference):
        assert_same(g, want)
    assert collections.Counter(items(got, ids)) == collections.Counter(ids.values())


def test_a_state_that_cannot_be_split_is_refused_with_what_to_do(corpus_ids, tokenizer_dirs):
    path, _ = corpus_ids
    tok = tokenizer_dirs["marked"]
    state = data(path, tok).get_state()  # one process, one shard
    with pytest.raises(ValueError, match="1 data shards cannot be split over 2 processes: .* data.shards"):
        data(path, tok, 1, 2).restore([state])
    with pytest.raises(ValueError, match="data.shards=4, but the checkpoint's data state has 1 shards"):
        data(path, tok, shards=4).restore([state])


def test_a_bare_grain_state_from_before_shards_resumes(corpus_ids, tokenizer_dirs):
    """Checkpoints written before data shards hold one bare Grain state per process."""
    path, _ = corpus_ids
    first = data(path, tokenizer_dirs["marked"])
    next(first)
    bare = first.get_state()["states"]["0"]
    assert set(bare) == {"parent", "next_row", "counter"}  # the Grain packing iterator's own state
    want = [next(first) for _ in range(3)]
    for resume in ("set_state", "restore"):
        resumed = data(path, tokenizer_dirs["marked"])
        resumed.set_state(bare) if resume == "set_state" else resumed.restore([bare])
        for w in want:
            assert_same(next(resumed), w)
