"""compmech.scale.msp_reduce against the in-memory tree (cm.msp_tree) and numpy float64
references: exact counts, H(L) to 1e-12, results independent of shards, workers and chunking."""
import math
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("dask.distributed")
pytest.importorskip("zarr")

import compmech as cm
from compmech import scale
from compmech.scale import _exact


@pytest.fixture(scope="module")
def client():
    """One in-process Dask client for the module (what client=None starts per call)."""
    from dask.distributed import Client

    with Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None) as c:
        yield c


def ref_entropy(proc, depth, min_prob=0.0):
    """H(L) = -sum p log2 p, total probability and node count per level, from cm.msp_tree."""
    tree = cm.msp_tree(proc, depth, min_prob=min_prob)
    H, P, n = [], [], []
    for lvl in tree.levels:
        p = np.asarray(lvl.probs, np.float64)
        H.append(math.fsum(-p * np.log2(p)))
        P.append(math.fsum(p))
        n.append(len(p))
    return np.array(H), np.array(P), np.array(n), tree


PROCS = {
    "mess3": lambda: cm.processes.mess3(),
    "rrxor": lambda: cm.processes.rrxor(),            # impossible children: a ragged tree
    "random5x3": lambda: cm.processes.random_hmm(5, 3, seed=4, sparsity=0.3),
    "ghmm": lambda: cm.processes.random_ghmm_like(3, 2, seed=2),
}


