"""compmech compiled core (CPU kernels). Use the wrappers in compmech, not this module directly."""
# Generated from the module's pybind11 signatures: python tests/test_typing.py --write
import collections.abc
import numpy as np
import numpy.typing as npt


def alias_draw_words(thresh: typing.Annotated[numpy.typing.ArrayLike, numpy.uint64], alias: typing.Annotated[numpy.typing.ArrayLike, numpy.uint32], hi: typing.Annotated[numpy.typing.ArrayLike, numpy.uint32], lo: typing.Annotated[numpy.typing.ArrayLike, numpy.uint32]) -> tuple:
    ...

def beliefs(T: np.ndarray, w: object, initial: np.ndarray, tokens: np.ndarray, dtype: object, want_logp: bool, zero_tol: float, out: object = None) -> tuple:
    ...

def build_info() -> dict:
    ...

def exact_bin_sums(values: np.ndarray, bins: typing.Annotated[numpy.typing.ArrayLike, numpy.int64], nbins: int) -> npt.NDArray[np.uint64]:
    ...

def get_num_threads() -> int:
    ...

def hmm_sample_tables(T: np.ndarray, initial: np.ndarray) -> tuple:
    ...

def join_digits(parts: collections.abc.Sequence[np.ndarray], radices: collections.abc.Sequence[int], dtype: str) -> tuple:
    ...

def msp_entropy_sums(T: np.ndarray, w: object, roots: np.ndarray, root_probs: np.ndarray, depth: int, min_prob: float, zero_tol: float, include_roots: bool) -> tuple:
    ...

def msp_graph(T: np.ndarray, w: object, initial: np.ndarray, max_depth: int, max_states: int, tol: float, zero_tol: float) -> dict:
    """Breadth-first deduplicated mixed-state graph; returns a dict of arrays (see compmech.msp)."""

def msp_level(T: np.ndarray, w: object, parents: np.ndarray, parent_probs: np.ndarray, min_prob: float, zero_tol: float, expect_full: bool = False, trusted: bool = False) -> object:
    ...

def sample_ghmm(T: np.ndarray, w: object, initial: np.ndarray, batch: int, length: int, seed: int, row0: int, dtype: object, zero_tol: float) -> tuple:
    ...

def sample_hmm(T: np.ndarray, initial: np.ndarray, batch: int, length: int, seed: int, row0: int, want_states: bool) -> tuple:
    ...

def sample_paths() -> list:
    """Private: the CPU sampling paths built on this machine."""

def set_num_threads(n: int) -> None:
    ...

def set_sample_path(name: str) -> str:
    """Private: force a CPU sampling path ('auto' restores the default); returns the previous one."""

def split_digits(tokens: np.ndarray, radices: collections.abc.Sequence[int], which: int = -1) -> tuple:
    ...

def token_weights(T: np.ndarray, w: object) -> npt.NDArray[np.float64]:
    ...
