#include <cuda_runtime.h>

#include "device.hpp"

namespace moelab {

CudaDeviceInfo query_cuda_device() {
  CudaDeviceInfo info;
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    info.reason = std::string("no usable CUDA driver (") + cudaGetErrorString(err) + ")";
    return info;
  }
  if (count == 0) {
    info.reason = "no CUDA device";
    return info;
  }
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) {
    info.reason = "cannot read the properties of CUDA device 0";
    return info;
  }
  info.available = true;
  info.name = prop.name;
  info.memory_gib = double(prop.totalGlobalMem) / double(1ull << 30);
  info.compute_major = prop.major;
  info.compute_minor = prop.minor;
  return info;
}

}  // namespace moelab
