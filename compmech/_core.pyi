"""compmech compiled core (CPU kernels). Use the wrappers in compmech, not this module directly."""
# Generated from the module's pybind11 signatures: python tests/test_typing.py --write
import numpy as np
import numpy.typing as npt


def beliefs(T: np.ndarray, w: object, initial: np.ndarray, tokens: np.ndarray, dtype: object, want_logp: bool, nan_on_zero: bool, zero_tol: float, out: object = None) -> tuple:
    ...

def build_info() -> dict:
    ...

def get_num_threads() -> int:
    ...

def hmm_sample_tables(T: np.ndarray, initial: np.ndarray) -> tuple:
    ...

def msp_graph(T: np.ndarray, w: object, initial: np.ndarray, max_depth: int, max_states: int, tol: float, zero_tol: float) -> dict:
    """Breadth-first deduplicated mixed-state graph; returns a dict of arrays (see compmech.msp)."""

def msp_level(T: np.ndarray, w: object, parents: np.ndarray, parent_probs: np.ndarray, min_prob: float, zero_tol: float, expect_full: bool = False) -> tuple:
    ...

def sample_ghmm(T: np.ndarray, w: object, initial: np.ndarray, batch: int, length: int, seed: int, row0: int, dtype: object, zero_tol: float) -> tuple:
    ...

def sample_hmm(T: np.ndarray, initial: np.ndarray, batch: int, length: int, seed: int, row0: int, want_states: bool) -> tuple:
    ...

def set_num_threads(n: int) -> None:
    ...

def token_weights(T: np.ndarray, w: object) -> npt.NDArray[np.float64]:
    ...
