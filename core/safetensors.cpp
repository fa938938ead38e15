#include "safetensors.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <set>

#include <Eigen/Core>
#include <nlohmann/json.hpp>

#include "error.hpp"
#include "files.hpp"

namespace moelab {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

struct DTypeInfo {
  DType d;
  const char* name;
  int64_t size;
  const char* torch_name;
};
constexpr DTypeInfo kDTypes[] = {
    {DType::F32, "F32", 4, "float32"}, {DType::F16, "F16", 2, "float16"}, {DType::BF16, "BF16", 2, "bfloat16"},
    {DType::F64, "F64", 8, "float64"}, {DType::I64, "I64", 8, "int64"},   {DType::I32, "I32", 4, "int32"},
    {DType::I16, "I16", 2, "int16"},   {DType::I8, "I8", 1, "int8"},      {DType::U8, "U8", 1, "uint8"},
    {DType::BOOL, "BOOL", 1, "bool"},
};

uint64_t read_le_u64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// ---- a weights file changed under its memory map ----
// Reading a page of a mapped file that has since been truncated raises SIGBUS. The lab cannot
// go on (the weights are gone), but it can say what happened, in one line naming the file, and
// stop without touching anything the user made (runs, logs and sessions are written atomically
// or appended and flushed step by step, so what is on disk is whole). A fixed table of the
// mapped ranges, read by an async-signal-safe handler.
struct MappedRange {
  std::atomic<const char*> begin{nullptr};
  std::atomic<size_t> size{0};
  char path[512] = {};
};
MappedRange g_ranges[256];
char g_note_file[1024] = {};  // where the handler also writes its line (the GUI shows it next start)

void write_all(int fd, const char* s) {
  size_t n = std::strlen(s);
  while (n > 0) {
    const ssize_t w = ::write(fd, s, n);
    if (w <= 0) return;
    s += w;
    n -= size_t(w);
  }
}

void on_sigbus(int sig, siginfo_t* info, void*) {
  const char* addr = static_cast<const char*>(info ? info->si_addr : nullptr);
  for (MappedRange& r : g_ranges) {
    const char* b = r.begin.load();
    if (b && addr >= b && addr < b + r.size.load()) {
      static const char* const kWhat =
          ": the weights file was truncated or replaced while the lab had it open (SIGBUS); "
          "the lab stops here. Runs, logs and sessions on disk are intact; reopen the model.\n";
      write_all(2, "moelab: ");
      write_all(2, r.path);
      write_all(2, kWhat);
      if (g_note_file[0]) {
        const int fd = ::open(g_note_file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd >= 0) {
          write_all(fd, r.path);
          write_all(fd, kWhat);
          ::close(fd);
        }
      }
      ::_exit(75);
    }
  }
  ::signal(sig, SIG_DFL);  // not ours: the default action
  ::raise(sig);
}

void install_sigbus_guard() {
  static const bool installed = [] {
    struct sigaction sa {};
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    return ::sigaction(SIGBUS, &sa, nullptr) == 0;
  }();
  (void)installed;
}

std::mutex g_ranges_mu;  // guards writers; the handler only reads (begin is stored last)

void guard_range(const void* begin, size_t size, const std::string& path) {
  install_sigbus_guard();
  std::lock_guard<std::mutex> lock(g_ranges_mu);
  for (MappedRange& r : g_ranges) {
    if (r.begin.load() != nullptr) continue;
    std::snprintf(r.path, sizeof r.path, "%s", path.c_str());
    r.size.store(size);
    r.begin.store(static_cast<const char*>(begin));
    return;
  }
  // More than 256 files mapped at once: the rest are unguarded (the default SIGBUS then).
}

void unguard_range(const void* begin) {
  std::lock_guard<std::mutex> lock(g_ranges_mu);
  for (MappedRange& r : g_ranges)
    if (r.begin.load() == begin) {
      r.begin.store(nullptr);
      return;
    }
}

}  // namespace

int64_t dtype_size(DType d) {
  for (const auto& i : kDTypes)
    if (i.d == d) return i.size;
  return 0;
}
const char* dtype_name(DType d) {
  for (const auto& i : kDTypes)
    if (i.d == d) return i.name;
  return "?";
}
bool dtype_is_float(DType d) { return d == DType::F32 || d == DType::F16 || d == DType::BF16 || d == DType::F64; }

DType dtype_from_torch_name(const std::string& s, const std::string& where) {
  for (const auto& i : kDTypes)
    if (s == i.torch_name || s == i.name) return i.d;
  fail(where, "unknown dtype '" + s + "'");
}

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;  // validated against overflow when the header was read
  return n;
}

