"""The numpy baselines now live in compmech.bench.baselines (shared with ``compmech bench``);
re-exported here for the pytest-benchmark files."""
from compmech.bench.baselines import (beliefs_numpy, log_prob_numpy, msp_graph_numpy, msp_numpy,  # noqa: F401
                                      probe_fit_numpy, sample_numpy)
