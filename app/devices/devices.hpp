// The devices a model can run on and the precision of its matrix products, shared by the command
// line (--device, --precision) and the GUI (the Device menu and the status bar). Qt-free; the CUDA parts are compiled in only when this build has the
// CUDA backend (MOELAB_HAVE_CUDA), and chosen at run time only when a GPU answers.
#pragma once

#include <exception>
#include <memory>
#include <string>
#include <vector>

#include "backend.hpp"
#include "error.hpp"

namespace moelab {

struct DeviceChoice {
  std::string id;       // "cpu" or "cuda": what make_backend takes
  std::string label;    // "CPU (Eigen, 2 threads)", "GPU: NVIDIA H100 80GB HBM3", "GPU (CUDA)"
  bool available = false;
  std::string why_not;  // one line when not available
};

// The CPU (always available) and the GPU (available when this build has the CUDA backend and a
// device answers; otherwise why_not says why).
std::vector<DeviceChoice> list_devices();

// "cpu", "cuda" or "auto" ("" too: the GPU when one is available, silently the CPU otherwise).
// "cuda" without a usable GPU gives the CPU, and *fallback (when given) says why in one line.
// Throws moelab::Error naming the device for anything else.
std::shared_ptr<Backend> make_backend(const std::string& device, std::string* fallback = nullptr);

// What the status bar shows for a backend: "CPU (Eigen, 2 threads)" or "GPU: <the GPU's name>",
// with its precision when that is not fp32 ("CPU (Eigen, 2 threads) · bf16").
std::string device_display_name(const Backend& backend);

// Why `device` ("cpu" or "cuda") lacks precision p, in one line; "" when it has it. The CPU is
// asked (it refuses tf32); the CUDA backend has every mode. Throws moelab::Error naming the
// device for anything else.
std::string precision_why_not(const std::string& device, Precision p);

// backend.set_precision(p); when the backend refuses p (tf32 on the CPU, say after a GPU fell
// back to it) the backend stays in fp32 and the answer says why in one line; "" when p was set.
std::string apply_precision(Backend& backend, Precision p);

// make(backend) on the chosen device. When the device cannot be had, or make throws on it (out of
// GPU memory, a driver error), make runs again on the CPU and *problem says why in one line
// ("" when the device was used). Errors on the CPU itself (a bad file) are thrown as they are.
template <class Make>
auto make_on_device(const std::string& device, Make make, std::string* problem) {
  std::shared_ptr<Backend> backend;
  problem->clear();
  try {
    backend = make_backend(device, problem);
    if (!problem->empty()) *problem = "GPU: " + *problem + "; using the CPU";
    return make(backend);
  } catch (const LoadCancelled&) {
    throw;  // cancelled by the user: not a device failure, nothing to retry on the CPU
  } catch (const std::exception& e) {
    if (backend && backend->name() == "cpu") throw;
    *problem = std::string("GPU: ") + e.what() + "; using the CPU";
  }
  backend.reset();  // give the GPU's memory back before the CPU copy is made
  return make(make_eigen_backend());
}

}  // namespace moelab
