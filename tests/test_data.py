import numpy as np
import pytest

torch = pytest.importorskip("torch")

import compmech as cm  # noqa: E402
from compmech.data import (ExactSource, PrefixSet, StreamSource, make_source, myopic_entropy,  # noqa: E402
                           to_model_io)


@pytest.fixture(scope="module")
def mess3():
    return cm.processes.mess3(x=0.05, alpha=0.85)


def test_exact_source_enumerates_everything(mess3):
    src = ExactSource(mess3, 4, 8, seed=0, background=False)
    assert src.sequences.shape == (3 ** 5, 5)
    assert np.isclose(src.probs.sum(), 1.0)
    ref = np.exp(cm.log_prob(mess3, src.sequences))
    np.testing.assert_allclose(src.probs, ref, rtol=1e-10)
    # impossible sequences are excluded for processes that have them
    rr = ExactSource(cm.processes.rrxor(), 5, 8, seed=0, background=False)
    assert len(rr.sequences) < 2 ** 6 and (rr.probs > 0).all()


def test_exact_batches_follow_probabilities(mess3):
    src = ExactSource(mess3, 2, 4096, seed=3, background=False)
    it = src.batches(0)
    counts = np.zeros(len(src.sequences))
    index = {tuple(s): i for i, s in enumerate(src.sequences.tolist())}
    n = 0
    for _ in range(10):
        x, y = next(it)
        seq = torch.cat([x, y[:, -1:]], 1).numpy()
        for row in seq.tolist():
            counts[index[tuple(row)]] += 1
        n += len(seq)
    expected = src.probs * n
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 27 + 6 * np.sqrt(2 * 26)  # 27 cells; far inside the chi-square tail


@pytest.mark.parametrize("mode", ["exact", "stream"])
def test_batches_are_deterministic_and_resumable(mess3, mode):
    a = make_source(mode, mess3, 6, 16, seed=11)
    b = make_source(mode, mess3, 6, 16, seed=11, background=False)
    it = a.batches(0)
    seen = [next(it) for _ in range(150)]  # crosses chunk boundaries
    it.close()
    for step in (0, 63, 64, 65, 149):
        x, y = b.batch(step)
        assert torch.equal(x, seen[step][0]) and torch.equal(y, seen[step][1])
    resumed = b.batches(70)
    for step in range(70, 80):
        x, y = next(resumed)
        assert torch.equal(x, seen[step][0])
    other = make_source(mode, mess3, 6, 16, seed=12, background=False)
    assert not torch.equal(other.batch(0)[0], seen[0][0])


def test_stream_rows_are_the_sampler_rows(mess3):
    src = StreamSource(mess3, 5, 8, seed=5, background=False)
    x, y = src.batch(3)
    ref = cm.sample(mess3, 8, 6, seed=5, row_offset=3 * 8)
    assert torch.equal(x, torch.from_numpy(ref[:, :5]).long())
    assert torch.equal(y, torch.from_numpy(ref[:, 1:]).long())


def test_bos_layout(mess3):
    src = StreamSource(mess3, 5, 4, seed=0, bos=True, background=False)
    assert src.n_tokens == 5 and src.input_vocab_size == 4
    x, y = src.batch(0)
    ref = torch.from_numpy(cm.sample(mess3, 4, 5, seed=0)).long()
    assert (x[:, 0] == 3).all()
    assert torch.equal(x[:, 1:], ref[:, :4]) and torch.equal(y, ref)
    seq = torch.tensor([[0, 1, 2]])
    xi, yi = to_model_io(seq, None)
    assert xi.tolist() == [[0, 1]] and yi.tolist() == [[1, 2]]


def test_bad_arguments(mess3):
    with pytest.raises(ValueError, match="mode"):
        make_source("replay", mess3, 4, 4, seed=0)
    with pytest.raises(ValueError, match="batch_size"):
        ExactSource(mess3, 4, 0, seed=0)
    with pytest.raises(ValueError, match="stream"):
        ExactSource(mess3, 40, 4, seed=0)


def test_myopic_entropy(mess3):
    h = myopic_entropy(mess3, 8)
    # h[0]: entropy of the first token from the stationary distribution (uniform for Mess3)
    assert np.isclose(h[0], np.log(3))
    assert (np.diff(h) <= 1e-12).all()
    # converges to the entropy rate estimated from long samples
    tok = cm.sample(mess3, 2000, 200, seed=1)
    rate = -cm.log_prob(mess3, tok).mean() / 200
    assert abs(h[-1] - rate) < 0.01
    coin = cm.processes.get("coin", p=0.3) if "coin" in cm.processes.names() else None
    if coin is not None:
        hc = myopic_entropy(coin, 4)
        assert np.allclose(hc, -(0.3 * np.log(0.3) + 0.7 * np.log(0.7)))


