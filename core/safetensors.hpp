// safetensors reading and writing, by hand (Debian packages no C++ library for it).
// Format: u64 little-endian header length N, N bytes of JSON header (padded with spaces to a
// multiple of 8), then the data. Header: {"__metadata__": {...}, name: {"dtype": "F32",
// "shape": [..], "data_offsets": [begin, end]}, ...}; offsets are relative to the data start and,
// sorted, must tile the data exactly. Files are memory-mapped, never copied whole.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace moelab {

enum class DType { F32, F16, BF16, F64, I64, I32, I16, I8, U8, BOOL };
int64_t dtype_size(DType d);
const char* dtype_name(DType d);
bool dtype_is_float(DType d);
DType dtype_from_torch_name(const std::string& s, const std::string& where);  // "bfloat16" -> BF16

struct TensorView {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // into the memory map
  int64_t nbytes = 0;
  const std::string* file = nullptr;  // the file it lives in, for messages
  int64_t numel() const;
};

// Caps a reader enforces on every file (hostile input must not allocate or hang).
constexpr int64_t kMaxHeaderBytes = 100 << 20;
constexpr int64_t kMaxTensors = 1 << 20;
constexpr int kMaxRank = 8;

// A mapped file truncated or replaced under the lab raises SIGBUS when its pages are read: the
// lab then prints one line naming the file and exits with status 75. With a note file set, the
// same line is also written there (the GUI shows it at its next start).
void set_sigbus_note_file(const std::string& path);

class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);  // maps and validates, throws moelab::Error
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::vector<TensorView>& tensors() const { return tensors_; }
  const TensorView* find(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  std::string path_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  std::vector<TensorView> tensors_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// A model directory's weights: model.safetensors, or shards listed by model.safetensors.index.json.
class Checkpoint {
 public:
  explicit Checkpoint(const std::string& dir);
  const TensorView* find(const std::string& name) const;
  std::vector<const TensorView*> all() const;
  const std::string& dir() const { return dir_; }
  int64_t total_bytes() const;

 private:
  std::string dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const TensorView*> by_name_;
};

// Convert a floating tensor to fp32 (n = numel). Throws, naming the tensor and file, on a
// non-float dtype or on NaN/Inf values.
void tensor_to_float(const TensorView& t, float* dst);

float half_to_float(uint16_t h);
uint16_t float_to_half(float f);
float bf16_to_float(uint16_t b);
uint16_t float_to_bf16(float f);

struct TensorToWrite {
  std::string name;
  std::vector<int64_t> shape;
  const float* data = nullptr;  // fp32 values, converted to `dtype` on the way out
  DType dtype = DType::F32;
};

// Write one safetensors file atomically (temporary file, fsync, rename). Adds
// __metadata__ {"format": "pt"} to whatever metadata is given.
void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata = {});
// Write a model directory's weights: one file, or shards of at most max_shard_bytes each plus
// model.safetensors.index.json (Hugging Face layout).
void write_checkpoint_weights(const std::string& dir, const std::vector<TensorToWrite>& tensors,
                              int64_t max_shard_bytes = 0);

}  // namespace moelab
