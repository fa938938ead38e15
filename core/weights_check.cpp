#include "weights_check.hpp"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <set>

#include "error.hpp"
#include "files.hpp"
#include "registry.hpp"
#include "safetensors.hpp"

namespace moelab {
namespace fs = std::filesystem;

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

namespace {
std::string lower(std::string s) {
  for (char& ch : s) ch = char(std::tolower(static_cast<unsigned char>(ch)));
  return s;
}
}  // namespace

WeightsCheck check_weights(const ModelConfig& config, const std::string& model_dir) {
  WeightsCheck r;
  if (!has_weights(model_dir)) return r;
  r.present = true;
  const Checkpoint ck(model_dir);  // maps the files and reads their headers; the data stays on disk
  const std::vector<const TensorView*> all = ck.all();
  r.tensors = int64_t(all.size());
  std::set<std::string> files;
  for (const TensorView* t : all) {
    r.bytes = checked_add(r.bytes, t->nbytes, model_dir);
    ++r.dtypes[lower(dtype_name(t->dtype))];
    if (t->file) files.insert(fs::path(*t->file).filename().string());
  }
  r.files.assign(files.begin(), files.end());

  auto problem = [&r](std::string text) {
    if (r.problems.size() < kMaxProblemsKept) r.problems.push_back(std::move(text));
    ++r.problem_count;
  };
  // The dtype config.json names; one the lab does not know is not compared.
  bool know_dtype = true;
  DType want = DType::F32;
  try {
    want = dtype_from_torch_name(config.dtype, "config.json");
  } catch (const Error&) {
    know_dtype = false;
  }
  std::set<std::string> expected;
  for (const TensorSpec& s : tensor_specs(config)) {
    expected.insert(s.name);
    const TensorView* t = ck.find(s.name);
    if (!t) {
      problem("missing: " + s.name);
      continue;
    }
    if (t->shape != s.shape) {
      problem(s.name + ": config expects " + shape_text(s.shape) + ", file has " + shape_text(t->shape));
    } else if (!dtype_is_float(t->dtype)) {
      problem(s.name + ": config expects floating weights, file has " + dtype_name(t->dtype));
    } else if (know_dtype && t->dtype != want) {
      if (r.other_dtype++ == 0) r.other_dtype_example = s.name;
    }
  }
  for (const TensorView* t : all)  // ck.all() is in name order
    if (!expected.count(t->name)) problem("unexpected: " + t->name + " " + shape_text(t->shape));
  return r;
}

}  // namespace moelab