// ---- half and bfloat16 conversions: Eigen's (IEEE 754 binary16; bfloat16 = the top half of a
// float), round to nearest even; test_safetensors checks them against bit patterns ----

float half_to_float(uint16_t h) { return static_cast<float>(Eigen::numext::bit_cast<Eigen::half>(h)); }
uint16_t float_to_half(float f) { return Eigen::numext::bit_cast<uint16_t>(Eigen::half(f)); }
float bf16_to_float(uint16_t b) { return static_cast<float>(Eigen::numext::bit_cast<Eigen::bfloat16>(b)); }
uint16_t float_to_bf16(float f) { return Eigen::numext::bit_cast<uint16_t>(Eigen::bfloat16(f)); }

// ---- reading ----

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
  // O_NONBLOCK: a FIFO in place of the file must be refused by the check below, not wait for a writer.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) fail(path, std::string("cannot open: ") + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(path, "not a regular file");
  }
  map_size_ = size_t(st.st_size);
  if (map_size_ < 8) {
    ::close(fd);
    fail(path, "truncated safetensors file (" + std::to_string(map_size_) + " bytes, no header)");
  }
  map_ = ::mmap(nullptr, map_size_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (map_ == MAP_FAILED) {
    map_ = nullptr;
    fail(path, std::string("cannot map: ") + std::strerror(errno));
  }
  guard_range(map_, map_size_, path);
  try {
    const auto* bytes = static_cast<const uint8_t*>(map_);
    const uint64_t header_len = read_le_u64(bytes);
    if (header_len > uint64_t(kMaxHeaderBytes)) fail(path, "safetensors header length " + std::to_string(header_len) + " is over the 100 MB limit");
    if (header_len > map_size_ - 8)
      fail(path, "truncated safetensors file: header says " + std::to_string(header_len) + " bytes, file has " +
                     std::to_string(map_size_ - 8) + " after the length");
    json h;
    // The JSON library keeps the last of two equal keys; a header naming a tensor twice is refused instead.
    std::set<std::string> names;
    std::string twice;
    const auto note_duplicates = [&](int depth, json::parse_event_t event, json& parsed) {
      if (event == json::parse_event_t::key && depth == 1 && twice.empty() && parsed.is_string() &&
          !names.insert(parsed.get<std::string>()).second)
        twice = parsed.get<std::string>();
      return true;
    };
    try {
      h = json::parse(reinterpret_cast<const char*>(bytes + 8), reinterpret_cast<const char*>(bytes + 8 + header_len),
                      note_duplicates);
    } catch (const json::exception&) {
      fail(path, "safetensors header is not valid JSON");
    }
    if (!twice.empty()) fail(path, "safetensors header names tensor '" + twice + "' twice");
    if (!h.is_object()) fail(path, "safetensors header is not a JSON object");
    if (h.size() > size_t(kMaxTensors)) fail(path, "safetensors header lists too many tensors");
    const uint8_t* data = bytes + 8 + header_len;
    const int64_t data_size = int64_t(map_size_ - 8 - header_len);
    struct Range {
      int64_t begin, end;
      size_t idx;
    };
    std::vector<Range> ranges;
    for (auto it = h.begin(); it != h.end(); ++it) {
      const std::string& name = it.key();
      if (name == "__metadata__") {
        if (!it->is_object()) fail(path, "__metadata__ must be an object");
        for (auto m = it->begin(); m != it->end(); ++m)
          if (m->is_string()) metadata_[m.key()] = m->get<std::string>();
        continue;
      }
      const std::string where = path + ": tensor '" + name + "'";
      const json& e = *it;
      if (!e.is_object() || !e.contains("dtype") || !e.contains("shape") || !e.contains("data_offsets"))
        throw Error(where + " needs dtype, shape and data_offsets");
      if (!e["dtype"].is_string()) throw Error(where + ": dtype must be a string");
      TensorView t;
      t.name = name;
      bool known = false;
      for (const auto& d : kDTypes)
        if (e["dtype"].get<std::string>() == d.name) {
          t.dtype = d.d;
          known = true;
        }
      if (!known) throw Error(where + ": unsupported dtype " + e["dtype"].dump());
      const json& shape = e["shape"];
      if (!shape.is_array() || shape.size() > size_t(kMaxRank)) throw Error(where + ": shape must be a list of at most 8 sizes");
      int64_t numel = 1;
      for (const auto& d : shape) {
        if (!d.is_number_unsigned() && !(d.is_number_integer() && d.get<int64_t>() >= 0))
          throw Error(where + ": shape entries must be non-negative integers");
        t.shape.push_back(d.get<int64_t>());
        numel = checked_mul(numel, t.shape.back(), where);
      }
      const json& off = e["data_offsets"];
      if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
        throw Error(where + ": data_offsets must be two non-negative integers");
      const uint64_t b = off[0].get<uint64_t>(), en = off[1].get<uint64_t>();
      if (b > en) throw Error(where + ": data_offsets end before they begin");
      if (en > uint64_t(data_size))
        throw Error(where + ": data_offsets point past the end of the file (" + std::to_string(en) + " > " +
                    std::to_string(data_size) + " data bytes)");
      const int64_t expect = checked_mul(numel, dtype_size(t.dtype), where);
      if (int64_t(en - b) != expect)
        throw Error(where + ": byte range holds " + std::to_string(en - b) + " bytes but " + dtype_name(t.dtype) +
                    " x shape needs " + std::to_string(expect));
      t.data = data + b;
      t.nbytes = expect;
      t.file = &path_;
      ranges.push_back({int64_t(b), int64_t(en), tensors_.size()});
      tensors_.push_back(std::move(t));
    }
    // Sorted by offset, the byte ranges must tile the data exactly: no holes, no overlaps.
    std::sort(ranges.begin(), ranges.end(), [](const Range& a, const Range& b) {
      return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
    });
    int64_t pos = 0;
    for (const Range& r : ranges) {
      const std::string& name = tensors_[r.idx].name;
      if (r.begin < pos) fail(path, "tensor '" + name + "' overlaps the tensor before it");
      if (r.begin > pos) fail(path, "hole in the data before tensor '" + name + "'");
      pos = r.end;
    }
    if (pos != data_size)
      fail(path, "file has " + std::to_string(data_size) + " data bytes but the tensors cover " + std::to_string(pos) +
                     (pos > data_size ? " (truncated file)" : " (trailing bytes)"));
    for (size_t i = 0; i < tensors_.size(); ++i) index_[tensors_[i].name] = i;
  } catch (...) {
    unguard_range(map_);
    ::munmap(map_, map_size_);
    map_ = nullptr;
    throw;
  }
}

