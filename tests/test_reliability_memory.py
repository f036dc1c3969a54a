"""Peak memory stays close to what is kept (issue 11, "Peak memory"): exact-mode soft targets
and the ``compmech msp`` figure."""
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import compmech as cm
from compmech.data import ExactSource

PEAK_SCRIPT = textwrap.dedent("""
    import resource, sys
    import compmech as cm
    from compmech.data import ExactSource
    p = cm.processes.mess3()
    ExactSource(p, 3, 8, seed=0, soft_targets=True, background=False)  # warm up imports and kernels
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    src = ExactSource(p, int(sys.argv[1]), 512, seed=0, soft_targets=True, background=False)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kept = src._q.nbytes + src.sequences.nbytes + src.probs.nbytes + src._cdf.nbytes
    print((peak - base) * 1024 / kept)
""")


def test_exact_soft_targets_peak_near_what_is_kept():
    # ctx=11: 3**12 sequences, 85 MB kept; the float64 temporaries used to peak at ~6x that
    out = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, "11"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert float(out.stdout) < 2.5, out.stdout


def test_chunked_soft_targets_equal_the_one_shot_computation():
    p = cm.processes.mess3()
    for bos in (False, True):
        src = ExactSource(p, 5, 8, seed=0, soft_targets=True, background=False, bos=bos)
        one = src._next_token_probs(src.sequences, rows_per_chunk=10**9)
        np.testing.assert_array_equal(src._next_token_probs(src.sequences, rows_per_chunk=7), one)
        np.testing.assert_array_equal(src._q, one)


def test_exact_source_refuses_what_would_not_fit():
    need = ExactSource.bytes_needed(3, 14, soft_targets=True)
    assert need > 2 << 30  # ctx 14: 3**15 sequences x 14 positions x 3 float32
    with pytest.raises(ValueError, match="GiB.*data='stream'"):
        ExactSource(cm.processes.mess3(), 14, 512, seed=0, soft_targets=True, max_bytes=1 << 30)


def test_msp_figure_draws_cells_not_nodes(tmp_path, monkeypatch, capsys):
    pytest.importorskip("matplotlib")
    import compmech.commands.msp as msp_cmd
    import compmech.plot as cm_plot
    from compmech.cli import main

    drawn = {}
    real = cm_plot.simplex

    def spy(beliefs, weights=None, **kw):
        drawn["n"], drawn["w"], drawn["kw"] = len(beliefs), np.asarray(weights), kw
        return real(beliefs, weights=weights, **kw)

    monkeypatch.setattr(cm_plot, "simplex", spy)
    monkeypatch.setattr(msp_cmd, "MAX_FIGURE_POINTS", 1000)
    out = tmp_path / "m.png"
    assert main(["msp", "mess3", "--depth", "9", "--out", str(out)]) == 0
    tree = cm.msp_tree(cm.processes.mess3(), 9)
    assert drawn["n"] < tree.num_nodes and drawn["kw"].get("rasterized")
    assert np.isclose(drawn["w"].sum(), 10.0)  # every level's probability (root + 9 levels) is drawn
    assert "cells of 1/512" in capsys.readouterr().out and out.stat().st_size > 1000


def test_figure_cells_match_a_direct_grouping():
    import compmech.commands.msp as msp_cmd

    for proc in (cm.processes.mess3(), cm.processes.rrxor()):
        tree = cm.msp_tree(proc, 7)
        b, w, cells = msp_cmd._figure_points(tree, max_points=10)
        allb = np.concatenate([np.asarray(lvl.beliefs, np.float64) for lvl in tree.levels])
        allw = np.concatenate([lvl.probs for lvl in tree.levels])
        keys, inv = np.unique(np.rint(allb * cells).astype(np.int64), axis=0, return_inverse=True)
        np.testing.assert_array_equal(b, keys / cells)
        np.testing.assert_allclose(w, np.bincount(inv.ravel(), allw), rtol=1e-12)
        small = msp_cmd._figure_points(tree)  # small trees: every node, unchanged
        assert small[2] == 0 and len(small[1]) == tree.num_nodes + 1
