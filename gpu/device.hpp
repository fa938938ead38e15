// What CUDA device this process can use, if any. No CUDA types leak into this header.
#pragma once

#include <string>

namespace moelab {

struct CudaDeviceInfo {
  bool available = false;
  std::string name;     // "NVIDIA H100 80GB HBM3"
  std::string reason;   // why not available: "no CUDA driver", "no CUDA device", ...
  double memory_gib = 0.0;
  int compute_major = 0, compute_minor = 0;
};

// Asks the driver once; never throws. One line for the user when unavailable.
CudaDeviceInfo query_cuda_device();

}  // namespace moelab
