"""Large outputs and long calls: no reference cycles holding trees, up-front size guards,
bounded chunked enumeration, one log-probability accumulator on every path, Ctrl-C inside
compiled calls."""
import gc
import os
import signal
import subprocess
import sys
import textwrap
import time
import weakref

import numpy as np
import pytest

import compmech as cm
from compmech import _sizes

msp_tree_mod = sys.modules["compmech.msp_tree"]

MESS3 = cm.processes.mess3(0.05, 0.85)


# ---- MSP tree memory: no reference cycle ------------------------------------------------------

def test_msp_tree_is_freed_without_the_garbage_collector():
    gc.disable()
    try:
        tree = cm.msp_tree(MESS3, 8, dtype=np.float32)
        refs = [weakref.ref(lvl.beliefs) for lvl in tree.levels] + [weakref.ref(tree)]
        del tree
        assert all(r() is None for r in refs)
    finally:
        gc.enable()


def test_level_outlives_its_tree():
    tree = cm.msp_tree(MESS3, 6)
    expected = tree.level(6).sequences.copy()
    lvl = tree.level(6)
    del tree
    np.testing.assert_array_equal(lvl.sequences, expected)
    assert expected.shape == (3**6, 6)


# ---- up-front size guards ----------------------------------------------------------------------

def test_msp_tree_depth_40_is_refused_up_front(monkeypatch):
    expanded = []
    monkeypatch.setattr(msp_tree_mod, "_expand", lambda *a, **k: expanded.append(1))
    with pytest.raises(MemoryError, match=r"depth=40.*sequences.*msp_reduce.*--stream") as info:
        cm.msp_tree(MESS3, 40)
    assert isinstance(info.value, ValueError)  # also a ValueError: one clean line in the CLI
    assert not expanded  # refused before the first level


def test_product_tree_too_large_is_refused_before_the_joint_levels(monkeypatch):
    """A product runs on its factors' trees, but its joint levels (9**d nodes for two Mess3) are
    sized before they are built."""
    from compmech import _product

    joint = []
    monkeypatch.setattr(_product, "joint_beliefs", lambda *a, **k: joint.append(1))
    prod = cm.processes.product([MESS3, MESS3])
    with pytest.raises(MemoryError, match=r"depth=12.*3.18e\+11 sequences \(101 bytes each\).*--stream"):
        cm.msp_tree(prod, 12)
    assert not joint
    monkeypatch.undo()
    small = cm.msp_tree(prod, 3)  # what fits is built as before
    assert [len(lv) for lv in small] == [1, 9, 81, 729]


def test_size_bound_follows_the_support():
    """Golden mean (no two 1s in a row): the bound is the number of allowed words, not 2**d."""
    gm = cm.processes.golden_mean() if hasattr(cm.processes, "golden_mean") else None
    if gm is None:
        pytest.skip("no golden_mean process")
    bounds = _sizes.msp_level_bounds(gm.T, gm.stationary, 20)
    fib = [2, 3]
    while len(fib) < 20:
        fib.append(fib[-1] + fib[-2])
    assert bounds[-1] <= fib[19] * gm.num_states and bounds[-1] < 2**20
    # min_prob caps every level at 1 / min_prob
    assert max(_sizes.msp_level_bounds(MESS3.T, MESS3.stationary, 30, 1e-3)) <= 1000


def test_msp_tree_bound_is_an_upper_bound():
    for proc in (MESS3, cm.processes.random_hmm(4, 3, seed=1, sparsity=0.5)):
        tree = cm.msp_tree(proc, 7)
        bounds = _sizes.msp_level_bounds(proc.T, proc.stationary, 7)
        assert all(len(tree.level(d + 1)) <= b for d, b in enumerate(bounds))


