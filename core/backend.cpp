// Backend's own functions: the defaults every backend inherits, precision names, and slice().
#include "backend.hpp"

#include <cctype>

#include "error.hpp"

namespace moelab {

const char* precision_name(Precision p) {
  switch (p) {
    case Precision::FP32: return "fp32";
    case Precision::TF32: return "tf32";
    case Precision::BF16: return "bf16";
  }
  return "?";
}

Precision parse_precision(const std::string& text) {
  std::string t = text;
  for (char& c : t) c = char(std::tolower(static_cast<unsigned char>(c)));
  for (Precision p : {Precision::FP32, Precision::TF32, Precision::BF16})
    if (t == precision_name(p)) return p;
  fail("precision", "unknown mode '" + text + "' (choose fp32, tf32 or bf16)");
}

void Backend::router_losses_add(const Tensor& logits, const Tensor& ids, float aux_coef, float z_coef,
                                Tensor& dlogits, Tensor& sums) {
  MOELAB_ASSERT(sums.numel() == 2, "router_losses sums shape");
  const auto [aux, z] = router_losses(logits, ids, aux_coef, z_coef, dlogits);
  double h[2];
  download(sums, h);
  h[0] += aux;
  h[1] += z;
  upload(sums, h);
}

void Backend::set_precision(Precision p) {
  if (p != Precision::FP32) fail(name(), std::string("no ") + precision_name(p) + " mode on this backend (fp32 only)");
}

void Backend::begin_recording(const Tensor&, int64_t) {
  fail(name(), "this backend cannot record operations (no graphs); run them directly");
}
std::unique_ptr<OpGraph> Backend::end_recording() { fail(name(), "end_recording without a recording"); }

Tensor slice(const Backend& b, const Tensor& t, int64_t offset, std::vector<int64_t> shape) {
  Tensor v;
  v.shape = std::move(shape);
  v.type = t.type;
  const int64_t elem = t.type == TType::I32 ? 4 : b.real_bytes();
  MOELAB_ASSERT(offset >= 0 && offset + v.numel() <= t.numel(), "slice out of range");
  v.storage = t.storage;
  v.ptr = static_cast<char*>(t.ptr) + offset * elem;
  return v;
}


}  // namespace moelab
