// Does a model folder's checkpoint hold the weights its config.json implies? Every tensor the
// registry lists (name, shape, dtype) against the safetensors headers only: the files are
// memory-mapped and validated by the safetensors reader (its caps on header size, tensor count
// and rank), and no tensor data is touched. `moelab-cli info` reports the answer.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "config.hpp"

namespace moelab {

struct WeightsCheck {
  bool present = false;            // the folder holds model.safetensors or an index of shards
  std::vector<std::string> files;  // the safetensors files read, by file name, sorted
  int64_t tensors = 0;             // tensors in the files
  int64_t bytes = 0;               // their data, in bytes
  std::map<std::string, int64_t> dtypes;  // "bf16" -> how many tensors
  // What stops the weights from loading, in registry order: "NAME: config expects [64, 2048],
  // file has [60, 2048]", "missing: NAME", then "unexpected: NAME" in name order. At most
  // kMaxProblemsKept are kept; `problem_count` counts them all.
  std::vector<std::string> problems;
  int64_t problem_count = 0;
  // Floating tensors stored in another dtype than config.json names (the lab converts them to
  // fp32 as it loads, so these do not stop it): how many, and the first one's name.
  int64_t other_dtype = 0;
  std::string other_dtype_example;
  bool matches() const { return present && problem_count == 0; }
};
constexpr size_t kMaxProblemsKept = 64;

// Compare the checkpoint in `model_dir` with `config`. Throws moelab::Error, naming the file,
// when a header or the shard index cannot be read; a folder without weights is not an error
// (present = false).
WeightsCheck check_weights(const ModelConfig& config, const std::string& model_dir);

// "[64, 2048]"
std::string shape_text(const std::vector<int64_t>& shape);

}  // namespace moelab
