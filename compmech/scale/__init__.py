"""Scale-out on Dask: MSP reductions deeper than memory (:func:`msp_reduce`, Zarr level
stores) and experiment sweeps (``compmech sweep``). Dask, Zarr and pyarrow (the
``compmech-hmm[scale]`` extra) are imported only when these functions run."""
from .msp import EntropyResult, MSPReduceResult, msp_reduce
from .store import load_tree, open_levels
from .reductions import (BeliefHistogram, BeliefHistogramResult, DistinctBeliefs, Reduction, UserReduction,
                         belief_keys)

__all__ = ["msp_reduce", "MSPReduceResult", "EntropyResult", "load_tree", "open_levels", "BeliefHistogram",
           "BeliefHistogramResult", "DistinctBeliefs", "Reduction", "UserReduction", "belief_keys"]
