#include "model.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>

#include <nlohmann/json.hpp>

#include "error.hpp"
#include "files.hpp"
#include "params.hpp"
#include "random.hpp"
#include "registry.hpp"
#include "safetensors.hpp"

namespace moelab {
namespace fs = std::filesystem;

namespace {

std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

// Allocate every tensor of a ParamSet from the registry (experts stacked per layer).
ParamSet alloc_params(const ModelConfig& c, Backend& b) {
  ParamSet p;
  const int64_t H = c.hidden_size, E = c.num_experts, F = c.expert_ffn_size;
  p.layers.resize(size_t(c.num_layers));
  for (int64_t l = 0; l < c.num_layers; ++l) {
    LayerWeights& L = p.layers[size_t(l)];
    L.moe = c.is_moe_layer(l);
    if (L.moe) {
      L.experts.gate = b.alloc({E, F, H});
      L.experts.up = b.alloc({E, F, H});
      L.experts.down = b.alloc({E, H, F});
    }
  }
  for (const TensorSpec& s : tensor_specs(c)) {
    if (s.role == Role::ExpertsGateUpStacked) continue;  // the stacked gate and up, allocated above
    int64_t off = 0;
    Tensor* t = slot_for(p, s, &off);
    if (t->empty()) *t = b.alloc(s.shape);
  }
  if (c.tie_word_embeddings) p.lm_head = p.embed;
  return p;
}

}  // namespace

Tensor* slot_for(ParamSet& p, const TensorSpec& s, int64_t* off) {
  *off = 0;
  if (s.layer < 0) {
    switch (s.role) {
      case Role::Embed: return &p.embed;
      case Role::FinalNorm: return &p.final_norm;
      case Role::LmHead: return &p.lm_head;
      default: break;
    }
  } else {
    LayerWeights& L = p.layers[size_t(s.layer)];
    const int64_t per_expert = s.numel();
    switch (s.role) {
      case Role::InputNorm: return &L.input_norm;
      case Role::PostAttnNorm: return &L.post_attn_norm;
      case Role::Q: return &L.q;
      case Role::K: return &L.k;
      case Role::V: return &L.v;
      case Role::O: return &L.o;
      case Role::QBias: return &L.q_bias;
      case Role::KBias: return &L.k_bias;
      case Role::VBias: return &L.v_bias;
      case Role::OBias: return &L.o_bias;
      case Role::QNorm: return &L.q_norm;
      case Role::KNorm: return &L.k_norm;
      case Role::Router: return &L.router;
      case Role::RouterNoise: return &L.router_noise;
      case Role::ScoreCorrectionBias: return &L.selection_bias;
      case Role::ExpertGate: *off = s.expert * per_expert; return &L.experts.gate;
      case Role::ExpertUp: *off = s.expert * per_expert; return &L.experts.up;
      case Role::ExpertDown: *off = s.expert * per_expert; return &L.experts.down;
      case Role::ExpertsDownStacked: return &L.experts.down;  // [E,H,F], the stacked layout itself
      case Role::ExpertsGateUpStacked: fail(s.name, "is split over the gate and up experts: use pieces_for");
      case Role::SharedGate: return &L.shared_gate;
      case Role::SharedUp: return &L.shared_up;
      case Role::SharedDown: return &L.shared_down;
      case Role::SharedExpertGate: return &L.shared_expert_gate;
      case Role::DenseGate: return &L.dense_gate;
      case Role::DenseUp: return &L.dense_up;
      case Role::DenseDown: return &L.dense_down;
      default: break;
    }
  }
  fail(s.name, "tensor role not supported by the runnable model");
}

std::vector<TensorPiece> pieces_for(ParamSet& p, const TensorSpec& s) {
  if (s.role != Role::ExpertsGateUpStacked) {
    int64_t off = 0;
    Tensor* t = slot_for(p, s, &off);
    return {{t, off, 0, s.numel()}};
  }
  LayerWeights& L = p.layers[size_t(s.layer)];
  const int64_t E = s.shape[0], F = s.shape[1] / 2, H = s.shape[2], FH = F * H;  // [E,2F,H]
  std::vector<TensorPiece> out;
  for (int64_t e = 0; e < E; ++e) {
    out.push_back({&L.experts.gate, e * FH, 2 * e * FH, FH});       // rows [0, F): gate
    out.push_back({&L.experts.up, e * FH, 2 * e * FH + FH, FH});  // rows [F, 2F): up
  }
  return out;
}

std::vector<ParamRef> trainable_params(const ModelConfig& c, ParamSet& p) {
  std::vector<ParamRef> out;
  for (const TensorSpec& s : tensor_specs(c)) {
    if (s.buffer) continue;
    if (s.role == Role::ExpertsGateUpStacked) {  // two tensors of the ParamSet, named by their half
      LayerWeights& L = p.layers[size_t(s.layer)];
      out.push_back({s.name + ":gate", &L.experts.gate, true, false});
      out.push_back({s.name + ":up", &L.experts.up, true, false});
      continue;
    }
    int64_t off = 0;
    Tensor* t = slot_for(p, s, &off);
    if (off != 0) continue;  // experts 1..E-1 share the stacked tensor of expert 0
    out.push_back({s.name, t, s.shape.size() >= 2, s.component == Component::Router});
  }
  return out;
}

Model::Model(const ModelConfig& config, std::shared_ptr<Backend> backend)
    : config_(config), backend_(std::move(backend)) {
  if (!config_.runnable())
    fail(config_.architecture, "the lab counts this architecture's parameters but cannot run it");
  validate_config(config_, config_.architecture);
  // Refuse before allocating weights that cannot fit in memory (a config asking 500 GiB).
  owned_bytes_ = checked_mul(count_params(config_).total, backend_->real_bytes(), config_.architecture);
  check_memory_plan(memory_plan(1, 1), config_.architecture, "the model", backend_->device_memory_bytes());
  w_ = alloc_params(config_, *backend_);
}

ParamSet Model::zeros_like() const { return alloc_params(config_, *backend_); }

namespace {

// Reports load progress every kProgressBytes of tensor data and between tensors; throws
// LoadCancelled when the callback says stop (the caller's objects then release what was mapped).
constexpr int64_t kProgressBytes = int64_t(8) << 20;
struct LoadTicker {
  const LoadCallback& callback;
  LoadProgress at;
  void operator()() const {
    if (callback && !callback(at)) throw LoadCancelled();
  }
  void stage(const std::string& name) {
    at.stage = name;
    (*this)();
  }
  void advance(int64_t bytes) {
    at.done += bytes;
    (*this)();
  }
};

// NaN/Inf in a bf16/f16 tensor, without widening it (exponent bits all ones), in steps of
// kProgressBytes with progress (and a chance to cancel) after each.
void check_finite_stored(const TensorView& t, LoadTicker& tick) {
  const uint16_t mask = t.dtype == DType::BF16 ? 0x7F80 : 0x7C00;
  const uint16_t frac = t.dtype == DType::BF16 ? 0x007F : 0x03FF;
  const int64_t n = t.numel(), step = kProgressBytes / 2;
  const uint8_t* p = t.data;
  for (int64_t i0 = 0; i0 < n; i0 += step) {
    const int64_t i1 = std::min(n, i0 + step);
    // A parallel pass first (at real size this reads gigabytes: it is part of the time to the first
    // token), then the first bad element's index when there is one.
    int bad = 0;
#pragma omp parallel for reduction(| : bad) schedule(static) if (i1 - i0 > (1 << 20))
    for (int64_t i = i0; i < i1; ++i) {
      uint16_t v;
      std::memcpy(&v, p + 2 * i, 2);
      bad |= int((v & mask) == mask);
    }
    for (int64_t i = i0; bad && i < i1; ++i) {
      uint16_t v;
      std::memcpy(&v, p + 2 * i, 2);
      if ((v & mask) == mask)
        throw Error((t.file ? *t.file : std::string("checkpoint")) + ": tensor '" + t.name + "': holds " +
                    ((v & frac) ? "NaN" : "Inf") + " at element " + std::to_string(i));
    }
    tick.advance(2 * (i1 - i0));
  }
}

// tensor_to_float in steps of about kProgressBytes, with progress after each. A step is a view of
// a run of elements; an error in it names the tensor and the element's index in the whole tensor.
void widen_tensor(const TensorView& t, float* dst, LoadTicker& tick) {
  const int64_t n = t.numel(), esize = dtype_size(t.dtype), step = std::max<int64_t>(1, kProgressBytes / esize);
  if (n <= step) {
    tensor_to_float(t, dst);
    tick.advance(t.nbytes);
    return;
  }
  for (int64_t i0 = 0; i0 < n; i0 += step) {
    TensorView part = t;
    const int64_t count = std::min(step, n - i0);
    part.shape = {count};
    part.data = t.data + i0 * esize;
    part.nbytes = count * esize;
    try {
      tensor_to_float(part, dst + i0);
    } catch (const Error& e) {  // "... at element j" of the run: j + i0 in the tensor
      const std::string msg = e.what();
      const size_t at = msg.rfind(" at element ");
      if (at == std::string::npos) throw;
      throw Error(msg.substr(0, at) + " at element " + std::to_string(i0 + std::stoll(msg.substr(at + 12))));
    }
    tick.advance(part.nbytes);
  }
}

Elem stored_elem(const TensorView& t) { return t.dtype == DType::BF16 ? Elem::BF16 : Elem::F16; }

// A view of a stored tensor's elements from `offset` on, as `shape`.
Tensor stored_view(const TensorView& t, std::vector<int64_t> shape, const std::shared_ptr<Checkpoint>& ckpt,
                   int64_t offset = 0) {
  Tensor v;
  v.shape = std::move(shape);
  v.type = stored_elem(t);
  v.ptr = const_cast<uint8_t*>(t.data + 2 * offset);
  v.storage = std::shared_ptr<void>(ckpt, v.ptr);  // keeps the files mapped while the view lives
  return v;
}

}  // namespace

Model::Model(const ModelConfig& config, std::shared_ptr<Backend> backend, NoAlloc)
    : config_(config), backend_(std::move(backend)) {
  if (!config_.runnable())
    fail(config_.architecture, "the lab counts this architecture's parameters but cannot run it");
  validate_config(config_, config_.architecture);
  w_.layers.resize(size_t(config_.num_layers));
  for (int64_t l = 0; l < config_.num_layers; ++l) w_.layers[size_t(l)].moe = config_.is_moe_layer(l);
}

Model Model::load(const std::string& dir, std::shared_ptr<Backend> backend, bool widen, const LoadCallback& progress) {
  LoadTicker tick{progress, {}};
  tick.stage("reading config.json");
  const ModelConfig config = load_config(dir);
  const std::string cfg_file = config_path_of(dir);
  if (!config.runnable())
    fail(cfg_file, std::string(config.architecture) + " is supported for parameter counts only, not for running");
  // Before anything is opened: even with the matrices at 2 bytes an element (as stored), or all
  // fp32, must it fit with a one-token context? Stored weights stay in the memory map (the CPU) or
  // are copied as they are into the backend's own memory (a GPU, whose memory is then the budget).
  const bool map = !widen && backend->maps_stored_weights();
  const bool copy_stored = !widen && !map && backend->keeps_stored_weights();
  const bool stored = map || copy_stored;
  const int64_t device_bytes = backend->device_memory_bytes();
  check_memory_plan(moelab::memory_plan(config, stored ? DType::BF16 : DType::F32, 1, 1, stored, backend->real_bytes()),
                    cfg_file, "the model", device_bytes);
  tick.stage("checking the safetensors headers");
  const std::string model_dir = fs::is_directory(dir) ? dir : fs::path(dir).parent_path().string();
  auto ckpt = std::make_shared<Checkpoint>(model_dir);
  const auto specs = tensor_specs(config);
  // Every tensor present with the shape the config implies, before anything is allocated.
  std::vector<const TensorView*> views;
  views.reserve(specs.size());
  for (const TensorSpec& s : specs) {
    const TensorView* t = ckpt->find(s.name);
    if (!t) fail(model_dir, "checkpoint has no tensor '" + s.name + "' that " + config.architecture + " needs");
    if (t->shape != s.shape)
      fail(*t->file, "tensor '" + s.name + "' has shape " + shape_str(t->shape) + " but config.json implies " +
                         shape_str(s.shape));
    if (!dtype_is_float(t->dtype))
      fail(*t->file, "tensor '" + s.name + "' is " + dtype_name(t->dtype) +
                         ", which the lab cannot compute with (F32, F16 and BF16 are supported)");
    views.push_back(t);
  }
  // Which tensors stay as stored (read from the map: its pages must fit too; or copied to the
  // device), the rest as fp32: the same figures `moelab-cli info` prints.
  const StoredWeights plan = plan_stored_weights(config, specs, views, stored, backend->real_bytes(), cfg_file);
  const std::vector<bool>& keep = plan.keep;
  check_memory_plan(moelab::memory_plan(config, plan, 1, 1, backend->real_bytes()), cfg_file, "the model", device_bytes);

  Model m(config, std::move(backend), NoAlloc{});
  m.owned_bytes_ = plan.owned;
  m.stored_by_dtype_ = plan.mapped_by_dtype;
  Backend& b = *m.backend_;
  std::vector<float> staging;
  const int64_t H = config.hidden_size, E = config.num_experts, F = config.expert_ffn_size;
  for (const TensorView* t : views) tick.at.total += t->nbytes;
  tick.stage(map ? "checking the weights for NaN/Inf" : "converting the weights to fp32");
  for (size_t i = 0; i < specs.size(); ++i) {
    const TensorSpec& s = specs[i];
    const TensorView& t = *views[i];
    if (keep[i]) {
      check_finite_stored(t, tick);
      m.stored_bytes_ += t.nbytes;
      if (s.role == Role::ExpertsGateUpStacked || s.role == Role::ExpertsDownStacked) {
        // GraniteMoE: input_linear [E,2F,H] holds expert e's gate rows then its up rows,
        // output_linear [E,H,F] its down projection: each a contiguous run, viewed in place.
        ExpertWeights& X = m.w_.layers[size_t(s.layer)].experts;
        const bool in = s.role == Role::ExpertsGateUpStacked;
        if (in) {
          X.gate_e.resize(size_t(E));
          X.up_e.resize(size_t(E));
        } else {
          X.down_e.resize(size_t(E));
        }
        if (copy_stored) {  // one stack per matrix in the backend's memory, gate and up rows apart
          const Elem et = stored_elem(t);
          if (in) {
            X.gate = b.alloc_stored({E, F, H}, et);
            X.up = b.alloc_stored({E, F, H}, et);
          } else {
            X.down = b.alloc_stored({E, H, F}, et);
          }
          for (int64_t e = 0; e < E; ++e) {
            if (in) {
              b.upload_stored(X.gate, t.data + 2 * (e * 2 * F * H), e * F * H, F * H);
              b.upload_stored(X.up, t.data + 2 * (e * 2 * F * H + F * H), e * F * H, F * H);
              X.gate_e[size_t(e)] = slice(b, X.gate, e * F * H, {F, H});
              X.up_e[size_t(e)] = slice(b, X.up, e * F * H, {F, H});
            } else {
              b.upload_stored(X.down, t.data + 2 * (e * H * F), e * H * F, H * F);
              X.down_e[size_t(e)] = slice(b, X.down, e * H * F, {H, F});
            }
          }
          continue;
        }
        for (int64_t e = 0; e < E; ++e) {
          if (in) {
            X.gate_e[size_t(e)] = stored_view(t, {F, H}, ckpt, e * 2 * F * H);
            X.up_e[size_t(e)] = stored_view(t, {F, H}, ckpt, e * 2 * F * H + F * H);
          } else {
            X.down_e[size_t(e)] = stored_view(t, {H, F}, ckpt, e * H * F);
          }
        }
        if (in) {
          X.gate = X.gate_e[0];
          X.gate.shape = {E, F, H};
          X.up = X.up_e[0];
          X.up.shape = {E, F, H};
        } else {
          X.down = X.down_e[0];
          X.down.shape = {E, H, F};
        }
      } else if (s.expert >= 0) {
        ExpertWeights& X = m.w_.layers[size_t(s.layer)].experts;
        if (X.gate_e.empty()) {
          X.gate_e.resize(size_t(E));
          X.up_e.resize(size_t(E));
          X.down_e.resize(size_t(E));
        }
        std::vector<Tensor>& slot = s.role == Role::ExpertGate ? X.gate_e : s.role == Role::ExpertUp ? X.up_e : X.down_e;
        Tensor& stack = s.role == Role::ExpertGate ? X.gate : s.role == Role::ExpertUp ? X.up : X.down;
        std::vector<int64_t> stacked = s.role == Role::ExpertDown ? std::vector<int64_t>{E, H, F} : std::vector<int64_t>{E, F, H};
        if (copy_stored) {  // one stack per matrix in the backend's memory; each expert a view of it
          if (stack.empty()) stack = b.alloc_stored(stacked, stored_elem(t));
          b.upload_stored(stack, t.data, s.expert * t.numel(), t.numel());
          slot[size_t(s.expert)] = slice(b, stack, s.expert * t.numel(), s.shape);
          continue;
        }
        slot[size_t(s.expert)] = stored_view(t, s.shape, ckpt);
        if (stack.empty()) {  // the stacked shape and type; the data are the per-expert views
          stack = slot[size_t(s.expert)];
          stack.shape = std::move(stacked);
        }
      } else {
        int64_t off = 0;
        Tensor& dst = *slot_for(m.w_, s, &off);
        if (copy_stored) {
          dst = b.alloc_stored(s.shape, stored_elem(t));
          b.upload_stored(dst, t.data, 0, t.numel());
        } else {
          dst = stored_view(t, s.shape, ckpt);
        }
      }
      continue;
    }
    const std::vector<TensorPiece> pieces = pieces_for(m.w_, s);
    for (const TensorPiece& p : pieces) {
      if (!p.dst->empty()) continue;
      if (s.layer >= 0) {  // stacked experts: allocated whole, filled piece by piece
        const ExpertWeights& X = m.w_.layers[size_t(s.layer)].experts;
        if (p.dst == &X.gate || p.dst == &X.up) {
          *p.dst = b.alloc({E, F, H});
          continue;
        }
        if (p.dst == &X.down) {
          *p.dst = b.alloc({E, H, F});
          continue;
        }
      }
      *p.dst = b.alloc(s.shape);
    }
    float* host = pieces.size() == 1 ? b.host_f32(*pieces[0].dst) : nullptr;
    if (host) {
      widen_tensor(t, host + pieces[0].dst_offset, tick);  // straight from the memory map into the weights
    } else {
      staging.resize(size_t(t.numel()));
      widen_tensor(t, staging.data(), tick);
      for (const TensorPiece& p : pieces) b.upload(*p.dst, staging.data() + p.src_offset, p.dst_offset, p.count);
    }
  }
  if (config.tie_word_embeddings) m.w_.lm_head = m.w_.embed;
  tick.stage("loaded");
  return m;
}

Model Model::random(const ModelConfig& config, uint64_t seed, std::shared_ptr<Backend> backend, float init_std) {
  Model m(config, std::move(backend));
  Rng rng(seed);
  std::vector<float> host;
  for (const TensorSpec& s : tensor_specs(config)) {
    host.resize(size_t(s.numel()));
    const bool is_norm = s.component == Component::Norms;
    const bool zero = s.role == Role::QBias || s.role == Role::KBias || s.role == Role::VBias || s.role == Role::OBias ||
                      s.role == Role::ScoreCorrectionBias || s.role == Role::RouterNoise;
    for (float& v : host) v = is_norm ? 1.0f : zero ? 0.0f : float(rng.normal()) * init_std;
    for (const TensorPiece& p : pieces_for(m.w_, s)) m.backend_->upload(*p.dst, host.data() + p.src_offset, p.dst_offset, p.count);
  }
  return m;
}

std::vector<std::pair<std::string, std::vector<float>>> Model::export_weights() const {
  std::vector<std::pair<std::string, std::vector<float>>> out;
  ParamSet& w = const_cast<ParamSet&>(w_);
  for (const TensorSpec& s : tensor_specs(config_)) {
    std::vector<float> host(size_t(s.numel()));
    const bool stacked = s.role == Role::ExpertsGateUpStacked || s.role == Role::ExpertsDownStacked;
    if (s.layer >= 0 && (s.expert >= 0 || stacked) && w.layers[size_t(s.layer)].experts.per_expert()) {
      // kept as stored: one view each (GraniteMoE's stacked tensors: E views, gate and up interleaved)
      const ExpertWeights& X = w.layers[size_t(s.layer)].experts;
      const int64_t F = config_.expert_ffn_size, H = config_.hidden_size;
      if (s.role == Role::ExpertsGateUpStacked) {
        for (size_t e = 0; e < X.gate_e.size(); ++e) {
          backend_->download(X.gate_e[e], host.data() + int64_t(e) * 2 * F * H, 0, F * H);
          backend_->download(X.up_e[e], host.data() + int64_t(e) * 2 * F * H + F * H, 0, F * H);
        }
      } else if (s.role == Role::ExpertsDownStacked) {
        for (size_t e = 0; e < X.down_e.size(); ++e) backend_->download(X.down_e[e], host.data() + int64_t(e) * H * F, 0, H * F);
      } else {
        const std::vector<Tensor>& v = s.role == Role::ExpertGate ? X.gate_e : s.role == Role::ExpertUp ? X.up_e : X.down_e;
        backend_->download(v[size_t(s.expert)], host.data(), 0, s.numel());
      }
    } else {
      for (const TensorPiece& p : pieces_for(w, s)) backend_->download(*p.dst, host.data() + p.src_offset, p.dst_offset, p.count);
    }
    out.emplace_back(s.name, std::move(host));
  }
  return out;
}

void Model::save(const std::string& dir) const { save(dir, DType::F32); }

void Model::save(const std::string& dir, DType dtype, int64_t max_shard_bytes) const {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) fail(dir, "cannot create directory: " + ec.message());
  const auto weights = export_weights();
  const auto specs = tensor_specs(config_);
  std::vector<TensorToWrite> tw;
  for (size_t i = 0; i < specs.size(); ++i) tw.push_back({specs[i].name, specs[i].shape, weights[i].second.data(), dtype});
  ModelConfig c = config_;
  c.dtype = dtype == DType::F32 ? "float32" : dtype == DType::F16 ? "float16" : "bfloat16";
  write_checkpoint_weights(dir, tw, max_shard_bytes);
  write_text_atomic((fs::path(dir) / "config.json").string(), config_to_json(c).dump(2) + "\n");
}

