// The device list and backend choice shared by the command line and the GUI (app/devices): the
// CPU is always there, the GPU entry always listed (usable only where a GPU answers), unknown
// names are an error, and a device that fails falls back to the CPU with a reason; a precision
// the backend lacks (tf32 on the CPU) falls back to fp32 with a reason. Right on machines with
// and without a GPU: the expectations follow list_devices().
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

static std::string precision_of(const Backend& b) { return precision_name(b.precision()); }

TEST(the_cpu_has_fp32_and_bf16_not_tf32_and_says_why) {
  CHECK_EQ(precision_why_not("cpu", Precision::FP32), std::string());
  CHECK_EQ(precision_why_not("cpu", Precision::BF16), std::string());  // an emulation, but there
  const std::string why = precision_why_not("cpu", Precision::TF32);
  CHECK(why.find("tf32") != std::string::npos);
  CHECK(why.find('\n') == std::string::npos);  // one line
  for (Precision p : {Precision::FP32, Precision::TF32, Precision::BF16}) CHECK_EQ(precision_why_not("cuda", p), std::string());
  CHECK_THROWS_WITH(precision_why_not("bogus", Precision::FP32), "'bogus' is not a device");
}

TEST(apply_precision_sets_the_mode_or_keeps_fp32_with_a_reason) {
  const std::shared_ptr<Backend> b = make_eigen_backend();
  const std::string plain = device_display_name(*b);
  CHECK_EQ(apply_precision(*b, Precision::BF16), std::string());
  CHECK_EQ(precision_of(*b), std::string("bf16"));
  CHECK_EQ(device_display_name(*b), plain + " · bf16");  // the status bar shows the mode
  // Refused after bf16 was set: back to fp32, not left in bf16.
  CHECK_EQ(apply_precision(*b, Precision::TF32), precision_why_not("cpu", Precision::TF32) + "; using fp32");
  CHECK_EQ(precision_of(*b), std::string("fp32"));
  CHECK_EQ(device_display_name(*b), plain);  // fp32 is not mentioned
}

TEST(a_refused_precision_is_not_taken_for_a_failing_device) {
  // How the GUI's workers make their backends: the precision set inside make, where a throw would
  // make make_on_device abandon the GPU. tf32 where the GPU cannot be had: the CPU, in fp32, and
  // a reason for each; where it can, the GPU in tf32 and no reasons.
  std::string device_problem, precision_problem;
  const std::shared_ptr<Backend> b = make_on_device(
      "cuda",
      [&](std::shared_ptr<Backend> backend) {
        precision_problem = apply_precision(*backend, Precision::TF32);
        return backend;
      },
      &device_problem);
  if (gpu_entry().available) {
    CHECK_EQ(b->name(), std::string("cuda"));
    CHECK_EQ(precision_of(*b), std::string("tf32"));
    CHECK(device_problem.empty() && precision_problem.empty());
  } else {
    CHECK_EQ(b->name(), std::string("cpu"));
    CHECK_EQ(precision_of(*b), std::string("fp32"));
    CHECK_EQ(device_problem, "GPU: " + gpu_entry().why_not + "; using the CPU");
    CHECK_EQ(precision_problem, precision_why_not("cpu", Precision::TF32) + "; using fp32");
  }
}

CHECK_MAIN()