@pytest.mark.parametrize("name,depth", [("mess3", 9), ("rrxor", 12), ("random5x3", 7), ("ghmm", 11)])
def test_entropy_matches_in_memory_tree(name, depth, client):
    proc = PROCS[name]()
    H, P, n, _ = ref_entropy(proc, depth)
    res = scale.msp_reduce(proc, depth, client=client)
    e = res.entropy
    np.testing.assert_array_equal(e.nodes, n)
    np.testing.assert_allclose(e.H, H, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(e.total_prob, P, rtol=0, atol=1e-12)
    np.testing.assert_allclose(e.h, np.diff(H), rtol=1e-11, atol=1e-12)
    # h(L) is the myopic entropy: measures' exact propagation on the finite / explored MSP agrees.
    ref_h = cm.measures.myopic_entropy(proc, depth).value
    np.testing.assert_allclose(e.h, ref_h, rtol=1e-9)


def test_min_prob_counts_exactly(client):
    proc = cm.processes.mess3()
    H, P, n, _ = ref_entropy(proc, 10, min_prob=1e-5)
    e = scale.msp_reduce(proc, 10, min_prob=1e-5, client=client).entropy
    np.testing.assert_array_equal(e.nodes, n)
    np.testing.assert_allclose(e.H, H, rtol=1e-12)
    assert e.total_prob[-1] < 1.0


def test_bit_identical_across_shards_and_chunks(client):
    proc = cm.processes.random_hmm(3, 3, seed=1)
    reds = [scale.BeliefHistogram(bins=16, depths=[6, 8]), scale.DistinctBeliefs(tol=1e-6)]
    runs = [scale.msp_reduce(proc, 8, reds, shards=s, max_nodes=m, client=client)
            for s, m in ((1, 1 << 20), (5, 50), (64, 29))]
    a = runs[0]
    for b in runs[1:]:
        np.testing.assert_array_equal(a.entropy.H_exact, b.entropy.H_exact)
        np.testing.assert_array_equal(a.entropy.prob_exact, b.entropy.prob_exact)
        assert a["distinct"] == b["distinct"]
        for d in (6, 8):
            np.testing.assert_array_equal(a["histogram"].counts[d], b["histogram"].counts[d])
            np.testing.assert_array_equal(a["histogram"].mass[d], b["histogram"].mass[d])


def test_histogram_and_distinct_match_reference(client):
    proc = cm.processes.mess3()
    depth, bins, tol = 9, 32, 1e-7
    tree = cm.msp_tree(proc, depth)
    res = scale.msp_reduce(proc, depth, [scale.BeliefHistogram(bins=bins, depths=[5, 9]),
                                          scale.DistinctBeliefs(tol=tol)], shards=7, max_nodes=300,
                           client=client)
    for d in (5, 9):
        b = tree.level(d).beliefs
        p = tree.level(d).probs
        ij = np.clip(np.floor(b[:, :2] * bins), 0, bins - 1).astype(int)
        counts = np.zeros((bins, bins), np.int64)
        np.add.at(counts, (ij[:, 0], ij[:, 1]), 1)
        mass = np.zeros((bins, bins))
        for (i, j), q in zip(map(tuple, ij), p):
            mass[i, j] += q
        np.testing.assert_array_equal(res["histogram"].counts[d], counts)
        np.testing.assert_allclose(res["histogram"].mass[d], mass, rtol=1e-12, atol=1e-18)
    ref = {d: len(np.unique(np.rint(tree.level(d).beliefs / tol).astype(np.int64), axis=0))
           for d in range(1, depth + 1)}
    assert res["distinct"] == ref
    dim, se, table = res["histogram"].box_counting_dimension(9)
    assert 0 < dim <= 2 and se >= 0 and table.shape[1] == 2


def test_user_reduction_sees_sequences_in_order(client):
    proc = cm.processes.rrxor()
    tree = cm.msp_tree(proc, 8)
    red = scale.UserReduction(
        "stats", lambda b, p, s: {"n0": np.array((s[:, -1] == 0).sum()), "mean": (p[:, None] * b).sum(0),
                                  "first": s[:1].copy()},
        lambda x, y: {"n0": x["n0"] + y["n0"], "mean": x["mean"] + y["mean"], "first": x["first"]},
        depths=[4, 8])
    res = scale.msp_reduce(proc, 8, [red], shards=6, max_nodes=16, client=client)
    for d in (4, 8):
        lvl = tree.level(d)
        assert int(res["stats"][d]["n0"]) == int((lvl.sequences[:, -1] == 0).sum())
        np.testing.assert_allclose(res["stats"][d]["mean"], lvl.probs @ lvl.beliefs, rtol=1e-12)
        np.testing.assert_array_equal(res["stats"][d]["first"], lvl.sequences[:1])


@pytest.mark.parametrize("name,min_prob", [("rrxor", 0.0), ("mess3", 3e-4)])
def test_zarr_levels_read_back_equal_msp_tree(tmp_path, client, name, min_prob):
    """rrxor: partial levels; mess3 with min_prob: full levels (implicit lineage) then partial."""
    proc = cm.processes.get(name)
    depth = 9
    store = str(tmp_path / "t.zarr")
    res = scale.msp_reduce(proc, depth, [], shards=7, store=store, zarr=True, zarr_chunk=37, max_nodes=40,
                           client=client, min_prob=min_prob)
    ref = cm.msp_tree(proc, depth, min_prob=min_prob)
    got = scale.load_tree(store)
    assert got.depth == depth
    if min_prob:
        assert ref.level(3).is_full and not ref.level(depth).is_full
    for d in range(depth + 1):
        a, b = ref.level(d), got.level(d)
        assert a.is_full == b.is_full
        for name in ("beliefs", "probs", "parent", "token"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=f"level {d} {name}")
        np.testing.assert_array_equal(a.sequences, b.sequences)
    lv = scale.open_levels(store)
    np.testing.assert_array_equal(lv[depth]["probs"].compute(), ref.level(depth).probs)
    assert res.entropy.nodes[-1] == len(ref.level(depth))


def test_resume_skips_finished_shards(tmp_path, client):
    import zarr

    proc = cm.processes.mess3()
    store = str(tmp_path / "r.zarr")
    reds = [scale.DistinctBeliefs(tol=1e-8, depths=[7])]
    full = scale.msp_reduce(proc, 7, reds, shards=6, store=store, client=client)
    g = zarr.open_group(store, mode="r+")
    # Simulate an interruption after two shards of each phase.
    g.attrs["done_entropy"] = [0, 3]
    g.attrs["done_chunks"] = [1, 5]
    again = scale.msp_reduce(proc, 7, reds, shards=6, store=store, client=client)
    assert again.info["shards_run"] == {"entropy": 4, "chunks": 4}
    np.testing.assert_array_equal(full.entropy.H_exact, again.entropy.H_exact)
    assert full["distinct"] == again["distinct"]
    done = scale.msp_reduce(proc, 7, reds, shards=6, store=store, client=client)
    assert done.info["shards_run"] == {"entropy": 0, "chunks": 0}
    with pytest.raises(ValueError, match="different MSP run"):
        scale.msp_reduce(proc, 7, reds, shards=6, store=store, client=client, min_prob=1e-6)
    with pytest.raises(ValueError, match="different MSP run"):
        scale.msp_reduce(proc, 8, reds, shards=5, store=store, client=client)


def test_rerun_with_other_reduction_parameters_is_refused(tmp_path, client):
    """A store's saved partials belong to their reductions' parameters: resuming with other
    ones (histogram bins, distinct tol) is refused, not merged (a crash for bins, a silently
    wrong distinct count for tol)."""
    import zarr

    proc = cm.processes.mess3()
    for first, second in ((scale.BeliefHistogram(bins=16), scale.BeliefHistogram(bins=32)),
                          (scale.DistinctBeliefs(tol=1e-8, depths=[6]), scale.DistinctBeliefs(tol=1e-3, depths=[6])),
                          (scale.DistinctBeliefs(depths=[5]), scale.DistinctBeliefs(depths=[6]))):
        store = str(tmp_path / f"{first.key()}.zarr")
        scale.msp_reduce(proc, 6, [first], shards=3, store=store, client=client)
        zarr.open_group(store, mode="r+").attrs.update({"done_chunks": [0], "complete": False})
        with pytest.raises(ValueError, match="different MSP run"):
            scale.msp_reduce(proc, 6, [second], shards=3, store=store, client=client)
        again = scale.msp_reduce(proc, 6, [first], shards=3, store=store, client=client)  # its own rerun resumes
        assert again.info["shards_run"]["chunks"] == 2


def test_store_of_the_previous_version_still_resumes(tmp_path, client):
    """Stores written before family keys (run key = one hash of everything) resume as before."""
    import zarr

    from compmech.scale.msp import _plan
    from compmech.scale.store import _legacy_run_key

    proc = cm.processes.mess3()
    store = str(tmp_path / "old.zarr")
    full = scale.msp_reduce(proc, 7, shards=6, store=store, client=client)
    g = zarr.open_group(store, mode="r+")
    a = g.attrs.asdict()
    a.pop("family_key")
    a.pop("levels_kept")
    a.update(run_key=_legacy_run_key(proc, 7, 0.0, _plan(proc, 7, 6, 0.0, None), [], None), done_entropy=[0, 3],
             complete=False)
    g.attrs.put(a)
    again = scale.msp_reduce(proc, 7, shards=6, store=store, client=client)
    assert again.info["shards_run"]["entropy"] == 4
    np.testing.assert_array_equal(full.entropy.H_exact, again.entropy.H_exact)


def _mtimes(path):
    import os

    return {os.path.join(d, f): os.stat(os.path.join(d, f)).st_mtime_ns for d, _, fs in os.walk(path) for f in fs}


def test_deeper_run_extends_a_finished_store(tmp_path, client):
    """A finished run asked again with only a larger depth extends its store: the levels it
    wrote stay (not rewritten), and everything equals a fresh run of the new depth; an
    interrupted extension resumes. Other mismatches are still refused, each with its reason."""
    import zarr

    proc = cm.processes.mess3()
    reds = [scale.BeliefHistogram(bins=16, depths=[5, 7])]  # few depths: each is a stored partial per shard
    store = str(tmp_path / "x.zarr")
    scale.msp_reduce(proc, 7, reds, shards=6, store=store, zarr=True, zarr_chunk=512, client=client)
    before = _mtimes(str(tmp_path / "x.zarr" / "levels" / "7"))
    ext = scale.msp_reduce(proc, 9, reds, shards=6, store=store, zarr=True, zarr_chunk=512, client=client)
    assert ext.info["extended_from"] == 7 and ext.info["levels_kept"] == 7
    assert _mtimes(str(tmp_path / "x.zarr" / "levels" / "7")) == before  # kept, not rewritten
    fresh_path = str(tmp_path / "fresh.zarr")
    fresh = scale.msp_reduce(proc, 9, reds, shards=6, store=fresh_path, zarr=True, zarr_chunk=512, client=client)
    assert fresh.info["extended_from"] is None
    np.testing.assert_array_equal(ext.entropy.H_exact, fresh.entropy.H_exact)
    np.testing.assert_array_equal(ext.entropy.prob_exact, fresh.entropy.prob_exact)
    np.testing.assert_array_equal(ext["histogram"].mass[7], fresh["histogram"].mass[7])
    a, b = scale.load_tree(store), scale.load_tree(fresh_path)
    for d in range(10):
        for name in ("beliefs", "probs", "parent", "token"):
            np.testing.assert_array_equal(getattr(a.level(d), name), getattr(b.level(d), name), err_msg=f"{d} {name}")
    attrs = zarr.open_group(store, mode="r").attrs
    assert attrs["depth"] == 9 and attrs["H_bits"] == zarr.open_group(fresh_path, mode="r").attrs["H_bits"]
    # an interrupted extension resumes, still keeping levels 0..7
    g = zarr.open_group(store, mode="r+")
    g.attrs.update({"done_chunks": [1, 4], "complete": False, "levels_complete": False})
    again = scale.msp_reduce(proc, 9, reds, shards=6, store=store, zarr=True, zarr_chunk=512, client=client)
    assert again.info["shards_run"]["chunks"] == 4 and again.info["levels_kept"] == 7
    np.testing.assert_array_equal(scale.load_tree(store).level(9).probs, b.level(9).probs)
    # refusals: unfinished (with the depth that resumes it), shallower than the store, other options
    g.attrs["complete"] = False
    with pytest.raises(ValueError, match="unfinished depth-9 run of this process: rerun with depth 9"):
        scale.msp_reduce(proc, 10, reds, shards=6, store=store, zarr=True, zarr_chunk=512, client=client)
    g.attrs["complete"] = True
    with pytest.raises(ValueError, match="finished depth-9 run of this process, deeper than depth 8"):
        scale.msp_reduce(proc, 8, reds, shards=6, store=store, zarr=True, zarr_chunk=512, client=client)
    with pytest.raises(ValueError, match="different MSP run"):
        scale.msp_reduce(proc, 10, reds, shards=6, store=store, client=client)  # no levels this time
    with pytest.raises(ValueError, match="different MSP run"):
        scale.msp_reduce(cm.processes.mess3(0.1, 0.7), 10, reds, shards=6, store=store, zarr=True,
                         zarr_chunk=512, client=client)


def test_local_cluster_two_workers_same_bits():
    from dask.distributed import Client, LocalCluster

    proc = cm.processes.mess3()
    local = scale.msp_reduce(proc, 10, ["histogram"], shards=9)  # client=None: its own in-process scheduler
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cl, \
            Client(cl) as client:
        dist = scale.msp_reduce(proc, 10, ["histogram"], client=client, shards=20)
    np.testing.assert_array_equal(local.entropy.H_exact, dist.entropy.H_exact)
    np.testing.assert_array_equal(local["histogram"].mass[10], dist["histogram"].mass[10])


def test_exact_sums_are_order_independent():
    from compmech import _core

    rng = np.random.default_rng(0)
    v = rng.standard_normal(10_000) * 10.0 ** rng.integers(-30, 5, 10_000)
    bins = np.zeros(len(v), np.int64)
    a = _core.exact_bin_sums(v, bins, 1)
    perm = rng.permutation(len(v))
    b = _core.exact_bin_sums(v[perm], bins, 1)
    halves = _exact.add(_core.exact_bin_sums(v[perm[:3000]], bins[:3000], 1),
                        _core.exact_bin_sums(v[perm[3000:]], bins[3000:], 1))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, halves)
    assert _exact.to_float(a)[0] == pytest.approx(math.fsum(v), rel=1e-15, abs=1e-30)
    with pytest.raises(ValueError, match="out of range"):
        _core.exact_bin_sums(v[:2], np.array([0, 5]), 1)


