"""compmech.loaders: torch IterableDataset and Hugging Face datasets, deterministic in the
seed for any number of workers and any chunking, and equal to compmech's own sources."""
from __future__ import annotations

import multiprocessing as mp

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import compmech as cm
from compmech.data import ExactSource, StreamSource
from compmech.loaders import SourceDataset, StreamDataset, hf_dataset, hf_iterable_dataset, sequence_columns

PROC = cm.processes.mess3(0.05, 0.85)


# Workers come from a fork server (preloaded with torch and compmech), not fork(): another test
# module may have started JAX's threads in this process, and forking those can deadlock.
_MP = mp.get_context("forkserver")
_MP.set_forkserver_preload(["torch", "compmech.loaders"])


def _loader(ds, workers):
    return DataLoader(ds, batch_size=None, num_workers=workers, multiprocessing_context=_MP if workers else None)


def _stream(ds, workers):
    return list(_loader(ds, workers))


def _same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        if isinstance(x, dict):
            assert x.keys() == y.keys()
            for k in x:
                assert torch.equal(x[k], y[k]), k
        else:
            for u, v in zip(x, y):
                assert torch.equal(u, v)


@pytest.mark.parametrize("bos", [False, True])
def test_stream_dataset_equals_stream_source(bos):
    ds = StreamDataset(PROC, 6, 16, seed=5, bos=bos, steps=5)
    src = StreamSource(PROC, 6, 16, seed=5, bos=bos, background=False)
    for s, b in enumerate(ds):
        x, y = src.batch(s)
        assert torch.equal(b["inputs"], x) and torch.equal(b["targets"], y)
        assert b["inputs"].dtype == torch.long and b["targets"].dtype == torch.long


def test_stream_dataset_soft_targets_beliefs_match_compmech():
    ds = StreamDataset(PROC, 6, 16, seed=1, targets="distribution", beliefs=True, next_probs=True, steps=2)
    src = StreamSource(PROC, 6, 16, seed=1, background=False, soft_targets=True)
    for s, b in enumerate(ds):
        x, q = src.batch(s)
        assert torch.equal(b["inputs"], x)
        np.testing.assert_allclose(b["targets"].numpy(), q.numpy(), atol=1e-7)
        assert torch.equal(b["targets"], b["next_probs"])
        seq = cm.sample(PROC, 16, 7, seed=1, row_offset=s * 16)
        np.testing.assert_allclose(b["beliefs"].numpy(), cm.beliefs(PROC, seq[:, :6]), atol=1e-7)


def test_stream_dataset_bos_beliefs_start_at_the_initial_belief():
    b = StreamDataset(PROC, 4, 8, seed=0, bos=True, beliefs=True).batch(0)
    assert (b["inputs"][:, 0] == 3).all()
    np.testing.assert_allclose(b["beliefs"][:, 0].numpy(), np.broadcast_to(PROC.stationary, (8, 3)), atol=1e-7)


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
def test_stream_dataset_same_stream_for_any_number_of_workers():
    ds = StreamDataset(PROC, 5, 8, seed=3, steps=7, targets="distribution", beliefs=True)
    ref = _stream(ds, 0)
    assert len(ref) == 7
    for w in (1, 2, 3):
        _same(_stream(ds, w), ref)


def test_stream_dataset_resume_and_seed():
    full = list(StreamDataset(PROC, 5, 8, seed=3, steps=6))
    _same(list(StreamDataset(PROC, 5, 8, seed=3, steps=2, start_step=4)), full[4:])
    other = next(iter(StreamDataset(PROC, 5, 8, seed=4, steps=1)))
    assert not torch.equal(other["inputs"], full[0]["inputs"])
    assert len(StreamDataset(PROC, 5, 8, seed=3, steps=6)) == 6
    with pytest.raises(TypeError, match="endless"):
        len(StreamDataset(PROC, 5, 8, seed=3))


def test_source_dataset_exact_source_any_workers():
    src = ExactSource(PROC, 4, 8, seed=2, background=False)
    ref = []
    it = src.batches(0)
    for _ in range(5):
        ref.append(next(it))
    it.close()
    ds = SourceDataset(src, steps=5)
    _same(_stream(ds, 0), ref)
    _same(_stream(ds, 2), ref)


@pytest.mark.parametrize("kw, msg", [
    (dict(ctx=0), "ctx"), (dict(batch_size=-1), "batch_size"), (dict(targets="x"), "targets"),
    (dict(steps=-1), "steps"), (dict(seed=1.5), "seed"),
])
def test_stream_dataset_bad_arguments(kw, msg):
    args = dict(process=PROC, ctx=4, batch_size=8, seed=0)
    args.update(kw)
    with pytest.raises((ValueError, TypeError), match=msg):
        StreamDataset(**args)