MemoryPlan Model::memory_plan(int64_t context, int64_t tokens) const {
  StoredWeights w;
  w.mapped = stored_bytes_;
  w.mapped_by_dtype = stored_by_dtype_;
  w.owned = owned_bytes_;
  return moelab::memory_plan(config_, w, context, tokens > 0 ? tokens : default_plan_tokens(context), backend_->real_bytes());
}

KvCache Model::new_cache(int64_t capacity, int64_t forward_tokens) const {
  if (capacity < 1 || capacity > config_.max_positions)
    fail(config_.architecture, "a context of " + std::to_string(capacity) + " tokens is outside [1, " +
                                   std::to_string(config_.max_positions) + "] (max_position_embeddings)");
  if (config_.sliding_window > 0 && capacity > config_.sliding_window)
    fail(config_.architecture, "a context of " + std::to_string(capacity) + " tokens is longer than sliding_window = " +
                                   std::to_string(config_.sliding_window) +
                                   ": the lab has no sliding-window mask, so it runs contexts up to the window only");
  KvCache cache;
  cache.capacity = capacity;
  const int64_t kv = config_.num_kv_heads * config_.head_dim;
  // Refuse before allocating a cache that, with the weights and a forward, would not fit in memory.
  check_memory_plan(memory_plan(capacity, forward_tokens), config_.architecture,
                    "a context of " + std::to_string(capacity) + " tokens", backend_->device_memory_bytes());
  for (int64_t l = 0; l < config_.num_layers; ++l) {
    cache.k.push_back(backend_->alloc({capacity, kv}));
    cache.v.push_back(backend_->alloc({capacity, kv}));
  }
  return cache;
}

