"""Joint tokens of product processes split into the factors' tokens and joined back in compiled
code (csrc/cpu/digits.cpp): against numpy's divmod on random radices, token dtypes and shapes,
through each of its paths (8-bit arithmetic for joint ranges <= 256, digit tables up to 2^16,
division beyond), independent of the thread count, and with bad values reported by their first
flat index."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

import compmech as cm
from compmech import _core
from compmech._product import combine, split_tokens

INT_DTYPES = [np.uint8, np.uint16, np.uint32, np.uint64, np.int8, np.int16, np.int32, np.int64]


def ref_split(x, radices):
    rest = np.asarray(x).astype(np.int64)
    out = []
    for r in reversed(radices):
        out.append(rest % r)
        rest = rest // r
    return out[::-1]


@st.composite
def radix_lists(draw):
    path = draw(st.sampled_from(["byte", "table", "divide"]))
    while True:
        k = draw(st.integers(1, 4))
        if path == "byte":
            rs = [draw(st.integers(1, 256)) for _ in range(k)]
        elif path == "table":
            rs = [draw(st.integers(1, 300)) for _ in range(k)]
        else:
            rs = [draw(st.sampled_from([2, 3, 7, 255, 256, 257, 1000, 65536])) for _ in range(k)]
        joint = int(np.prod(rs, dtype=object))
        if (path == "byte" and joint <= 256) or (path == "table" and joint <= 1 << 16) or \
                (path == "divide" and (1 << 16) < joint < 1 << 62):
            return rs, joint


@settings(max_examples=60, deadline=None)
@given(rj=radix_lists(), dtype=st.sampled_from(INT_DTYPES), n=st.integers(0, 100_000),
       two_d=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_split_and_join_match_numpy(rj, dtype, n, two_d, seed):
    radices, joint = rj
    if joint - 1 > np.iinfo(dtype).max:
        dtype = np.int64 if joint <= 1 << 62 else np.uint64
    x = np.random.default_rng(seed).integers(0, joint, n, dtype=np.int64, endpoint=False).astype(dtype)
    if two_d and n % 4 == 0:
        x = x.reshape(4, -1)
    parts, first = _core.split_digits(x, radices)
    assert first == -1
    for p, want, r in zip(parts, ref_split(x, radices), radices):
        assert p.dtype == (np.uint8 if r <= 256 else np.uint16) and p.shape == x.shape
        np.testing.assert_array_equal(p, want)
    for i, want in enumerate(parts):  # one factor at a time
        one, first = _core.split_digits(x, radices, i)
        assert first == -1 and len(one) == 1
        np.testing.assert_array_equal(one[0], want)
    # joined back in the smallest unsigned type that holds the joint range
    out_dt = next(dt for dt in (np.uint8, np.uint16, np.uint32, np.uint64) if joint - 1 <= np.iinfo(dt).max)
    back, bad, factor = _core.join_digits(parts, radices, np.dtype(out_dt).name)
    assert (bad, factor) == (-1, -1) and back.dtype == out_dt
    np.testing.assert_array_equal(back, x.astype(out_dt))


def test_byte_path_exhaustive():
    """Every 8-bit joint value, for radix lists with joint ranges up to 256 (the multiply-shift
    digits are exact only there), in vector bodies and scalar tails."""
    import itertools

    for k in (1, 2, 3):
        for rs in itertools.product([1, 2, 3, 5, 7, 16, 255, 256], repeat=k):
            joint = int(np.prod(rs))
            if joint > 256:
                continue
            x = np.tile(np.arange(joint, dtype=np.uint8), 4096 // joint + 1)[:4096 - 7]
            parts, first = _core.split_digits(x, list(rs))
            assert first == -1
            for p, want in zip(parts, ref_split(x, rs)):
                np.testing.assert_array_equal(p, want)


def test_results_do_not_depend_on_threads():
    x = np.random.default_rng(3).integers(0, 243, 300_001).astype(np.uint8)
    y = np.random.default_rng(4).integers(0, 60_000, 300_001).astype(np.int32)
    try:
        cm.set_num_threads(1)
        one = [_core.split_digits(x, [3] * 5)[0], _core.split_digits(y, [40, 1500])[0]]
        cm.set_num_threads(2)
        two = [_core.split_digits(x, [3] * 5)[0], _core.split_digits(y, [40, 1500])[0]]
    finally:
        cm.set_num_threads(0)
    for a, b in zip(one, two):
        for p, q in zip(a, b):
            np.testing.assert_array_equal(p, q)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int64])
def test_first_bad_value_in_flat_order(threads, dtype):
    x = np.zeros(200_000, dtype)
    x[150_000] = 9  # a later chunk
    x[70_000] = -1 if np.issubdtype(dtype, np.signedinteger) else 200
    x[5] = 8  # inside the range: fine
    try:
        cm.set_num_threads(threads)
        parts, first = _core.split_digits(x, [3, 3])
        assert parts is None and first == 70_000
        x[70_000] = 0
        assert _core.split_digits(x, [3, 3])[1] == 150_000
    finally:
        cm.set_num_threads(0)


def test_join_reports_the_first_bad_digit():
    a = np.zeros(100_000, np.uint8)
    b = np.zeros(100_000, np.uint16)
    b[90_000] = 300  # radix 300: bad
    a[80_000] = 3  # radix 3: bad, and earlier
    out, first, factor = _core.join_digits([a, b], [3, 300], "uint16")
    assert (first, factor) == (80_000, 0)
    b[80_000] = 400
    assert _core.join_digits([a, b], [3, 300], "uint16")[1:] == (80_000, 0)  # lowest factor at that index
    a[80_000] = 0
    assert _core.join_digits([a, b], [3, 300], "uint16")[1:] == (80_000, 1)


def test_argument_errors():
    x = np.zeros(4, np.uint8)
    with pytest.raises(ValueError, match="radices must not be empty"):
        _core.split_digits(x, [])
    with pytest.raises(ValueError, match=r"radices must be in \[1, 65536\], got 0"):
        _core.split_digits(x, [3, 0])
    with pytest.raises(ValueError, match="65537"):
        _core.split_digits(x, [65537])
    with pytest.raises(ValueError, match="< 2\\^64"):
        _core.split_digits(x, [65536] * 4 + [2])
    with pytest.raises(TypeError, match="integer"):
        _core.split_digits(np.zeros(4), [3])
    for which in (-2, 2):
        with pytest.raises(ValueError, match="which must be -1 or a factor index below 2"):
            _core.split_digits(x, [3, 3], which)
    x[2] = 9
    assert _core.split_digits(x, [3, 3], 1) == (None, 2)  # every joint value is checked
    with pytest.raises(ValueError, match="C-contiguous"):
        _core.split_digits(np.zeros((4, 4), np.uint8)[:, ::2], [3])
    d = [np.zeros(4, np.uint8), np.zeros(4, np.uint8)]
    with pytest.raises(ValueError, match="cannot hold joint values up to 299"):
        _core.join_digits(d, [3, 100], "uint8")
    with pytest.raises(TypeError, match=r"parts\[1\] must be uint16 for radix 300"):
        _core.join_digits(d, [3, 300], "uint16")
    with pytest.raises(ValueError, match=r"parts\[1\] must have the shape"):
        _core.join_digits([d[0], np.zeros(5, np.uint8)], [3, 3], "uint8")
    with pytest.raises(ValueError, match="same length"):
        _core.join_digits(d, [3], "uint8")
    with pytest.raises(TypeError, match="dtype must be"):
        _core.join_digits(d, [3, 3], "int8")


def test_split_tokens_on_numpy_and_torch():
    proc = cm.processes.product([cm.processes.mess3(), cm.processes.random_hmm(2, 300, seed=1)])
    x = np.random.default_rng(0).integers(0, proc.vocab_size, (5, 7))
    want = ref_split(x, [3, 300])
    for tokens in (x, x.astype(np.uint16), torch.from_numpy(x), torch.from_numpy(x.astype(np.int32))):
        parts = split_tokens(proc, tokens)
        if isinstance(tokens, torch.Tensor):
            assert [p.dtype for p in parts] == [torch.uint8, torch.int32]
            parts = [p.numpy() for p in parts]
        else:
            assert [p.dtype for p in parts] == [np.uint8, np.uint16]
        for p, w in zip(parts, want):
            np.testing.assert_array_equal(p, w)
    np.testing.assert_array_equal(combine(split_tokens(proc, x), [3, 300], np.uint16), x)
    # non-contiguous input is copied, a 1-d row keeps its shape
    np.testing.assert_array_equal(split_tokens(proc, x[:, ::2])[1], want[1][:, ::2])
    assert split_tokens(proc, x[0])[0].shape == (7,)
    with pytest.raises(ValueError, match=r"value 900 at row 1, position 2 is outside the vocabulary \[0, 900\)"):
        x2 = x.copy()
        x2[1, 2] = 900
        x2[3, 0] = 901
        split_tokens(proc, x2)
    with pytest.raises(ValueError, match=r"value -1 at position 4"):
        split_tokens(proc, torch.tensor([0, 1, 2, 3, -1]))
    with pytest.raises(ValueError, match=r"shape \(B, L\) or \(L,\)"):
        split_tokens(proc, np.zeros((2, 2, 2), np.int64))
    with pytest.raises(TypeError, match="integer array, got dtype bool"):
        split_tokens(proc, np.zeros(3, bool))


def test_combine_beyond_the_compiled_radix_range():
    """States of a factor with more than 65536 of them take numpy's path."""
    a = np.array([0, 1, 2], np.uint8)
    b = np.array([0, 70_000, 69_999], np.uint32)
    np.testing.assert_array_equal(combine([a, b], [3, 70_000], np.uint32), a.astype(np.uint32) * 70_000 + b)
