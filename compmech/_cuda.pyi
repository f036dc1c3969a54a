"""compmech CUDA kernels: the same interface as the emulation module."""
from ._cuda_emu import *
