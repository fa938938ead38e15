#include "devices.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

#include "error.hpp"
#ifdef MOELAB_HAVE_CUDA
#include "cuda_backend.hpp"
#include "cuda_device.hpp"
#endif

namespace moelab {

namespace {

constexpr const char* kNoCudaBuild = "this build has no CUDA backend (nvcc was not found when it was configured)";

std::string cpu_label() {
#ifdef _OPENMP
  const int threads = omp_get_max_threads();  // per thread: the training worker leaves one core to the GUI
#else
  const int threads = 1;
#endif
  return "CPU (Eigen, " + std::to_string(threads) + (threads == 1 ? " thread)" : " threads)");
}

std::string gpu_label() {
#ifdef MOELAB_HAVE_CUDA
  const std::string name = cuda_device_name(0);
  if (!name.empty()) return "GPU: " + name;
#endif
  return "GPU (CUDA)";
}

// True when a GPU can be used; otherwise *why says why in one line.
bool gpu_available(std::string* why) {
#ifdef MOELAB_HAVE_CUDA
  return cuda_device_available(why);
#else
  *why = kNoCudaBuild;
  return false;
#endif
}

}  // namespace

std::vector<DeviceChoice> list_devices() {
  DeviceChoice gpu{"cuda", "GPU (CUDA)", false, ""};
  gpu.available = gpu_available(&gpu.why_not);
  if (gpu.available) gpu.label = gpu_label();
  return {DeviceChoice{"cpu", cpu_label(), true, ""}, gpu};
}

std::shared_ptr<Backend> make_backend(const std::string& device, std::string* fallback) {
  if (device == "cpu") return make_eigen_backend();
  if (device != "cuda" && device != "auto" && !device.empty())
    fail("--device", "'" + device + "' is not a device (cpu, cuda or auto)");
  std::string why;
#ifdef MOELAB_HAVE_CUDA
  if (cuda_device_available(&why)) return make_cuda_backend();
#else
  why = kNoCudaBuild;
#endif
  if (device == "cuda" && fallback) *fallback = why;
  return make_eigen_backend();
}

std::string device_display_name(const Backend& backend) {
  const std::string device = backend.name() == "cuda" ? gpu_label() : cpu_label();
  if (backend.precision() == Precision::FP32) return device;
  return device + " · " + precision_name(backend.precision());
}

std::string precision_why_not(const std::string& device, Precision p) {
  if (device == "cuda") return "";
  if (device != "cpu") fail("device", "'" + device + "' is not a device (cpu or cuda)");
  try {
    make_eigen_backend()->set_precision(p);  // the CPU's own answer, so the reason is its words
    return "";
  } catch (const Error& e) {
    return e.what();
  }
}

std::string apply_precision(Backend& backend, Precision p) {
  try {
    backend.set_precision(p);
    return "";
  } catch (const Error& e) {
    backend.set_precision(Precision::FP32);  // every backend has fp32
    return std::string(e.what()) + "; using fp32";
  }
}

}  // namespace moelab
