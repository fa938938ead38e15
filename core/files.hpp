// Small files, read with a size cap and written atomically; errors name the file. Every config,
// preset, run description, checkpoint state and index goes through these.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include <nlohmann/json_fwd.hpp>

namespace moelab {

// A whole small text file; refuses a missing file, a folder, or one over max_bytes.
std::string read_text_file(const std::string& path, int64_t max_bytes);
// The same, parsed as JSON: "PATH: malformed JSON (what the parser said)" when it is not.
nlohmann::json read_json_file(const std::string& path, int64_t max_bytes);

// Write through a temporary file in the same folder, fsync, rename: a crash leaves the old file
// or the new one, never half of one.
class AtomicFile {
 public:
  explicit AtomicFile(const std::string& path);
  ~AtomicFile();  // without commit(): the temporary file is removed, the target untouched
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  void write(const void* p, size_t n);
  void commit();

 private:
  std::string path_, tmp_;
  int fd_ = -1;
};
void write_text_atomic(const std::string& path, const std::string& text);

// A model folder (or its config.json): the config.json path; a folder without one is an error.
std::string config_path_of(const std::string& path);
// Whether a model folder holds weights (model.safetensors or model.safetensors.index.json).
bool has_weights(const std::string& dir);

}  // namespace moelab
