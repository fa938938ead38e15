// The CUDA backend: the core's Backend on an NVIDIA GPU (fp32, cuBLAS for the dense GEMMs, our
// kernels for the rest). No CUDA types leak into this header, so the command line and the GUI
// include it without the CUDA toolkit; they compile it in only when MOELAB_HAVE_CUDA is defined
// (the moelab_gpu target defines it for everything that links it).
#pragma once

#include <memory>

#include "backend.hpp"

namespace moelab {

// The CUDA backend on `device`. Tensors it allocates live in that device's memory (ptr is a
// device pointer; host_f32 returns nullptr). Throws moelab::Error, with cuda_device_available's
// reason (cuda_device.hpp), when the device is unavailable.
std::shared_ptr<Backend> make_cuda_backend(int device = 0);

}  // namespace moelab
