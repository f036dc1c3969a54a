// Host-compiled CPU emulation of msp.cu (see ../emulation.hpp).
#define COMPMECH_CUDA_EMULATION 1
#include "../msp.cu"
