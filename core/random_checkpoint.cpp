#include "random_checkpoint.hpp"

#include <fcntl.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "error.hpp"
#include "files.hpp"
#include "model.hpp"
#include "registry.hpp"
#include "safetensors.hpp"

namespace moelab {
namespace fs = std::filesystem;

namespace {

// The published config.json files (resources/real-models/<id>/config.json; test_random_checkpoint
// checks they agree), and two tiny shapes of the same families.
const char* const kOlmoe1b7b = R"({
  "architectures": ["OlmoeForCausalLM"], "attention_bias": false, "attention_dropout": 0.0, "clip_qkv": null,
  "eos_token_id": 50279, "hidden_act": "silu", "hidden_size": 2048, "initializer_range": 0.02,
  "intermediate_size": 1024, "max_position_embeddings": 4096, "model_type": "olmoe", "norm_topk_prob": false,
  "num_attention_heads": 16, "num_experts": 64, "num_experts_per_tok": 8, "num_hidden_layers": 16,
  "num_key_value_heads": 16, "output_router_logits": false, "pad_token_id": 1, "rms_norm_eps": 1e-05,
  "rope_scaling": null, "rope_theta": 10000.0, "router_aux_loss_coef": 0.01, "tie_word_embeddings": false,
  "torch_dtype": "bfloat16", "transformers_version": "4.43.0.dev0", "use_cache": true, "vocab_size": 50304})";

const char* const kGranite3bA800m = R"({
  "architectures": ["GraniteMoeForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
  "attention_multiplier": 0.015625, "bos_token_id": 0, "embedding_multiplier": 12.0, "eos_token_id": 0,
  "hidden_act": "silu", "hidden_size": 1536, "initializer_range": 0.02, "intermediate_size": 512,
  "logits_scaling": 6.0, "max_position_embeddings": 4096, "model_type": "granitemoe", "num_attention_heads": 24,
  "num_experts_per_tok": 8, "num_hidden_layers": 32, "num_key_value_heads": 8, "num_local_experts": 40,
  "output_router_logits": false, "pad_token_id": 0, "residual_multiplier": 0.22, "rms_norm_eps": 1e-06,
  "rope_scaling": null, "rope_theta": 10000, "router_aux_loss_coef": 0.001, "tie_word_embeddings": true,
  "torch_dtype": "bfloat16", "transformers_version": "4.46.0.dev0", "use_cache": true, "vocab_size": 49155})";

const char* const kQwen3_30bA3b = R"({
  "architectures": ["Qwen3MoeForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
  "bos_token_id": 151643, "decoder_sparse_step": 1, "eos_token_id": 151645, "head_dim": 128, "hidden_act": "silu",
  "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 6144, "max_position_embeddings": 40960,
  "max_window_layers": 48, "mlp_only_layers": [], "model_type": "qwen3_moe", "moe_intermediate_size": 768,
  "norm_topk_prob": true, "num_attention_heads": 32, "num_experts": 128, "num_experts_per_tok": 8,
  "num_hidden_layers": 48, "num_key_value_heads": 4, "output_router_logits": false, "rms_norm_eps": 1e-06,
  "rope_scaling": null, "rope_theta": 1000000.0, "router_aux_loss_coef": 0.001, "sliding_window": null,
  "tie_word_embeddings": false, "torch_dtype": "bfloat16", "transformers_version": "4.51.0", "use_cache": true,
  "use_sliding_window": false, "vocab_size": 151936})";

const char* const kOlmoeTiny = R"({
  "architectures": ["OlmoeForCausalLM"], "model_type": "olmoe", "hidden_size": 64, "intermediate_size": 32,
  "num_attention_heads": 4, "num_key_value_heads": 4, "num_hidden_layers": 2, "num_experts": 8,
  "num_experts_per_tok": 2, "norm_topk_prob": false, "vocab_size": 512, "max_position_embeddings": 512,
  "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "tie_word_embeddings": false, "clip_qkv": null,
  "torch_dtype": "bfloat16"})";

