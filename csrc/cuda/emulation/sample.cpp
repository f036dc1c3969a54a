// Host-compiled CPU emulation of sample.cu (see ../emulation.hpp).
#define COMPMECH_CUDA_EMULATION 1
#include "../sample.cu"