std::vector<float> Model::forward_full(const std::vector<int32_t>& tokens, RoutingObserver* observer,
                                       const RoutingOverrides* overrides) {
  const int64_t T = std::max<int64_t>(1, int64_t(tokens.size()));
  KvCache cache = new_cache(T, T);
  return forward(tokens, cache, observer, overrides);
}

// One token's routing into the device trace row of MoE layer moe_index (recorded decode).
static void write_device_trace(Backend& b, const Tensor& h, const Routing& r, int64_t moe_index, DeviceTrace& trace) {
  const int64_t E = r.probs.cols(), K = r.ids.cols();
  MOELAB_ASSERT(h.rows() == 1 && r.dropped.empty(), "a device trace holds one token without capacity");
  const int64_t W = DeviceTrace::row_width(E, K), row = moe_index * W;
  MOELAB_ASSERT(trace.values.numel() >= row + W && trace.ids.numel() >= (moe_index + 1) * K, "device trace size");
  Tensor norm = slice(b, trace.values, row, {1}), logits = slice(b, trace.values, row + 1, {1, E}),
         probs = slice(b, trace.values, row + 1 + E, {1, E}), weights = slice(b, trace.values, row + 1 + 2 * E, {1, K}),
         ids = slice(b, trace.ids, moe_index * K, {1, K});
  b.row_norms(h, norm);
  b.copy(r.logits, logits);
  b.copy(r.probs, probs);
  b.copy(r.weights, weights);
  b.copy(r.ids, ids);
}

