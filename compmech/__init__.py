"""compmech: computational mechanics of hidden Markov models, with a compiled core.

    import compmech as cm
    proc = cm.processes.mess3()
    tokens = cm.sample(proc, 1024, 256, seed=0)
    b = cm.beliefs(proc, tokens)            # (B, L, S), belief after each prefix
    tree = cm.msp_tree(proc, 10)            # mixed-state tree to depth 10

``import compmech`` loads numpy and the compiled core only; torch, matplotlib and
scikit-learn load with the modules that need them.
"""
from ._threads import build_info, get_num_threads, set_num_threads
from .beliefs import beliefs, log_prob
from .msp_tree import MSPLevel, MSPTree, msp_level_chunks, msp_tree
from .process import GHMM, HMM, Process
from .sampling import sample
from . import processes
from .msp_graph import MSPGraph, msp
from .epsilon_machine import EpsilonMachine, epsilon_machine
from . import measures
from . import scale  # Dask/Zarr load only when its functions run

from ._version import __version__

__all__ = ["HMM", "GHMM", "Process", "processes", "beliefs", "log_prob", "sample", "msp_tree",
           "msp_level_chunks", "MSPTree", "MSPLevel", "set_num_threads", "get_num_threads",
           "build_info", "__version__", "msp", "MSPGraph", "epsilon_machine", "EpsilonMachine", "measures", "scale"]
