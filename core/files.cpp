#include "files.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "error.hpp"

namespace moelab {
namespace fs = std::filesystem;
using nlohmann::json;

std::string read_text_file(const std::string& path, int64_t max_bytes) {
  std::error_code ec;
  if (!fs::exists(path, ec)) fail(path, "no such file");
  if (fs::is_directory(path, ec)) fail(path, "is a directory, expected a file");
  auto size = fs::file_size(path, ec);
  if (ec) fail(path, "cannot read size: " + ec.message());
  if (static_cast<int64_t>(size) > max_bytes)
    fail(path,
         "file is " + human_bytes(double(size)) + ", more than the " + human_bytes(double(max_bytes)) + " allowed");
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, "cannot open for reading");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string config_path_of(const std::string& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    auto p = fs::path(path) / "config.json";
    if (!fs::exists(p, ec)) fail(path, "model directory has no config.json");
    return p.string();
  }
  return path;
}

json read_json_file(const std::string& path, int64_t max_bytes) {
  const std::string text = read_text_file(path, max_bytes);
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    const std::string what = e.what();  // "[json.exception.parse_error.101] parse error at ..."
    const size_t cut = what.find(']');
    fail(path, "malformed JSON (" + (cut == std::string::npos ? what : what.substr(cut + 2)) + ")");
  }
}

bool has_weights(const std::string& dir) {
  std::error_code ec;
  return fs::exists(fs::path(dir) / "model.safetensors", ec) ||
         fs::exists(fs::path(dir) / "model.safetensors.index.json", ec);
}

AtomicFile::AtomicFile(const std::string& path) : path_(path), tmp_(path + ".tmp-" + std::to_string(::getpid())) {
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) fail(path, std::string("cannot write: ") + std::strerror(errno));
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) {
    ::close(fd_);
    ::unlink(tmp_.c_str());
  }
}

void AtomicFile::write(const void* p, size_t n) {
  const char* c = static_cast<const char*>(p);
  while (n > 0) {
    ssize_t w = ::write(fd_, c, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) fail(path_, std::string("write failed: ") + std::strerror(w < 0 ? errno : ENOSPC));
    c += w;
    n -= size_t(w);
  }
}

void AtomicFile::commit() {
  if (::fsync(fd_) != 0) fail(path_, std::string("fsync failed: ") + std::strerror(errno));
  if (::close(fd_) != 0) {
    fd_ = -1;
    ::unlink(tmp_.c_str());
    fail(path_, std::string("close failed: ") + std::strerror(errno));
  }
  fd_ = -1;
  if (::rename(tmp_.c_str(), path_.c_str()) != 0) {
    ::unlink(tmp_.c_str());
    fail(path_, std::string("rename failed: ") + std::strerror(errno));
  }
}

void write_text_atomic(const std::string& path, const std::string& text) {
  AtomicFile f(path);
  f.write(text.data(), text.size());
  f.commit();
}

}  // namespace moelab