// A SwiGLU MLP (dense layer or shared expert): y [T,H] = down(silu(gate · h) ⊙ up · h).
static Tensor swiglu_mlp(Backend& b, const Tensor& h, const Tensor& gate, const Tensor& up, const Tensor& down) {
  const int64_t T = h.rows(), F = gate.rows();
  Tensor g = b.alloc_uninit({T, F}), u = b.alloc_uninit({T, F});
  b.linear(h, gate, nullptr, g);
  b.linear(h, up, nullptr, u);
  b.swiglu(g, u, g);
  Tensor y = b.alloc_uninit({T, down.rows()});
  b.linear(g, down, nullptr, y);
  return y;
}

void Model::run_ffn(int64_t l, const Tensor& h, Tensor& x, int64_t pos0, RoutingObserver* observer,
                    const RoutingOverrides* ov, DeviceTrace* trace, int64_t moe_index) {
  Backend& b = *backend_;
  const LayerWeights& L = w_.layers[size_t(l)];
  if (!L.moe) {  // a dense layer: x += mlp(h)
    b.add(x, swiglu_mlp(b, h, L.dense_gate, L.dense_up, L.dense_down));
    return;
  }
  const RouterSpec spec = router_spec(b, config_, L, ov);      // K, scores, bias, capacity
  const Routing r = route(b, h, L, spec);                       // probs [T,E], ids [T,K], weights [T,K]
  if (trace) write_device_trace(b, h, r, moe_index, *trace);    // recorded decode: copies on the device
  if (observer) observer->on_routing(routing_event(b, l, pos0, h, r));
  b.moe_experts(h, r.ids, r.weights, L.experts, x);             // x += Σ_k w · expert(h)
  if (L.shared_gate.empty()) return;
  const Tensor s = swiglu_mlp(b, h, L.shared_gate, L.shared_up, L.shared_down);  // shared expert
  if (L.shared_expert_gate.empty()) {
    b.add(x, s);
    return;
  }
  Tensor g = b.alloc({h.rows(), 1});
  b.linear(h, L.shared_expert_gate, nullptr, g);
  b.add_sigmoid_gated(x, s, g);  // x += sigmoid(g) · s (Qwen2-MoE)
}