const char* const kGraniteTiny = R"({
  "architectures": ["GraniteMoeForCausalLM"], "model_type": "granitemoe", "hidden_size": 64,
  "intermediate_size": 32, "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 2,
  "num_local_experts": 8, "num_experts_per_tok": 2, "vocab_size": 300, "max_position_embeddings": 512,
  "rms_norm_eps": 1e-06, "rope_theta": 10000, "tie_word_embeddings": true, "attention_multiplier": 0.0625,
  "embedding_multiplier": 12.0, "residual_multiplier": 0.22, "logits_scaling": 6.0, "torch_dtype": "bfloat16"})";

const char* const kQwen3Tiny = R"({
  "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "hidden_size": 64, "head_dim": 32,
  "intermediate_size": 128, "moe_intermediate_size": 32, "num_attention_heads": 4, "num_key_value_heads": 2,
  "num_hidden_layers": 2, "num_experts": 8, "num_experts_per_tok": 2, "norm_topk_prob": true,
  "decoder_sparse_step": 1, "mlp_only_layers": [], "vocab_size": 400, "max_position_embeddings": 512,
  "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "tie_word_embeddings": false, "sliding_window": null,
  "use_sliding_window": false, "torch_dtype": "bfloat16"})";

struct Shape {
  const char* name;
  const char* json;
};
const Shape kShapes[] = {{"olmoe-1b-7b", kOlmoe1b7b},
                         {"granite-3b-a800m", kGranite3bA800m},
                         {"qwen3-30b-a3b", kQwen3_30bA3b},
                         {"olmoe-tiny", kOlmoeTiny},
                         {"granite-tiny", kGraniteTiny},
                         {"qwen3-tiny", kQwen3Tiny}};

const char* const kMarker = "moelab-shape.json";
constexpr int64_t kBlock = int64_t(1) << 20;  // elements generated per block: the bounded buffer

bool is_norm(Role r) {
  return r == Role::InputNorm || r == Role::PostAttnNorm || r == Role::FinalNorm || r == Role::QNorm ||
         r == Role::KNorm || r == Role::MlaQANorm || r == Role::MlaKvANorm;
}

// The safetensors header (padded with spaces to a multiple of 8) and the data's size.
std::string build_header(const std::vector<TensorSpec>& specs, int64_t* data_bytes) {
  nlohmann::json h = nlohmann::json::object();
  h["__metadata__"] = {{"format", "pt"}, {"generator", "moelab random_checkpoint"}};
  int64_t off = 0;
  for (const TensorSpec& s : specs) {
    const int64_t n = checked_mul(s.numel(), 2, s.name);
    h[s.name] = {{"dtype", "BF16"}, {"shape", s.shape}, {"data_offsets", {off, off + n}}};
    off = checked_add(off, n, s.name);
  }
  std::string text = h.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  *data_bytes = off;
  return text;
}

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Block `block` of tensor `index`: uniform on [-a, a] with a = 0.02·√3 (standard deviation 0.02),
// from a generator seeded by (seed, tensor, block) alone, so blocks can be filled in any order.
void fill_block(uint16_t* out, int64_t n, uint64_t seed, uint64_t index, uint64_t block) {
  uint64_t s = splitmix64(seed ^ splitmix64(index * 0x100000001B3ull + block));
  const float a = 0.02f * std::sqrt(3.0f), scale = 2.0f * a / 16777216.0f;
  for (int64_t i = 0; i < n; ++i) {
    s ^= s << 13;  // xorshift64
    s ^= s >> 7;
    s ^= s << 17;
    out[i] = float_to_bf16(float(s >> 40) * scale - a);
  }
}

void write_all(int fd, const void* p, size_t n, const std::string& path) {
  const char* c = static_cast<const char*>(p);
  while (n > 0) {
    const ssize_t w = ::write(fd, c, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) fail(path, std::string("cannot write: ") + std::strerror(errno));
    c += w;
    n -= size_t(w);
  }
}