def test_bad_arguments_fail_with_one_clear_line(client):
    proc = cm.processes.mess3()
    with pytest.raises(ValueError, match="depth"):
        scale.msp_reduce(proc, -1)
    with pytest.raises(ValueError, match="histogram: depths"):
        scale.msp_reduce(proc, 3, [scale.BeliefHistogram(depths=[5])])
    with pytest.raises(TypeError, match="not a reduction"):
        scale.msp_reduce(proc, 3, [object()])
    with pytest.raises(ValueError, match="store"):
        scale.msp_reduce(proc, 3, zarr=True)


def test_cli_stream(tmp_path):
    out = tmp_path / "m.png"
    r = subprocess.run([sys.executable, "-m", "compmech.cli", "msp", "mess3", "--depth", "8", "--stream",
                        "--zarr", str(tmp_path / "m.zarr"), "--out", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert out.exists() and "H(L) bits" in r.stdout
    H = ref_entropy(cm.processes.mess3(), 8)[0]
    assert f"{H[8]:20.15f}".strip()[:14] in r.stdout
    np.testing.assert_array_equal(scale.load_tree(str(tmp_path / "m.zarr")).level(8).probs,
                                  cm.msp_tree(cm.processes.mess3(), 8).level(8).probs)


def test_cli_stream_deeper_run_extends_the_default_store(tmp_path):
    """`compmech msp X --depth 8 --stream` then `--depth 9 --stream` (same default store) runs
    the deeper one in that store, as a fresh depth-9 run would, instead of refusing."""
    cmd = [sys.executable, "-m", "compmech.cli", "msp", "mess3", "--stream", "--out", str(tmp_path / "m.png")]
    r = subprocess.run(cmd + ["--depth", "8"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(cmd + ["--depth", "9"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert f"extended     the finished depth-8 run in {tmp_path / 'm.stream.zarr'} to depth 9" in r.stdout
    H = ref_entropy(cm.processes.mess3(), 9)[0]
    fresh = scale.msp_reduce(cm.processes.mess3(), 9)
    import zarr

    assert zarr.open_group(str(tmp_path / "m.stream.zarr"), mode="r").attrs["H_bits"] == fresh.entropy.H.tolist()
    np.testing.assert_allclose(fresh.entropy.H, H, rtol=1e-12)
    r = subprocess.run(cmd + ["--depth", "9", "--min-prob", "1e-9"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "holds a different MSP run" in r.stderr and r.stderr.count("\n") == 1


@pytest.mark.slow
def test_cli_ctrl_c_saves_progress_and_rerun_resumes(tmp_path):
    """Ctrl-C while shards run: one line on stdout, nothing from Dask on stderr (closing the
    in-process worker under running tasks used to log a multi-line CancelledError warning per
    task), and the rerun completes with the uninterrupted run's exact result."""
    import os
    import signal
    import time

    import zarr

    store = tmp_path / "s.stream.zarr"  # the CLI's progress store next to --out
    # Depth 17: a shard takes long enough (~1e6 nodes) that tasks are running when the signal lands.
    cmd = [sys.executable, "-m", "compmech.cli", "msp", "mess3", "--depth", "17", "--stream",
           "--out", str(tmp_path / "s.png")]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen, deadline = b"", time.time() + 120
    while b"entropy: 3/" not in seen and time.time() < deadline and p.poll() is None:
        seen += os.read(p.stdout.fileno(), 4096)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130, (out + err)[-2000:]
    assert b"CancelledError" not in err and b"Traceback" not in err, err.decode()[-2000:]
    tail = (seen + out).decode().rstrip().splitlines()[-1]
    assert tail.startswith("interrupted: finished shards are saved in") and "rerun the same command to resume" in tail
    done = zarr.open_group(str(store), mode="r").attrs["done_entropy"]
    assert 3 <= len(done) < 64
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    a = zarr.open_group(str(store), mode="r").attrs
    assert a["complete"] and len(a["done_entropy"]) == 64
    # resumed result equals the exact in-memory-independent value (a fresh, uninterrupted run)
    fresh = scale.msp_reduce(cm.processes.mess3(), 17, shards=64)
    assert a["H_bits"] == fresh.entropy.H.tolist()
