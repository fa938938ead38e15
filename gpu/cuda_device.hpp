// The CUDA device facts, from one driver query: is a device there, can the CUDA backend run on it,
// what it is called, and its datasheet limits. (The device menu and the backend choice of the
// frontends are app/devices/devices.hpp.) No CUDA types leak into this header: the command line and
// the GUI include it without the toolkit, and compile it in only when MOELAB_HAVE_CUDA is defined.
#pragma once

#include <string>

namespace moelab {

struct CudaDeviceInfo {
  bool available = false;
  std::string name;     // "NVIDIA H100 80GB HBM3"
  std::string reason;   // why not available: "no usable CUDA driver (...)", "no CUDA device", ...
  double memory_gib = 0.0;
  int compute_major = 0, compute_minor = 0;
  int sm_count = 0;
  double sm_clock_ghz = 0.0;      // peak SM clock
  double memory_clock_ghz = 0.0;  // peak memory clock
  int bus_width_bits = 0;
  // Datasheet-style peaks from the above: DRAM bytes/s (double data rate) and fp32 FLOP/s
  // (FP32 lanes per SM for this compute capability × 2 for FMA × SMs × clock).
  double peak_bandwidth = 0.0;
  double peak_fp32_flops = 0.0;
};

// Asks the driver; never throws. `reason` is one line for the user when unavailable.
CudaDeviceInfo query_cuda_device(int device = 0);

// True when query_cuda_device(device) answers and the device can run this build's kernels (compute
// capability 8.0 or newer). Otherwise false, and *why (when given) says why in one line: "no CUDA
// device", "no usable CUDA driver (...)", "... has compute capability 7.5; ...". Never throws.
bool cuda_device_available(std::string* why = nullptr, int device = 0);

// The device's name as the driver reports it ("NVIDIA H100 80GB HBM3"), "" when there is none.
std::string cuda_device_name(int device = 0);

}  // namespace moelab