void set_sigbus_note_file(const std::string& path) {
  std::lock_guard<std::mutex> lock(g_ranges_mu);
  std::snprintf(g_note_file, sizeof g_note_file, "%s", path.size() < sizeof g_note_file ? path.c_str() : "");
}

SafetensorsFile::~SafetensorsFile() {
  if (map_) {
    unguard_range(map_);
    ::munmap(map_, map_size_);
  }
}

const TensorView* SafetensorsFile::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

Checkpoint::Checkpoint(const std::string& dir) : dir_(dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) fail(dir, "not a model directory");
  const fs::path single = fs::path(dir) / "model.safetensors";
  const fs::path index = fs::path(dir) / "model.safetensors.index.json";
  std::vector<std::string> files;
  if (fs::exists(single, ec)) {
    files.push_back(single.string());
  } else if (fs::exists(index, ec)) {
    json j = read_json_file(index.string(), 64 << 20);
    if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
      fail(index.string(), "has no weight_map object");
    std::set<std::string> seen;  // a set, not a search of `files`: an index may list a million names
    for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
      if (!it->is_string()) fail(index.string(), "weight_map values must be file names");
      const std::string f = it->get<std::string>();
      if (f.find('/') != std::string::npos || f == "..") fail(index.string(), "shard name '" + f + "' leaves the model directory");
      if (seen.insert(f).second) files.push_back((fs::path(dir) / f).string());
    }
  } else {
    fail(dir, "no model.safetensors or model.safetensors.index.json");
  }
  for (const std::string& f : files) {
    files_.push_back(std::make_unique<SafetensorsFile>(f));
    for (const TensorView& t : files_.back()->tensors()) {
      if (by_name_.count(t.name)) fail(f, "tensor '" + t.name + "' appears in two shards");
      by_name_[t.name] = &t;
    }
  }
}

const TensorView* Checkpoint::find(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : it->second;
}

std::vector<const TensorView*> Checkpoint::all() const {
  std::vector<const TensorView*> v;
  for (const auto& [n, t] : by_name_) v.push_back(t);
  return v;
}

int64_t Checkpoint::total_bytes() const {
  int64_t n = 0;
  for (const auto& [name, t] : by_name_) n += t->nbytes;
  return n;
}