void write_weights(const std::string& path, const ModelConfig& c, uint64_t seed) {
  const std::vector<TensorSpec> specs = tensor_specs(c);
  int64_t data_bytes = 0;
  const std::string header = build_header(specs, &data_bytes);
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail(path, std::string("cannot write: ") + std::strerror(errno));
  try {
    uint8_t len[8];
    for (int i = 0; i < 8; ++i) len[i] = uint8_t(uint64_t(header.size()) >> (8 * i));
    write_all(fd, len, 8, path);
    write_all(fd, header.data(), header.size(), path);
    constexpr int64_t kBlocksPerWrite = 16;  // 32 MiB of bf16 per write
    std::vector<uint16_t> buf(size_t(kBlock * kBlocksPerWrite));
    for (size_t t = 0; t < specs.size(); ++t) {
      const int64_t n = specs[t].numel();
      if (is_norm(specs[t].role)) {
        std::fill(buf.begin(), buf.begin() + std::min<int64_t>(n, int64_t(buf.size())), uint16_t(0x3F80));  // 1.0
        for (int64_t done = 0; done < n;) {
          const int64_t m = std::min<int64_t>(n - done, int64_t(buf.size()));
          write_all(fd, buf.data(), size_t(m) * 2, path);
          done += m;
        }
        continue;
      }
      const int64_t blocks = (n + kBlock - 1) / kBlock;
      for (int64_t b0 = 0; b0 < blocks; b0 += kBlocksPerWrite) {
        const int64_t nb = std::min(kBlocksPerWrite, blocks - b0);
#pragma omp parallel for schedule(static) if (nb > 1)
        for (int64_t j = 0; j < nb; ++j) {
          const int64_t b = b0 + j, m = std::min(kBlock, n - b * kBlock);
          fill_block(buf.data() + j * kBlock, m, seed, t, uint64_t(b));
        }
        const int64_t elems = std::min(n - b0 * kBlock, nb * kBlock);
        write_all(fd, buf.data(), size_t(elems) * 2, path);
      }
    }
    if (::fsync(fd) != 0) fail(path, std::string("cannot sync: ") + std::strerror(errno));
  } catch (...) {
    ::close(fd);
    throw;
  }
  if (::close(fd) != 0) fail(path, std::string("cannot close: ") + std::strerror(errno));
}

// Free bytes on the disk that holds `dir` (or its nearest existing parent).
int64_t disk_free(fs::path dir) {
  std::error_code ec;
  while (!dir.empty() && !fs::exists(dir, ec)) dir = dir.parent_path();
  struct statvfs st {};
  if (::statvfs(dir.empty() ? "." : dir.c_str(), &st) != 0) return -1;
  return int64_t(st.f_bavail) * int64_t(st.f_frsize);
}

// Whether `dir` holds a complete checkpoint of this shape, seed and generator version.
bool cache_complete(const fs::path& dir, const std::string& shape, uint64_t seed, int64_t bytes) {
  std::error_code ec;
  if (!fs::exists(dir / kMarker, ec) || !fs::exists(dir / "config.json", ec)) return false;
  try {
    const nlohmann::json m = read_json_file((dir / kMarker).string(), 1 << 16);
    if (m.value("generator_version", -1) != kRandomCheckpointVersion || m.value("shape", "") != shape ||
        m.value("seed", uint64_t(0)) != seed || m.value("weights_bytes", int64_t(-1)) != bytes)
      return false;
  } catch (const std::exception&) {
    return false;  // a malformed marker: rewrite
  }
  const auto size = fs::file_size(dir / "model.safetensors", ec);
  return !ec && int64_t(size) == bytes;
}

}  // namespace

std::vector<std::string> shape_names() {
  std::vector<std::string> out;
  for (const Shape& s : kShapes) out.push_back(s.name);
  return out;
}

nlohmann::json shape_config_json(const std::string& shape) {
  for (const Shape& s : kShapes)
    if (shape == s.name) return nlohmann::json::parse(s.json);
  std::string known;
  for (const Shape& s : kShapes) known += std::string(known.empty() ? "" : ", ") + s.name;
  fail("--shape " + shape, "not a known shape (" + known + ")");
}

