"""compmech CUDA kernels (device pointers in, asynchronous launches). Use the compmech wrappers."""
# Generated from the module's pybind11 signatures: python tests/test_typing.py --write
import numpy as np
import numpy.typing as npt

max_states: int

def beliefs(device: int, stream: int, T: int, w: int, V: int, S: int, zero_tol: float, initial: int, tokens: int, tok_type: str, B: int, L: int, out: int, out_type: str, logp: int, flags: int) -> None:
    ...

def beliefs_plan(device: int, V: int, S: int, out_bytes: int) -> dict:
    """Launch layout of the beliefs kernel for a process on a device (out_bytes 0, 4 or 8)."""

def debug_mode() -> bool:
    """Whether COMPMECH_CUDA_DEBUG=1 makes every launch synchronise and check."""

def device_count() -> int:
    """Visible CUDA devices; raises RuntimeError with the CUDA error text."""

def msp_fill(device: int, stream: int, T: int, w: int, V: int, S: int, zero_tol: float, parents: int, type: str, parent_probs: int, P: int, min_prob: float, keep: int, offsets: int, beliefs: int, probs: int, parent: int, token: int, tok_type: str, dropped: int) -> None:
    ...

def msp_keep(device: int, stream: int, T: int, w: int, V: int, S: int, zero_tol: float, parents: int, type: str, parent_probs: int, P: int, min_prob: float, keep: int) -> None:
    ...

def runtime_version() -> str:
    ...

def sample_ghmm(device: int, stream: int, T: int, w: int, V: int, S: int, zero_tol: float, Tw: int, initial: int, B: int, L: int, seed: int, row0: int, tokens: int, tok_type: str, beliefs: int, out_type: str, flags: int) -> None:
    ...

def sample_hmm(device: int, stream: int, V: int, S: int, packed: int, thresh: int, alias: int, init_thresh: int, init_alias: int, B: int, L: int, seed: int, row0: int, tokens: int, tok_type: str, states: int, st_type: str) -> None:
    ...
