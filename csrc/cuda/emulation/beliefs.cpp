// Host-compiled CPU emulation of beliefs.cu (see ../emulation.hpp).
#define COMPMECH_CUDA_EMULATION 1
#include "../beliefs.cu"