void Model::check_input(const int32_t* tokens, int64_t T, const KvCache& cache) const {
  const ModelConfig& c = config_;
  for (int64_t i = 0; i < T; ++i)
    if (tokens[i] < 0 || tokens[i] >= c.vocab_size)
      fail(c.architecture, "token id " + std::to_string(tokens[i]) + " is out of range for a vocabulary of " +
                               std::to_string(c.vocab_size));
  if (cache.length + T > cache.capacity)
    fail(c.architecture, "sequence of " + std::to_string(cache.length + T) + " tokens exceeds the context of " +
                             std::to_string(cache.capacity));
}

std::vector<float> Model::forward(const std::vector<int32_t>& tokens, KvCache& cache, RoutingObserver* observer,
                                  const RoutingOverrides* ov) {
  const ModelConfig& c = config_;
  Backend& b = *backend_;
  const int64_t T = int64_t(tokens.size()), V = c.vocab_size, pos0 = cache.length;
  if (T == 0) return {};
  check_input(tokens.data(), T, cache);
  Tensor ids = b.alloc({T}, Elem::Int32);
  b.upload(ids, tokens.data());
  Tensor logits = forward_tensors(ids, pos0, cache, observer, ov, nullptr);
  cache.length = pos0 + T;
  std::vector<float> out(size_t(T * V));
  b.download(logits, out.data());
  return out;
}