@pytest.mark.parametrize("bos", [False, True])
def test_prefix_set(mess3, bos):
    ctx = 5
    ps = PrefixSet.build(mess3, ctx, bos=bos)
    n_in = ctx - 1 if bos else ctx
    assert ps.inputs.shape == (3 ** n_in, ctx)
    lengths = range(0 if bos else 1, n_in + 1)
    assert len(ps) == sum(3 ** d for d in lengths)
    for d in lengths:
        sel = ps.length == d
        assert np.isclose(ps.probs[sel].sum(), 1.0)
        assert ps.multiplicity[sel].sum() == 3 ** n_in
    # beliefs and probabilities agree with the belief propagation of the read-out input
    seqs = ps.inputs[:, 1:] if bos else ps.inputs
    b = cm.beliefs(mess3, seqs, dtype=np.float64)
    for r in np.flatnonzero(ps.length > 0)[::7]:
        d = ps.length[r]
        np.testing.assert_allclose(ps.beliefs[r], b[ps.seq_index[r], d - 1], atol=1e-12)
        assert ps.position[r] == (d if bos else d - 1)
        np.testing.assert_allclose(ps.probs[r], np.exp(cm.log_prob(mess3, seqs[ps.seq_index[r], :d])), rtol=1e-9)
    # optimal per-position loss is the myopic entropy after the prefix
    h = myopic_entropy(mess3, n_in + 1)
    np.testing.assert_allclose(ps.optimal_loss(), h[0:ctx] if bos else h[1:ctx + 1], rtol=1e-12)


@pytest.mark.parametrize("name", ["mess3", "golden"])
def test_prefix_set_links_leave_full_levels_compact(monkeypatch, mess3, name):
    # mess3 levels are all full (implicit links); the golden mean process drops children
    proc = mess3 if name == "mess3" else cm.processes.golden_mean()
    import compmech.data as data_mod

    trees = []
    monkeypatch.setattr(data_mod, "msp_tree", lambda *a, **k: trees.append(cm.msp_tree(*a, **k)) or trees[-1])
    ps = PrefixSet.build(proc, 5, bos=True)
    tree = trees[0]
    assert (name == "mess3") == all(lvl.is_full for lvl in tree.levels[1:])
    for lvl in tree.levels[1:]:
        if lvl.is_full:  # only beliefs and probs: the parent/token arrays were never made
            assert lvl.nbytes == lvl.beliefs.nbytes + lvl.probs.nbytes
    # every row's parent is its prefix one token shorter, and its token the last one
    seqs = ps.inputs
    for r in np.flatnonzero(ps.length > 1):
        d, p = ps.length[r], ps.parent[r]
        assert ps.length[p] == d - 1 and ps.token[r] == seqs[ps.seq_index[r], ps.position[r]]
        np.testing.assert_array_equal(seqs[ps.seq_index[p], 1:d], seqs[ps.seq_index[r], 1:d])
    assert (ps.parent[ps.length == 1] == 0).all() and ps.parent[0] == -1


def test_expected_loss_of_the_true_predictor_is_optimal(mess3):
    ps = PrefixSet.build(mess3, 4)
    logits = np.zeros((ps.inputs.shape[0], 4, 3))
    b = cm.beliefs(mess3, ps.inputs, dtype=np.float64)
    q = b @ (mess3.T @ mess3.w).T
    logits[:] = np.log(q)
    np.testing.assert_allclose(ps.expected_loss(logits), ps.optimal_loss(), rtol=1e-12)
    worse = ps.expected_loss(np.zeros_like(logits))  # uniform prediction: log 3 everywhere
    np.testing.assert_allclose(worse, np.log(3))


def test_fold_membership_splits_by_input(mess3):
    ps = PrefixSet.build(mess3, 6, group_depth=2)
    M = ps.fold_membership(4, seed=0)
    np.testing.assert_allclose(M.sum(1), 1.0)
    long_rows = ps.length >= 2
    assert set(np.unique(M[long_rows])) <= {0.0, 1.0}
    # every input's own rows of length >= group_depth sit in one fold
    fold_of_row = M.argmax(1)
    for i in range(0, ps.inputs.shape[0], 37):
        prefix_rows = [r for r in np.flatnonzero(long_rows)
                       if (ps.inputs[ps.seq_index[r], :ps.length[r]] == ps.inputs[i, :ps.length[r]]).all()]
        assert len({fold_of_row[r] for r in prefix_rows}) == 1
    # a one-token prefix is split in proportion to its extensions' input counts
    r0 = np.flatnonzero(ps.length == 1)[0]
    assert np.isclose((M[r0] * ps.multiplicity[r0]).sum(), ps.multiplicity[r0])
    assert (M[r0] * ps.multiplicity[r0] % 3 ** 4 < 1e-9).all()


@pytest.mark.parametrize("mode,bos", [("exact", False), ("stream", True)])
def test_soft_targets_are_the_true_next_token_distribution(mess3, mode, bos):
    src = make_source(mode, mess3, 5, 32, seed=2, bos=bos, soft_targets=True, background=False)
    hard = make_source(mode, mess3, 5, 32, seed=2, bos=bos, background=False)
    x, q = src.batch(4)
    xh, yh = hard.batch(4)
    assert torch.equal(x, xh) and q.shape == (32, 5, 3) and q.dtype == torch.float32
    np.testing.assert_allclose(q.sum(-1).numpy(), 1.0, rtol=1e-6)
    ps = PrefixSet.build(mess3, 5, bos=bos)
    lookup = {}
    for r in range(len(ps)):
        seq = ps.inputs[ps.seq_index[r], :ps.position[r] + 1]
        lookup[tuple(seq.tolist())] = ps.next_probs[r]
    xs = x.numpy()
    for b in range(0, 32, 5):
        for t in range(5):
            np.testing.assert_allclose(q[b, t].numpy(), lookup[tuple(xs[b, :t + 1].tolist())], rtol=1e-5)
    # the sampled next token is always possible under the distribution
    assert (torch.gather(q, 2, yh[..., None]) > 0).all()
