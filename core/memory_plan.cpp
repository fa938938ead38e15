#include "memory_plan.hpp"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "error.hpp"
#include "params.hpp"
#include "safetensors.hpp"

namespace moelab {

int64_t weight_bytes_fp32(const ModelConfig& c) { return checked_mul(count_params(c).total, 4, "model size"); }

int64_t default_plan_tokens(int64_t context) { return std::max<int64_t>(1, std::min(context, kPlanPromptTokens)); }

bool kept_as_stored(Role role, DType dtype) {
  if (dtype != DType::BF16 && dtype != DType::F16) return false;
  switch (role) {
    case Role::Embed: case Role::LmHead: case Role::Q: case Role::K: case Role::V: case Role::O:
    case Role::ExpertGate: case Role::ExpertUp: case Role::ExpertDown: case Role::SharedGate:
    case Role::SharedUp: case Role::SharedDown: case Role::DenseGate: case Role::DenseUp: case Role::DenseDown:
    case Role::ExpertsGateUpStacked: case Role::ExpertsDownStacked:  // GraniteMoE's fused experts, viewed per expert
      return true;
    default:  // norms, biases and the router stay fp32 (small, and the router's scores decide the routing)
      return false;
  }
}

namespace {
std::string lower_dtype(DType d) {
  std::string s = dtype_name(d);
  for (char& ch : s) ch = char(std::tolower(static_cast<unsigned char>(ch)));
  return s;
}

// One expert's matrix, or GraniteMoE's stack of all of a layer's experts.
bool routed_expert(const TensorSpec& s) {
  return s.expert >= 0 || s.role == Role::ExpertsGateUpStacked || s.role == Role::ExpertsDownStacked;
}

// The keep decisions and byte counts, given each tensor's dtype and whether it may be kept at all.
StoredWeights plan_from(const ModelConfig& c, const std::vector<TensorSpec>& specs, const std::vector<DType>& dtypes,
                        const std::vector<bool>& keepable, const std::vector<int64_t>& stored_bytes, int64_t real_bytes,
                        const std::string& where) {
  StoredWeights w;
  w.keep.assign(specs.size(), false);
  std::vector<int> experts_kept(size_t(c.num_layers), -1);  // -1 undecided, 0 widen, 1 keep
  std::vector<int> experts_dtype(size_t(c.num_layers), -1);
  for (size_t i = 0; i < specs.size(); ++i) {
    w.keep[i] = keepable[i] && kept_as_stored(specs[i].role, dtypes[i]);
    if (!routed_expert(specs[i])) continue;
    const size_t l = size_t(specs[i].layer);
    const int dt = int(dtypes[i]);
    const bool ok = w.keep[i] && (experts_dtype[l] < 0 || experts_dtype[l] == dt);
    experts_dtype[l] = dt;
    experts_kept[l] = experts_kept[l] != 0 && ok ? 1 : 0;
  }
  for (size_t i = 0; i < specs.size(); ++i) {
    if (routed_expert(specs[i])) w.keep[i] = experts_kept[size_t(specs[i].layer)] == 1;
    if (w.keep[i]) {
      w.mapped = checked_add(w.mapped, stored_bytes[i], where);
      int64_t& by = w.mapped_by_dtype[lower_dtype(dtypes[i])];
      by = checked_add(by, stored_bytes[i], where);
    } else {
      w.owned = checked_add(w.owned, checked_mul(specs[i].numel(), real_bytes, where), where);
    }
  }
  return w;
}
}  // namespace

StoredWeights plan_stored_weights(const ModelConfig& c, const std::vector<TensorSpec>& specs,
                                  const std::vector<const TensorView*>& views, bool map_stored, int64_t real_bytes,
                                  const std::string& where) {
  std::vector<DType> dtypes;
  std::vector<bool> keepable;
  std::vector<int64_t> bytes;
  for (const TensorView* t : views) {
    dtypes.push_back(t->dtype);
    // A hostile layout (an odd offset) cannot be read as 16-bit elements in place: widened instead.
    keepable.push_back(map_stored && reinterpret_cast<uintptr_t>(t->data) % 2 == 0);
    bytes.push_back(t->nbytes);
  }
  return plan_from(c, specs, dtypes, keepable, bytes, real_bytes, where);
}

// Activations of one forward of T tokens over a context of S, at most (model.cpp forward_tensors
// and the CPU backend; r bytes per real):
//   residual stream, norm output, a scaled branch      3 · T · H
//   q and the attention output; k and v                2 · T · NH · D + 2 · T · NKV · D
//   attention probabilities, every head at once        NH · max(T · T, S)   (the CPU holds fewer):
//     the prompt's forward is T × T; a token's forward at the end of the context 1 × S
//   router logits, probabilities, scores; ids, weights 3 · T · E + 2 · T · K
//   routed experts: gathered inputs, per-slot outputs  T · K · (2H + 2F)   (gate, up of each slot)
//   shared expert / dense MLP                          T · (2 Fs + H), T · (2 Fd + H)
//   logits [T,V] on the backend, and their host copy   T · V · r + T · V · 4
MemoryPlan memory_plan(const ModelConfig& c, const StoredWeights& w, int64_t context, int64_t tokens,
                       int64_t real_bytes) {
  const std::string where = c.architecture;
  MemoryPlan p;
  p.context = context;
  p.tokens = tokens;
  p.mapped = w.mapped;
  p.mapped_by_dtype = w.mapped_by_dtype;
  p.owned = w.owned;
  p.fp32_weights = weight_bytes_fp32(c);
  const int64_t L = c.num_layers, H = c.hidden_size, NH = c.num_heads, NKV = c.num_kv_heads, D = c.head_dim,
                E = c.num_experts, K = c.top_k, F = c.expert_ffn_size, V = c.vocab_size, S = context, T = tokens;
  const auto mul = [&](std::initializer_list<int64_t> f) {
    int64_t r = 1;
    for (int64_t x : f) r = checked_mul(r, x, where);
    return r;
  };
  p.kv_cache = mul({2, L, S, NKV, D, real_bytes});
  int64_t reals = mul({3, T, H});
  reals = checked_add(reals, mul({2, T, checked_add(mul({NH, D}), mul({NKV, D}), where)}), where);
  reals = checked_add(reals, checked_mul(NH, std::max(mul({T, T}), S), where), where);
  if (c.num_moe_layers() > 0) {
    reals = checked_add(reals, checked_add(mul({3, T, E}), mul({2, T, K}), where), where);
    reals = checked_add(reals, mul({T, K, checked_add(mul({2, H}), mul({2, F}), where)}), where);
    if (c.shared_ffn_size > 0) reals = checked_add(reals, mul({T, checked_add(mul({2, c.shared_ffn_size}), H, where)}), where);
  }
  if (c.num_moe_layers() < c.num_layers)
    reals = checked_add(reals, mul({T, checked_add(mul({2, c.dense_ffn_size}), H, where)}), where);
  reals = checked_add(reals, mul({T, V}), where);
  p.activations = checked_add(checked_mul(reals, real_bytes, where), mul({T, V, 4}), where);
  return p;
}

MemoryPlan memory_plan(const ModelConfig& c, DType stored, int64_t context, int64_t tokens, bool map_stored,
                       int64_t real_bytes) {
  const std::vector<TensorSpec> specs = tensor_specs(c);
  const std::vector<DType> dtypes(specs.size(), stored);
  const std::vector<bool> keepable(specs.size(), map_stored);
  std::vector<int64_t> bytes;
  for (const TensorSpec& s : specs) bytes.push_back(checked_mul(s.numel(), dtype_size(stored), c.architecture));
  return memory_plan(c, plan_from(c, specs, dtypes, keepable, bytes, real_bytes, c.architecture), context, tokens,
                     real_bytes);
}

namespace {

// "16G", "512M", "17179869184" -> bytes; 0 when unreadable.
int64_t parse_bytes(const std::string& text) {
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  if (end == text.c_str() || !(v > 0) || v > 9.0e18) return 0;
  double scale = 1;
  switch (std::toupper(static_cast<unsigned char>(*end))) {
    case 'K': scale = 1024.0; break;
    case 'M': scale = 1024.0 * 1024; break;
    case 'G': scale = 1024.0 * 1024 * 1024; break;
    case 'T': scale = 1024.0 * 1024 * 1024 * 1024; break;
    case 0: break;
    default: return 0;
  }
  const double b = v * scale;
  return b > 9.0e18 ? 0 : int64_t(b);
}

int64_t read_limit_file(const std::string& path) {
  std::ifstream f(path);
  std::string s;
  if (!(f >> s) || s == "max") return 0;
  const int64_t v = parse_bytes(s);
  return v >= (int64_t(1) << 60) ? 0 : v;  // cgroup v1 writes "no limit" as a huge number
}

// The smallest memory limit on this process's cgroup and its parents (v2 memory.max, v1
// memory.limit_in_bytes); 0 when none.
int64_t cgroup_limit() {
  std::ifstream f("/proc/self/cgroup");
  std::string line;
  int64_t best = 0;
  auto take = [&best](int64_t v) {
    if (v > 0 && (best == 0 || v < best)) best = v;
  };
  while (std::getline(f, line)) {
    const size_t a = line.find(':'), b = line.find(':', a + 1);
    if (a == std::string::npos || b == std::string::npos) continue;
    const std::string controllers = line.substr(a + 1, b - a - 1);
    std::string path = line.substr(b + 1);
    const bool v2 = controllers.empty(), v1 = controllers.find("memory") != std::string::npos;
    if (!v2 && !v1) continue;
    for (;;) {
      if (v2) {
        take(read_limit_file("/sys/fs/cgroup" + path + "/memory.max"));
        take(read_limit_file("/sys/fs/cgroup/unified" + path + "/memory.max"));
      } else {
        take(read_limit_file("/sys/fs/cgroup/memory" + path + "/memory.limit_in_bytes"));
      }
      if (path.empty() || path == "/") break;
      const size_t slash = path.rfind('/');
      path = slash == 0 || slash == std::string::npos ? "/" : path.substr(0, slash);
    }
  }
  return best;
}

}  // namespace

MemoryBudget memory_budget() {
  MemoryBudget b;
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGE_SIZE);
  b.total = pages > 0 && page > 0 ? int64_t(pages) * int64_t(page) : int64_t(1) << 34;
  b.source = "physical memory";
  const int64_t cg = cgroup_limit();
  if (cg > 0 && cg < b.total) {
    b.total = cg;
    b.source = "cgroup limit";
  }
  if (const char* env = std::getenv("MOELAB_MEMORY_LIMIT")) {
    const int64_t v = parse_bytes(env);
    if (v > 0) {
      b.total = v;
      b.source = "MOELAB_MEMORY_LIMIT";
    }
  }
  const int64_t reserve = std::min(b.total / 10, int64_t(1) << 30);
  b.usable = b.total - reserve;
  return b;
}

