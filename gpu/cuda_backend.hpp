// The CUDA backend: the core's Backend on an NVIDIA GPU (fp32, cuBLAS for the dense GEMMs, our
// kernels for the rest). No CUDA types leak into this header, so the command line and the GUI
// include it without the CUDA toolkit; they compile it in only when MOELAB_HAVE_CUDA is defined
// (the moelab_gpu target defines it for everything that links it).
#pragma once

#include <memory>
#include <string>

#include "backend.hpp"

namespace moelab {

// True when CUDA device `device` is present, the driver answers, and the device can run this
// build's kernels (compute capability 8.0 or newer). Otherwise false, and *why (when given) says
// why in one line: "no CUDA device", "no usable CUDA driver (...)", ... Never throws.
bool cuda_device_available(std::string* why = nullptr, int device = 0);

// The device's name as the driver reports it ("NVIDIA H100 80GB HBM3"), "" when there is none.
std::string cuda_device_name(int device = 0);

// The CUDA backend on `device`. Tensors it allocates live in that device's memory (ptr is a
// device pointer; host_f32 returns nullptr). Throws moelab::Error when the device is unavailable.
std::shared_ptr<Backend> make_cuda_backend(int device = 0);

}  // namespace moelab