ModelConfig shape_config(const std::string& shape) { return parse_config(shape_config_json(shape), "shape " + shape); }

int64_t random_checkpoint_bytes(const ModelConfig& c) {
  int64_t data = 0;
  const std::string header = build_header(tensor_specs(c), &data);
  return checked_add(checked_add(8, int64_t(header.size()), "checkpoint"), data, "checkpoint");
}

std::string default_shape_cache_dir() {
  const char* xdg = std::getenv("XDG_CACHE_HOME");
  if (xdg && *xdg) return (fs::path(xdg) / "moelab" / "shapes").string();
  const char* home = std::getenv("HOME");
  return (fs::path(home && *home ? home : "/tmp") / ".cache" / "moelab" / "shapes").string();
}

RandomCheckpoint ensure_random_checkpoint(const std::string& shape, const RandomCheckpointOptions& o) {
  const ModelConfig c = shape_config(shape);
  const fs::path root = o.cache_dir.empty() ? fs::path(default_shape_cache_dir()) : fs::path(o.cache_dir);
  const fs::path dir = root / shape;
  RandomCheckpoint r;
  r.dir = dir.string();
  r.bytes = random_checkpoint_bytes(c);
  // Before anything is written: the weights must be read from memory, not from disk, every token.
  const int64_t memory = o.memory_bytes > 0 ? o.memory_bytes : physical_memory_bytes();
  if (checked_add(r.bytes, o.memory_spare, shape) > memory)
    fail(shape, "its bf16 checkpoint is " + human_bytes(double(r.bytes)) + " and needs " +
                    human_bytes(double(r.bytes + o.memory_spare)) + " of memory to run without reading the disk every token; this machine has " +
                    human_bytes(double(memory)) + ": refused");
  if (cache_complete(dir, shape, o.seed, r.bytes)) return r;

  const int64_t free_bytes = o.disk_free_bytes >= 0 ? o.disk_free_bytes : disk_free(root);
  const int64_t need = checked_add(r.bytes, int64_t(512) << 20, shape);  // and 512 MiB to spare
  if (free_bytes >= 0 && need > free_bytes)
    fail(root.string(), "the " + shape + " checkpoint needs " + human_bytes(double(need)) + " of disk (with 512 MiB to spare), " +
                            human_bytes(double(free_bytes)) + " free: refused");

  const auto t0 = std::chrono::steady_clock::now();
  std::error_code ec;
  fs::create_directories(root, ec);
  if (ec) fail(root.string(), "cannot create the cache folder: " + ec.message());
  const fs::path tmp = root / (shape + ".tmp-" + std::to_string(::getpid()));
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp, ec);
  if (ec) fail(tmp.string(), "cannot create: " + ec.message());
  try {
    nlohmann::json cfg = shape_config_json(shape);
    cfg["torch_dtype"] = "bfloat16";
    write_text_atomic((tmp / "config.json").string(), cfg.dump(2) + "\n");
    write_weights((tmp / "model.safetensors").string(), c, o.seed);
    const nlohmann::json marker = {{"generator_version", kRandomCheckpointVersion}, {"shape", shape},
                                   {"seed", o.seed}, {"weights_bytes", r.bytes},
                                   {"values", "norms 1; other tensors uniform, std 0.02"}};
    write_text_atomic((tmp / kMarker).string(), marker.dump(2) + "\n");
    // Replace an incomplete or outdated folder; a complete one another process just wrote wins.
    if (fs::exists(dir, ec) && !cache_complete(dir, shape, o.seed, r.bytes)) fs::remove_all(dir, ec);
    fs::rename(tmp, dir, ec);
    if (ec) {
      if (!cache_complete(dir, shape, o.seed, r.bytes)) fail(dir.string(), "cannot rename the new checkpoint into place: " + ec.message());
      fs::remove_all(tmp, ec);
      return r;
    }
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
  r.generated = true;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

}  // namespace moelab