int64_t physical_memory_bytes() { return memory_budget().total; }

void check_memory_plan(const MemoryPlan& p, const std::string& where, const std::string& what, int64_t device_bytes) {
  MemoryBudget b = memory_budget();
  if (device_bytes > 0) {  // a GPU's tensors live in its memory
    b.total = device_bytes;
    b.usable = device_bytes - std::min(device_bytes / 10, int64_t(1) << 30);
    b.source = "device memory";
  }
  const int64_t need = p.total();
  if (need <= b.usable) return;
  std::string parts = human_bytes(double(p.mapped)) + " of weights as stored + ";
  parts += human_bytes(double(p.owned)) + " as fp32 + ";
  parts += human_bytes(double(p.kv_cache)) + " of KV cache for " + std::to_string(p.context) + (p.context == 1 ? " token + " : " tokens + ");
  parts += human_bytes(double(p.activations)) + " of activations";
  std::string msg = what + " needs " + human_bytes(double(need)) + " (" + parts + "), more than the ";
  msg += human_bytes(double(b.usable)) + (device_bytes > 0 ? " the device can give it (" : " this machine can give it (") + human_bytes(double(b.total)) + " of " + b.source;
  msg += " less a reserve for the system)";
  fail(where, msg);
}

}  // namespace moelab