Tensor Model::forward_tensors(const Tensor& ids, int64_t pos0, KvCache& cache, RoutingObserver* observer,
                              const RoutingOverrides* ov, DeviceTrace* trace) {
  const ModelConfig& c = config_;
  Backend& b = *backend_;
  const int64_t T = ids.numel(), H = c.hidden_size, NH = c.num_heads, NKV = c.num_kv_heads, D = c.head_dim,
                V = c.vocab_size;
  MOELAB_ASSERT(ids.type == Elem::Int32 && T > 0 && pos0 + T <= cache.capacity, "forward_tensors inputs");
  Tensor x = b.alloc_uninit({T, H});  // [T,H] residual stream
  b.embedding(w_.embed, ids, x);
  if (c.embedding_multiplier != 1.0) b.scale(x, float(c.embedding_multiplier));  // GraniteMoE
  // GraniteMoE's attention_multiplier is the softmax scale of q·k in place of 1/sqrt(D): attention
  // divides by sqrt(D), so q is scaled by multiplier · sqrt(D) first (q is not cached).
  const float q_scale = c.attention_multiplier > 0.0 ? float(c.attention_multiplier * std::sqrt(double(D))) : 1.0f;
  const float residual = float(c.residual_multiplier);  // x += residual · block(x) (GraniteMoE)
  // Each is overwritten whole by the op that first writes it in every layer.
  Tensor h = b.alloc_uninit({T, H}), q = b.alloc_uninit({T, NH * D}), k = b.alloc_uninit({T, NKV * D}),
         v = b.alloc_uninit({T, NKV * D}), att = b.alloc_uninit({T, NH * D});
  const float eps = float(c.rms_norm_eps), clip = float(c.clip_qkv);
  int64_t moe_index = 0;
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const LayerWeights& L = w_.layers[size_t(l)];
    b.rmsnorm(x, L.input_norm, eps, h);
    b.linear(h, L.q, L.q_bias.empty() ? nullptr : &L.q_bias, q);
    b.linear(h, L.k, L.k_bias.empty() ? nullptr : &L.k_bias, k);
    b.linear(h, L.v, L.v_bias.empty() ? nullptr : &L.v_bias, v);
    if (c.qk_norm != QkNorm::None) {  // per head (C = D) or over the whole projection
      b.rmsnorm(q, L.q_norm, eps, q);
      b.rmsnorm(k, L.k_norm, eps, k);
    }
    if (clip > 0.0f) {  // OLMoE clip_qkv, after the q/k norms as transformers does
      b.clamp(q, -clip, clip);
      b.clamp(k, -clip, clip);
      b.clamp(v, -clip, clip);
    }
    b.rope(q, NH, D, pos0, T, c.rope());
    b.rope(k, NKV, D, pos0, T, c.rope());
    if (q_scale != 1.0f) b.scale(q, q_scale);
    b.copy_rows(k, cache.k[size_t(l)], pos0);
    b.copy_rows(v, cache.v[size_t(l)], pos0);
    b.attention(q, cache.k[size_t(l)], cache.v[size_t(l)], 1, pos0, NH, NKV, D, att);
    const Tensor* o_bias = L.o_bias.empty() ? nullptr : &L.o_bias;
    if (residual == 1.0f) {
      b.linear(att, L.o, o_bias, x, /*accumulate=*/true);  // x += o(att)
    } else {
      Tensor y = b.alloc_uninit({T, H});
      b.linear(att, L.o, o_bias, y);
      b.scale(y, residual);
      b.add(x, y);  // x += residual · o(att)
    }
    b.rmsnorm(x, L.post_attn_norm, eps, h);
    if (residual == 1.0f) {
      run_ffn(l, h, x, pos0, observer, ov, trace, moe_index);
    } else {
      Tensor y = b.alloc({T, H});  // zero: run_ffn adds to it
      run_ffn(l, h, y, pos0, observer, ov, trace, moe_index);
      b.scale(y, residual);
      b.add(x, y);  // x += residual · ffn(h)
    }
    if (L.moe) ++moe_index;
  }
  b.rmsnorm(x, w_.final_norm, eps, h);
  Tensor logits = b.alloc_uninit({T, V});
  b.linear(h, w_.lm_head, nullptr, logits);
  if (c.logits_scaling != 1.0) b.scale(logits, float(1.0 / c.logits_scaling));  // GraniteMoE: logits / s
  return logits;
}

}  // namespace moelab
