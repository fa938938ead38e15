// The device list and backend choice shared by the command line and the GUI (app/devices): the
// CPU is always there, the GPU entry always listed (usable only where a GPU answers), unknown
// names are an error, and a device that fails falls back to the CPU with a reason. Right on
// machines with and without a GPU: the expectations follow list_devices().
#include "check.hpp"
#include "devices.hpp"
#include "error.hpp"

using namespace moelab;

static DeviceChoice gpu_entry() { return list_devices().at(1); }

TEST(cpu_always_listed_and_gpu_entry_always_present) {
  const std::vector<DeviceChoice> d = list_devices();
  CHECK_EQ(d.size(), size_t(2));
  CHECK_EQ(d[0].id, std::string("cpu"));
  CHECK(d[0].available);
  CHECK(d[0].label.rfind("CPU (Eigen, ", 0) == 0);
  CHECK_EQ(d[1].id, std::string("cuda"));
  if (d[1].available) {
    CHECK(d[1].why_not.empty());
    CHECK(d[1].label.rfind("GPU", 0) == 0);
  } else {
    CHECK(!d[1].why_not.empty());
    CHECK(d[1].why_not.find('\n') == std::string::npos);  // one line
  }
}

TEST(make_backend_cpu_auto_and_cuda) {
  CHECK_EQ(make_backend("cpu")->name(), std::string("cpu"));
  const DeviceChoice gpu = gpu_entry();
  const std::string expected = gpu.available ? "cuda" : "cpu";
  CHECK_EQ(make_backend("auto")->name(), expected);
  CHECK_EQ(make_backend("")->name(), expected);
  std::string why;
  CHECK_EQ(make_backend("cuda", &why)->name(), expected);
  CHECK_EQ(why, gpu.why_not);  // says why only when it falls back
}

TEST(an_unknown_device_is_an_error_naming_it) {
  CHECK_THROWS_WITH(make_backend("bogus"), "'bogus' is not a device");
  CHECK_THROWS_WITH(make_backend("CPU"), "'CPU'");
}

TEST(display_names) {
  CHECK(device_display_name(*make_eigen_backend()).rfind("CPU (Eigen, ", 0) == 0);
  if (gpu_entry().available) CHECK(device_display_name(*make_backend("cuda")).rfind("GPU", 0) == 0);
}

TEST(a_failing_device_falls_back_to_the_cpu_with_a_reason) {
  // As if the GPU ran out of memory: make throws on anything but the CPU.
  auto make = [](std::shared_ptr<Backend> b) {
    if (b->name() != "cpu") fail("cuda", "out of memory");
    return b->name();
  };
  std::string problem;
  CHECK_EQ(make_on_device("cuda", make, &problem), std::string("cpu"));
  const std::string expected = gpu_entry().available ? "GPU: cuda: out of memory; using the CPU"
                                                     : "GPU: " + gpu_entry().why_not + "; using the CPU";
  CHECK_EQ(problem, expected);
  CHECK_EQ(make_on_device("cpu", make, &problem), std::string("cpu"));
  CHECK(problem.empty());
  // An error on the CPU is not the device's fault: it is thrown as it is.
  CHECK_THROWS_WITH(make_on_device("cpu", [](std::shared_ptr<Backend>) -> int { fail("model.safetensors", "missing"); },
                                   &problem),
                    "model.safetensors: missing");
}

CHECK_MAIN()
