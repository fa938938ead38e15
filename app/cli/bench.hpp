// `moelab-cli bench`: the options shared by the CPU benchmark (cmd_bench.cpp) and the GPU one
// (cmd_bench_cuda.cpp), and the PyTorch peer both compare against.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "config.hpp"
#include "model.hpp"

namespace moelab::cli {

struct BenchOptions {
  int64_t layers = 4, hidden = 256, heads = 8, kv_heads = 8, experts = 8, expert_hidden = 512, top_k = 2;
  int64_t prefill = 128, decode = 64, prompt = 8, repeats = 5;
  std::string python = "/usr/bin/python3";
  std::string peer = std::string(MOELAB_SOURCE_DIR) + "/tests/reference/bench_peer.py";
  bool no_peer = false, json_out = false;
  bool train = false;
  bool background_load = false;  // also measure beside a process that keeps one core busy
  int64_t train_batch = 8, train_seq = 64, train_steps = 10;
  std::string device = "cpu";      // cpu | cuda
  std::string sizes = "";          // GPU: comma-separated lab sizes (tiny,small,medium,large); empty = all
  std::string precision = "fp32";  // GPU: fp32 | tf32 | bf16
  std::string tokenizer;           // bench --tokenizer FILE: the encoder against the Rust library
  double tokenizer_mb = 10;
  // bench --shape NAME: a real model's shape with random bf16 weights (cmd_bench_shape.cpp)
  std::string shape;
  std::string cache;               // the shapes' cache folder; empty = default_shape_cache_dir()
  uint64_t seed = 0;               // the random weights' seed
  int64_t shape_prompt = 32;       // prompt tokens before the timed decode (and the first token)
  std::string shape_peer = std::string(MOELAB_SOURCE_DIR) + "/tests/reference/bench_shape_peer.py";
};
BenchOptions& bench_options();

// The lab model of the benchmark: the built-in model's family and tokenizer at the given sizes.
ModelConfig bench_model_config(int64_t layers, int64_t hidden, int64_t heads, int64_t kv_heads, int64_t experts,
                               int64_t expert_hidden, int64_t top_k, int64_t context);

// Median seconds of a training step (AdamW, aux loss 0.01, clip 1) of `m` at the options' batch
// and sequence length, over train_steps steps after 2 warm-up steps.
double median_train_step_seconds(Model& m, const BenchOptions& opt);

// Runs `command` in a shell and returns the first line of its stdout as JSON, or null when the
// command does not start or that line is not JSON: how the benchmarks' peers (PyTorch, the Rust
// tokenizers library) answer.
nlohmann::json first_json_line_of(const std::string& command);

// Runs the peer script with `args` (after `env`) and returns its one JSON line, or null.
nlohmann::json run_peer_script(const std::string& env, const std::string& args);

// bench --tokenizer FILE: encode a ~10 MB text, MB/s beside the Rust tokenizers library (cmd_tokenize.cpp).
void run_tokenizer_bench(const BenchOptions& o);

// bench --shape NAME: generate (once) and measure a real shape against the bandwidth bound and PyTorch.
void run_shape_bench();

// The GPU benchmark (moelab-cli bench --device cuda).
void run_cuda_bench();

}  // namespace moelab::cli