def test_source_dataset_rejects_non_sources():
    with pytest.raises(TypeError, match="compmech.data source"):
        SourceDataset([1, 2])


# ---- Hugging Face -----------------------------------------------------------------------------

datasets = pytest.importorskip("datasets")


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_hf_dataset_columns_match_compmech(tmp_path):
    ds = hf_dataset(PROC, 7, 50, seed=9, beliefs=True, next_probs=True, chunk_rows=16, cache_dir=str(tmp_path))
    assert len(ds) == 50 and set(ds.column_names) == {"tokens", "beliefs", "next_probs"}
    d = ds.with_format("numpy")[:]
    seq = cm.sample(PROC, 50, 7, seed=9)
    np.testing.assert_array_equal(d["tokens"], seq)
    np.testing.assert_allclose(d["beliefs"], cm.beliefs(PROC, seq), atol=1e-7)
    q = cm.beliefs(PROC, seq, dtype=np.float64) @ (PROC.T @ PROC.w).T
    np.testing.assert_allclose(d["next_probs"], q, atol=1e-6)
    np.testing.assert_allclose(d["next_probs"].sum(-1), 1.0, atol=1e-6)


def test_hf_dataset_rows_do_not_depend_on_chunking_or_offset(tmp_path):
    a = hf_dataset(PROC, 5, 30, seed=1, chunk_rows=7, cache_dir=str(tmp_path / "a")).with_format("numpy")[:]["tokens"]
    b = hf_dataset(PROC, 5, 30, seed=1, chunk_rows=100, cache_dir=str(tmp_path / "b")).with_format("numpy")[:]["tokens"]
    c = hf_dataset(PROC, 5, 10, seed=1, row_offset=20, cache_dir=str(tmp_path / "c")).with_format("numpy")[:]["tokens"]
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a[20:], c)
    np.testing.assert_array_equal(a, sequence_columns(PROC, 5, 30, seed=1)["tokens"])


def test_hf_dataset_cache_is_keyed_by_the_compmech_version(tmp_path, monkeypatch):
    """Hugging Face caches a generated dataset under a fingerprint of the generator's Python code
    and arguments; a new build of the compiled sampler (the output stream changed in 0.2.0) has
    the same code and arguments, so a cache written by another compmech version would be served
    as this one's rows. The version is part of the key; the same version reuses the cache."""
    import compmech._version as version

    a = hf_dataset(PROC, 5, 8, seed=3, cache_dir=str(tmp_path))
    assert hf_dataset(PROC, 5, 8, seed=3, cache_dir=str(tmp_path))._fingerprint == a._fingerprint
    monkeypatch.setattr(version, "__version__", version.__version__ + ".other")
    b = hf_dataset(PROC, 5, 8, seed=3, cache_dir=str(tmp_path))
    assert b._fingerprint != a._fingerprint
    np.testing.assert_array_equal(b.with_format("numpy")[:]["tokens"], a.with_format("numpy")[:]["tokens"])


def test_hf_iterable_dataset_equals_dataset_and_shards(tmp_path):
    it = hf_iterable_dataset(PROC, 5, 40, seed=2, beliefs=True, chunk_rows=10)
    assert it.num_shards == 4
    rows = list(it)
    ref = hf_dataset(PROC, 5, 40, seed=2, beliefs=True, cache_dir=str(tmp_path)).with_format("numpy")[:]
    np.testing.assert_array_equal(np.array([r["tokens"] for r in rows]), ref["tokens"])
    np.testing.assert_allclose(np.array([r["beliefs"] for r in rows]), ref["beliefs"])
    again = [r["tokens"] for r in it]
    assert again == [r["tokens"] for r in rows]
    # through a torch DataLoader with 2 workers: every row once, each shard's rows intact
    it_t = it.with_format("torch")
    got = [tuple(r["tokens"].tolist()) for r in _loader(it_t, 2)]
    assert sorted(got) == sorted(tuple(t) for t in ref["tokens"].tolist())


def test_hf_bad_arguments():
    with pytest.raises(ValueError, match="num_rows"):
        hf_iterable_dataset(PROC, 5, 0, seed=0)
    with pytest.raises(ValueError, match="length"):
        hf_iterable_dataset(PROC, 0, 5, seed=0)


def test_pickled_datasets_still_generate():
    """spawn/forkserver workers unpickle the dataset; unpickled arrays carry fresh dtype objects
    that the compiled core's checks reject unless the loader re-creates them."""
    import pickle

    ds = StreamDataset(PROC, 5, 8, seed=3, targets="distribution", beliefs=True)
    _same([pickle.loads(pickle.dumps(ds)).batch(2)], [ds.batch(2)])
    src = SourceDataset(ExactSource(PROC, 4, 8, seed=2, background=False, soft_targets=True), steps=2)
    _same(list(pickle.loads(pickle.dumps(src))), list(src))
