#include <cuda_runtime.h>

#include "cuda_device.hpp"

namespace moelab {
namespace {

// FP32 lanes per SM (CUDA C Programming Guide, "Arithmetic Instructions" throughput table):
// 64 on sm_80 (A100), 128 on sm_86/89/90 and later.
int fp32_lanes_per_sm(int major, int minor) { return major == 8 && minor == 0 ? 64 : 128; }

}  // namespace

CudaDeviceInfo query_cuda_device(int device) {
  CudaDeviceInfo info;
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    info.reason = std::string("no usable CUDA driver (") + cudaGetErrorString(err) + ")";
    return info;
  }
  if (count == 0) {
    info.reason = "no CUDA device";
    return info;
  }
  if (device < 0 || device >= count) {
    info.reason = "no CUDA device " + std::to_string(device) + " (" + std::to_string(count) + " present)";
    return info;
  }
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, device) != cudaSuccess) {
    (void)cudaGetLastError();
    info.reason = "cannot read the properties of CUDA device " + std::to_string(device);
    return info;
  }
  info.available = true;
  info.name = prop.name;
  info.memory_gib = double(prop.totalGlobalMem) / double(1ull << 30);
  info.compute_major = prop.major;
  info.compute_minor = prop.minor;
  info.sm_count = prop.multiProcessorCount;
  info.bus_width_bits = prop.memoryBusWidth;
  int clock_khz = 0, mem_khz = 0;  // CUDA 13 has these only as attributes
  if (cudaDeviceGetAttribute(&clock_khz, cudaDevAttrClockRate, device) != cudaSuccess) clock_khz = 0;
  if (cudaDeviceGetAttribute(&mem_khz, cudaDevAttrMemoryClockRate, device) != cudaSuccess) mem_khz = 0;
  (void)cudaGetLastError();
  info.sm_clock_ghz = clock_khz * 1e-6;
  info.memory_clock_ghz = mem_khz * 1e-6;
  info.peak_bandwidth = 2.0 * mem_khz * 1e3 * (info.bus_width_bits / 8.0);
  info.peak_fp32_flops = 2.0 * fp32_lanes_per_sm(prop.major, prop.minor) * info.sm_count * clock_khz * 1e3;
  return info;
}

bool cuda_device_available(std::string* why, int device) {
  const CudaDeviceInfo info = query_cuda_device(device);
  std::string reason = info.reason;  // "" when a device answers
  const bool usable = info.available && info.compute_major >= 8;
  if (info.available && !usable)
    reason = info.name + " has compute capability " + std::to_string(info.compute_major) + "." +
             std::to_string(info.compute_minor) + "; the CUDA backend needs 8.0 or newer";
  if (why) *why = reason;
  return usable;
}

std::string cuda_device_name(int device) {
  const CudaDeviceInfo info = query_cuda_device(device);
  return info.available ? info.name : std::string();
}

}  // namespace moelab