def _tree_bytes(tree):
    return sum(lvl.nbytes for lvl in tree.levels)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_size_guard_counts_full_levels_at_their_size(monkeypatch, dtype):
    # mess3 emits every token from every state: all levels are full (beliefs + probs, no links)
    depth, nodes, S, item = 8, (3**9 - 3) // 2, 3, np.dtype(dtype).itemsize
    full, linked = nodes * (S * item + 8), nodes * (S * item + 8 + 4 + 1)
    monkeypatch.setattr(_sizes, "available_bytes", lambda: (full + linked) // 2)
    tree = cm.msp_tree(MESS3, depth, dtype=dtype)  # refused under 25 bytes a node
    assert all(lvl.is_full for lvl in tree.levels[1:]) and _tree_bytes(tree) <= full + S * item + 13  # + the root
    monkeypatch.setattr(_sizes, "available_bytes", lambda: full - 1)
    with pytest.raises(MemoryError) as exc:
        cm.msp_tree(MESS3, depth, dtype=dtype)
    msg = str(exc.value)
    assert "\n" not in msg and f"{nodes:.3g} sequences ({S * item + 8} bytes each)" in msg and "msp_reduce" in msg


def test_size_guard_stays_conservative_where_levels_may_drop(monkeypatch):
    # a state that cannot emit a token, or min_prob, can drop children: those levels keep links
    gm = cm.processes.golden_mean()
    assert msp_tree_mod._full_levels(gm, 7, 0.0) == 0
    assert msp_tree_mod._full_levels(MESS3, 40, 1e-3) < msp_tree_mod._full_levels(MESS3, 40, 0.0) == 40
    bounds = _sizes.msp_level_bounds(gm.T, gm.stationary, 7)
    need = sum(bounds) * (2 * 8 + 8 + 4 + 1)
    monkeypatch.setattr(_sizes, "available_bytes", lambda: need - 1)
    with pytest.raises(MemoryError, match=r"\(29 bytes each\)"):
        cm.msp_tree(gm, 7)
    monkeypatch.setattr(_sizes, "available_bytes", lambda: need)
    assert _tree_bytes(cm.msp_tree(gm, 7)) <= need + 2 * 8 + 13
    # the estimate bounds what the tree holds, full levels or not
    monkeypatch.setattr(_sizes, "available_bytes", lambda: None)
    for proc, mp in ((MESS3, 0.0), (MESS3, 1e-4), (gm, 0.0)):
        k, b = msp_tree_mod._full_levels(proc, 8, mp), _sizes.msp_level_bounds(proc.T, proc.stationary, 8, mp)
        S = proc.num_states
        est = sum(b[:k]) * (S * 8 + 8) + sum(b[k:]) * (S * 8 + 13) + S * 8 + 13
        assert _tree_bytes(cm.msp_tree(proc, 8, min_prob=mp)) <= est


def test_cli_msp_depth_40_one_line_error():
    r = subprocess.run([sys.executable, "-m", "compmech.cli", "msp", "mess3", "--depth", "40", "--out",
                        os.devnull], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and "msp_reduce" in r.stderr and "--stream" in r.stderr


def test_msp_graph_depth_limited_stops_at_memory(monkeypatch):
    monkeypatch.setattr(_sizes, "available_bytes", lambda: 20_000_000)
    with pytest.raises(MemoryError, match=r"max_depth=25.*mixed states.*max_states"):
        cm.msp(MESS3, max_depth=25)
    # a finite MSP under the same limit still completes
    g = cm.msp(cm.processes.rrxor(), max_depth=100)
    assert g.is_complete


# ---- msp_level_chunks holds only about max_nodes ------------------------------------------------

def test_level_chunks_do_not_build_the_tree(monkeypatch):
    sizes = []
    expand = msp_tree_mod._expand

    def counting(proc, lvl, *args):
        child = expand(proc, lvl, *args)
        sizes.append(len(child))
        return child

    monkeypatch.setattr(msp_tree_mod, "_expand", counting)
    it = cm.msp_level_chunks(MESS3, 14, max_nodes=2)
    first = [next(it) for _ in range(5)]
    assert all(len(c) <= 2 for c in first)
    np.testing.assert_array_equal(first[0].sequences[0], np.zeros(14))
    assert max(sizes) <= 3 and len(sizes) < 40  # a path down the tree, not the 7 M-node tree


@pytest.mark.parametrize("max_nodes", [1, 2, 5, 27, 100, 10_000])
@pytest.mark.parametrize("min_prob", [0.0, 2e-4])
def test_level_chunks_concatenate_to_the_level(max_nodes, min_prob):
    proc = cm.processes.random_hmm(3, 3, seed=4, sparsity=0.3)
    lvl = cm.msp_tree(proc, 6, min_prob=min_prob).level(6)
    chunks = list(cm.msp_level_chunks(proc, 6, max_nodes=max_nodes, min_prob=min_prob))
    assert all(1 <= len(c) <= max_nodes for c in chunks)
    np.testing.assert_array_equal(np.concatenate([c.sequences for c in chunks]), lvl.sequences)
    np.testing.assert_array_equal(np.concatenate([c.beliefs for c in chunks]), lvl.beliefs)
    np.testing.assert_array_equal(np.concatenate([c.probs for c in chunks]), lvl.probs)


# ---- one log-probability accumulator: bit-identical across paths --------------------------------

@pytest.mark.parametrize("proc", [MESS3, cm.processes.random_hmm(3, 6, seed=2),
                                  cm.processes.random_ghmm_like(3, 3, seed=3),
                                  cm.processes.random_hmm(7, 3, seed=5),
                                  cm.processes.random_ghmm_like(6, 2, seed=6),
                                  cm.processes.random_hmm(20, 5, seed=7),
                                  cm.processes.random_ghmm_like(17, 3, seed=8),
                                  cm.processes.random_hmm(23, 3, seed=10),
                                  cm.processes.random_hmm(33, 4, seed=9, sparsity=0.3)],
                         ids=["mess3", "S3V6", "ghmm3", "S7", "ghmm6", "S20", "ghmm17", "S23", "S33"])
def test_log_prob_bit_identical_across_paths_and_threads(proc):
    """Rows in a batch of 37 go through the SIMD lanes (8 and 4 wide), blocks of rows, single
    rows, or (many states) token groups of every size; alone, each row takes the single-row path
    or a group of one. Every path must give the same bits, for log_prob and beliefs."""
    tokens = cm.sample(proc, 37, 300, seed=11)
    whole = cm.log_prob(proc, tokens)
    alone = np.array([cm.log_prob(proc, tokens[i:i + 1])[0] for i in range(len(tokens))])
    np.testing.assert_array_equal(whole, alone)
    b, lp = cm.beliefs(proc, tokens, dtype=np.float64, return_log_prob=True)
    np.testing.assert_allclose(lp, whole, rtol=1e-14)  # log_prob's own arithmetic: a few ulp
    for i in (0, 17, 36):
        np.testing.assert_array_equal(cm.beliefs(proc, tokens[i], dtype=np.float64), b[i])
    n = cm.get_num_threads()
    try:
        cm.set_num_threads(1)
        np.testing.assert_array_equal(cm.log_prob(proc, tokens), whole)
    finally:
        cm.set_num_threads(n)


def test_log_prob_tiny_probabilities_bit_identical():
    """Norms below the accumulator's tiny threshold are logged directly on every path."""
    T = np.zeros((2, 2, 2))
    T[0] = [[1 - 1e-300, 0], [0, 0.5]]
    T[1] = [[1e-300, 0], [0, 0.5]]
    proc = cm.HMM(T, validate=False) if "validate" in cm.HMM.__init__.__code__.co_varnames else cm.HMM(T)
    tokens = np.random.default_rng(0).integers(0, 2, size=(21, 50))
    init = np.array([0.5, 0.5])
    whole = cm.log_prob(proc, tokens, initial=init)
    alone = np.array([cm.log_prob(proc, tokens[i:i + 1], initial=init)[0] for i in range(21)])
    np.testing.assert_array_equal(whole, alone)
    assert np.all(np.isfinite(whole))


@pytest.mark.parametrize("S,V", [(16, 2), (23, 7), (24, 6), (40, 3)])
def test_grouped_path_matches_reference(S, V):
    """Many states: rows grouped by token into dense products, against the float64 reference."""
    from reference import ref_beliefs

    proc = cm.processes.random_hmm(S, V, seed=S + V, sparsity=0.2)
    tokens = cm.sample(proc, 300, 12, seed=1)
    b, lp = cm.beliefs(proc, tokens, dtype=np.float64, return_log_prob=True)
    rb, rlp = ref_beliefs(proc.T, tokens, proc.stationary, proc.w, proc.zero_tol)
    np.testing.assert_allclose(b, rb, rtol=0, atol=1e-12)
    np.testing.assert_allclose(lp, rlp, rtol=1e-12)
    g = cm.processes.random_ghmm_like(S, V, seed=S)
    tg = cm.sample(g, 50, 10, seed=2)
    bg, lpg = cm.beliefs(g, tg, dtype=np.float64, return_log_prob=True)
    rbg, rlpg = ref_beliefs(g.T, tg, g.stationary, g.w, g.zero_tol)
    np.testing.assert_allclose(bg, rbg, rtol=0, atol=1e-9)
    np.testing.assert_allclose(lpg, rlpg, rtol=1e-9)


def test_grouped_path_impossible_tokens():
    # token 1 leads to states 0..9, which never emit it: "1, 1" is impossible
    S = 20
    T = np.zeros((2, S, S))
    T[0, :10, :] = 1 / S
    T[0, 10:, :] = 0.5 / S
    T[1, 10:, :10] = 0.5 / 10
    proc = cm.HMM(T)
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 2, size=(40, 15))
    from reference import ref_beliefs

    b, lp = cm.beliefs(proc, tokens, dtype=np.float64, return_log_prob=True, on_zero="nan")
    rb, rlp = ref_beliefs(proc.T, tokens, proc.stationary, proc.w, proc.zero_tol)
    np.testing.assert_array_equal(np.isnan(b), np.isnan(rb))
    np.testing.assert_array_equal(np.isinf(lp), np.isinf(rlp))
    assert np.isinf(lp).any()


# ---- Ctrl-C inside long compiled calls ----------------------------------------------------------

# Each call runs for seconds (msp_tree ~2 s, the others 4-40 s on 2 cores), so it cannot finish
# between the moment its worker threads appear and the signal, however loaded the machine.
_LONG_CALLS = {
    "beliefs": "p = cm.processes.random_hmm(48, 8, seed=0); t = cm.sample(p, 8192, 8192, seed=0)\n"
               "start(); cm.log_prob(p, t)",
    "msp_tree": "p = cm.processes.random_hmm(96, 16, seed=0)\nstart(); cm.msp_tree(p, 5, dtype='float32')",
    "msp_graph": "p = cm.processes.random_hmm(24, 6, seed=0)\nstart(); cm.msp(p, max_states=3_000_000)",
    "sample": "p = cm.processes.random_ghmm_like(32, 4, seed=0)\nstart(); cm.sample(p, 4000, 50_000, seed=0)",
}


def _new_thread_appears(pid: int, before: set, timeout: float) -> bool:
    """Wait until process ``pid`` has a thread that is not in ``before``: a compiled
    ``parallel_for`` starts its worker threads per call, so this proves the call is running
    compiled code (a fixed sleep does not: under load the child may not have got there yet,
    and a KeyboardInterrupt raised in Python before the call would pass vacuously)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if set(os.listdir(f"/proc/{pid}/task")) - before:
                return True
        except FileNotFoundError:  # exited
            return False
        time.sleep(0.001)
    return False


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs /proc to see the call's worker threads")
@pytest.mark.parametrize("name", sorted(_LONG_CALLS))
def test_ctrl_c_interrupts_compiled_call(name):
    script = textwrap.dedent("""
        import os, sys, time
        import compmech as cm
        def start():
            global t0
            t0 = time.perf_counter()  # before the line the parent waits for: no window without t0
            print("start", *os.listdir("/proc/self/task"), flush=True)
        try:
    """) + textwrap.indent(_LONG_CALLS[name], "    ") + textwrap.dedent("""
            print("finished", flush=True)
        except KeyboardInterrupt:
            print(f"interrupted {time.perf_counter() - t0:.3f}", flush=True)
    """)
    # Two threads at least, so that the call's parallel regions start a worker thread to see.
    env = {**os.environ, "COMPMECH_NUM_THREADS": "2"}
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    try:
        line = proc.stdout.readline().split()
        assert line[:1] == ["start"], (line, proc.stderr.read() if proc.poll() is not None else "")
        assert _new_thread_appears(proc.pid, set(line[1:]), timeout=60), \
            ("the call never started its worker threads", proc.communicate(timeout=60))
        sent = time.perf_counter()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        latency = time.perf_counter() - sent
    finally:
        proc.kill()
    assert out.startswith("interrupted"), (out, err)
    assert latency < 10, latency  # a hang guard: the uninterrupted calls take far longer
