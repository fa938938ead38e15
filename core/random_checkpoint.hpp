// Random-weight checkpoints of real model shapes, for benchmarking at real size without
// downloading anything: the exact Hugging Face tensor names and shapes of a family (from the
// tensor registry the loader uses), written straight in bf16, tensor by tensor through a bounded
// buffer (never a whole fp32 model in memory), into a cache folder that later runs reuse.
//
//   <cache>/<shape>/config.json          the real config.json of that model (torch_dtype bfloat16)
//   <cache>/<shape>/model.safetensors    every tensor in BF16, registry order
//   <cache>/<shape>/moelab-shape.json    the marker, written last: generator version, shape, seed,
//                                        the weights file's size (a folder without it is partial)
//
// The folder is written under a temporary name and renamed when complete, so a crash never leaves
// a half checkpoint under the real name. Values: norms 1, every other tensor uniform with standard
// deviation 0.02 (the families' initializer_range), deterministic in the seed.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "config.hpp"

namespace moelab {

// Bumped whenever the bytes written for a given shape and seed change: older caches are rewritten.
constexpr int kRandomCheckpointVersion = 1;

// The shapes the generator knows: olmoe-1b-7b, granite-3b-a800m, qwen3-30b-a3b (the published
// configs, resources/real-models) and olmoe-tiny, granite-tiny, qwen3-tiny (the same families
// in a few hundred KB, for tests).
std::vector<std::string> shape_names();
// The config.json of a shape; an unknown name is an error listing the known ones.
nlohmann::json shape_config_json(const std::string& shape);
ModelConfig shape_config(const std::string& shape);

// Bytes of the model.safetensors the generator writes for a config (header included).
int64_t random_checkpoint_bytes(const ModelConfig& c);

// $XDG_CACHE_HOME/moelab/shapes, else $HOME/.cache/moelab/shapes.
std::string default_shape_cache_dir();

struct RandomCheckpointOptions {
  std::string cache_dir;      // the checkpoint goes to cache_dir/<shape>; empty = the default
  uint64_t seed = 0;
  int64_t memory_bytes = 0;   // the machine's memory for the fit check; 0 = physical memory
  int64_t disk_free_bytes = -1;  // free bytes on the cache's disk; -1 = measure it
  int64_t memory_spare = int64_t(1536) << 20;  // memory the run needs beside the weights
};

struct RandomCheckpoint {
  std::string dir;       // the model folder (loadable with Model::load)
  bool generated = false;  // false: an existing complete cache was reused
  int64_t bytes = 0;     // size of model.safetensors
  double seconds = 0;    // time spent generating (0 when reused)
};

// The checkpoint of `shape` in the cache: reused when complete (marker of this version and seed,
// weights file of the recorded size), else (re)written. Refuses in one line, before writing, a
// shape whose weights would not fit in memory beside `memory_spare` (it would run from disk) or
// on the cache's disk.
RandomCheckpoint ensure_random_checkpoint(const std::string& shape, const RandomCheckpointOptions& options);

}  // namespace moelab