void tensor_to_float(const TensorView& t, float* dst) {
  const int64_t n = t.numel();
  const std::string where = (t.file ? *t.file : std::string("checkpoint")) + ": tensor '" + t.name + "'";
  switch (t.dtype) {
    case DType::F32:
      std::memcpy(dst, t.data, size_t(n) * 4);
      break;
    case DType::F16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, t.data + 2 * i, 2);
        dst[i] = half_to_float(h);
      }
      break;
    case DType::BF16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, t.data + 2 * i, 2);
        dst[i] = bf16_to_float(h);
      }
      break;
    case DType::F64:
      for (int64_t i = 0; i < n; ++i) {
        double d;
        std::memcpy(&d, t.data + 8 * i, 8);
        dst[i] = float(d);
      }
      break;
    default:
      throw Error(where + ": dtype " + dtype_name(t.dtype) + " is not a floating type the lab can compute with");
  }
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(dst[i]))
      throw Error(where + ": holds " + (std::isnan(dst[i]) ? "NaN" : "Inf") + " at element " + std::to_string(i));
}

// ---- writing ----

namespace {

int64_t bytes_of(const TensorToWrite& t) {
  int64_t n = 1;
  for (int64_t d : t.shape) n = checked_mul(n, d, t.name);
  return checked_mul(n, dtype_size(t.dtype), t.name);
}

}  // namespace


void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& unsorted,
                       const std::map<std::string, std::string>& metadata) {
  // Data in name order, so the header's (sorted) keys list the tensors in offset order, as the
  // reference implementation's files do.
  std::vector<TensorToWrite> tensors = unsorted;
  std::sort(tensors.begin(), tensors.end(), [](const TensorToWrite& a, const TensorToWrite& b) { return a.name < b.name; });
  json h = json::object();
  json meta = json::object();
  for (const auto& [k, v] : metadata) meta[k] = v;
  meta["format"] = "pt";
  h["__metadata__"] = meta;
  int64_t offset = 0;
  for (const auto& t : tensors) {
    if (!dtype_is_float(t.dtype) || t.dtype == DType::F64) fail(path, "can only write F32, F16 or BF16 tensors");
    const int64_t n = bytes_of(t);
    h[t.name] = {{"dtype", dtype_name(t.dtype)}, {"shape", t.shape}, {"data_offsets", {offset, offset + n}}};
    offset += n;
  }
  std::string header = h.dump();
  header.append((8 - header.size() % 8) % 8, ' ');
  AtomicFile f(path);
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = uint8_t((uint64_t(header.size()) >> (8 * i)) & 0xff);
  f.write(len, 8);
  f.write(header.data(), header.size());
  std::vector<uint8_t> buf;
  for (const auto& t : tensors) {  // same order as the offsets above
    const int64_t n = bytes_of(t) / dtype_size(t.dtype);
    if (t.dtype == DType::F32) {
      f.write(t.data, size_t(n) * 4);
      continue;
    }
    buf.resize(size_t(n) * 2);
    for (int64_t i = 0; i < n; ++i) {
      const uint16_t v = t.dtype == DType::F16 ? float_to_half(t.data[i]) : float_to_bf16(t.data[i]);
      std::memcpy(&buf[size_t(2 * i)], &v, 2);
    }
    f.write(buf.data(), buf.size());
  }
  f.commit();
}

void write_checkpoint_weights(const std::string& dir, const std::vector<TensorToWrite>& tensors,
                              int64_t max_shard_bytes) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) fail(dir, "cannot create directory: " + ec.message());
  int64_t total = 0;
  for (const auto& t : tensors) total = checked_add(total, bytes_of(t), t.name);
  if (max_shard_bytes <= 0 || total <= max_shard_bytes) {
    write_safetensors((fs::path(dir) / "model.safetensors").string(), tensors);
    fs::remove(fs::path(dir) / "model.safetensors.index.json", ec);
    return;
  }
  std::vector<std::vector<TensorToWrite>> shards(1);
  int64_t in_shard = 0;
  for (const auto& t : tensors) {
    const int64_t n = bytes_of(t);
    if (in_shard > 0 && in_shard + n > max_shard_bytes) {
      shards.emplace_back();
      in_shard = 0;
    }
    shards.back().push_back(t);
    in_shard += n;
  }
  json weight_map = json::object();
  char name[64];
  for (size_t s = 0; s < shards.size(); ++s) {
    std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", s + 1, shards.size());
    write_safetensors((fs::path(dir) / name).string(), shards[s]);
    for (const auto& t : shards[s]) weight_map[t.name] = name;
  }
  json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
  write_text_atomic((fs::path(dir) / "model.safetensors.index.json").string(), index.dump(2) + "\n");
  fs::remove(fs::path(dir) / "model.safetensors", ec);
}

}  // namespace moelab
