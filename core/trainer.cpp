#include "trainer.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <thread>
#include <type_traits>

#include <nlohmann/json.hpp>

#include "files.hpp"
#include "error.hpp"
#include "params.hpp"
#include "safetensors.hpp"

namespace moelab {
namespace fs = std::filesystem;
using nlohmann::json;

// ---- config (de)serialisation ----

// X(JSON key, TrainConfig member)
#define MOELAB_TRAIN_FIELDS(X)                                                                   \
  X(steps, steps) X(batch, batch) X(seq_len, seq_len) X(grad_accum, grad_accum) X(lr, lr)                  \
  X(min_lr_ratio, min_lr_ratio) X(warmup, warmup) X(weight_decay, weight_decay) X(beta1, beta1)            \
  X(beta2, beta2) X(adam_eps, adam_eps) X(clip, clip) X(router_lr_scale, router_lr_scale)                  \
  X(aux_alpha, aux_alpha) X(z_coef, z_coef) X(bias_gamma, bias_gamma) X(capacity_factor, capacity.factor)  \
  X(reroute, capacity.reroute) X(seed, seed) X(eval_every, eval_every) X(eval_batches, eval_batches)       \
  X(probe_every, probe_every) X(checkpoint_every, checkpoint_every)

json train_config_to_json(const TrainConfig& c) {
  json j;
#define X(name, member) j[#name] = c.member;
  MOELAB_TRAIN_FIELDS(X)
#undef X
  return j;
}

TrainConfig train_config_from_json(const json& j, TrainConfig c, const std::string& src) {
  if (!j.is_object()) fail(src, "training settings must be a JSON object");
  for (auto it = j.begin(); it != j.end(); ++it) {
    bool known = false;
#define X(name, member) known = known || it.key() == #name;
    MOELAB_TRAIN_FIELDS(X)
#undef X
    if (!known) fail(src, "unknown training setting '" + it.key() + "'");
  }
  // Counts and the seed must be whole numbers (the JSON library truncates 10.5 and wraps -1).
  auto whole = [&](const char* name, const json& v, bool is_unsigned) {
    if (!v.is_number_integer() || (is_unsigned && !v.is_number_unsigned()))
      fail(src, std::string(name) + " = " + v.dump() + " is not a " + (is_unsigned ? "non-negative " : "") +
                    "whole number");
  };
  try {
#define X(name, member)                                                                                        \
  if (j.contains(#name)) {                                                                                     \
    using T = decltype(c.member);                                                                              \
    if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) whole(#name, j[#name], std::is_unsigned_v<T>); \
    c.member = j[#name].get<T>();                                                                              \
  }
    MOELAB_TRAIN_FIELDS(X)
#undef X
  } catch (const json::exception& e) {
    fail(src, std::string("a training setting has the wrong type: ") + e.what());
  }
  auto range = [&](double v, double lo, double hi, const char* what) {
    if (!(v >= lo && v <= hi)) fail(src, std::string(what) + " = " + std::to_string(v) + " is outside [" +
                                             std::to_string(lo) + ", " + std::to_string(hi) + "]");
  };
  range(double(c.steps), 1, 1e7, "steps");
  range(double(c.batch), 1, 4096, "batch");
  range(double(c.seq_len), 2, 8192, "seq_len");
  range(double(c.grad_accum), 1, 1024, "grad_accum");
  range(c.lr, 0, 10, "lr");
  range(c.min_lr_ratio, 0, 1, "min_lr_ratio");
  range(double(c.warmup), 0, 1e7, "warmup");
  range(c.weight_decay, 0, 10, "weight_decay");
  range(c.beta1, 0, 0.9999999, "beta1");
  range(c.beta2, 0, 0.9999999, "beta2");
  range(c.adam_eps, 0, 1, "adam_eps");
  range(c.clip, 0, 1e6, "clip");
  range(c.router_lr_scale, 0, 1000, "router_lr_scale");
  range(c.aux_alpha, 0, 100, "aux_alpha");
  range(c.z_coef, 0, 100, "z_coef");
  range(c.bias_gamma, 0, 10, "bias_gamma");
  range(c.capacity.factor, 0, 1000, "capacity_factor");
  range(double(c.eval_batches), 1, 1000, "eval_batches");
  range(double(c.eval_every), 0, 1e7, "eval_every");
  range(double(c.probe_every), 0, 1e7, "probe_every");
  range(double(c.checkpoint_every), 0, 1e7, "checkpoint_every");
  return c;
}

// ---- optimizer ----

double adamw_update(Model& model, ParamSet& grads, ParamSet& m, ParamSet& v, int64_t step, float lr,
                    const TrainConfig& cfg) {
  Backend& b = model.backend();
  const ModelConfig& c = model.config();
  auto P = trainable_params(c, model.params()), G = trainable_params(c, grads), M = trainable_params(c, m),
       V = trainable_params(c, v);
  std::vector<const Tensor*> grads_all;
  for (const ParamRef& g : G) grads_all.push_back(g.tensor);
  const double norm = std::sqrt(b.sum_squares_all(grads_all));
  if (!std::isfinite(norm)) return norm;
  if (cfg.clip > 0 && norm > cfg.clip) {  // torch.nn.utils.clip_grad_norm_
    const float s = float(double(cfg.clip) / (norm + 1e-6));
    for (ParamRef& g : G) b.scale(*g.tensor, s);
  }
  for (size_t i = 0; i < P.size(); ++i) {
    const float lr_i = P[i].router ? lr * cfg.router_lr_scale : lr;
    b.adamw(*P[i].tensor, *G[i].tensor, *M[i].tensor, *V[i].tensor, lr_i, cfg.beta1, cfg.beta2, cfg.adam_eps,
            P[i].decay ? cfg.weight_decay : 0.0f, step);
  }
  return norm;
}

// ---- trainer ----

double training_memory_bytes(const ModelConfig& c, const TrainConfig& t, int threads) {
  const double H = double(c.hidden_size), E = double(c.num_experts), K = double(c.top_k),
               qkv = double((2 * c.num_heads + 2 * c.num_kv_heads) * c.head_dim),
               mlp = 3.0 * double(std::max({c.dense_ffn_size, c.shared_ffn_size, c.expert_ffn_size * c.top_k})),
               kept = c.num_experts > 0 ? K * double(2 * c.expert_ffn_size + c.hidden_size) : 0.0;
  // Floats kept per token: per layer the residual copies and norms [4H], q, k, v, attention,
  // router logits, probabilities and noise [6E], top-k ids, weights and drops [3K], SwiGLU
  // intermediates, the routed experts' gate, up and output per slot kept for the backward pass
  // [K(2F+H)]; then the logits and their gradient [2V].
  const double per_token =
      double(c.num_layers) * (4 * H + qkv + 6 * E + 3 * K + mlp + kept) + 2.0 * double(c.vocab_size);
  const double tokens = double(t.batch) * double(t.seq_len);
  // Attention backward holds P, dP, dS and one temporary, each [T,T], per head in flight.
  const double T = double(t.seq_len), attention_scratch = 4.0 * T * T * double(std::max(1, threads));
  return 4.0 * double(weight_bytes_fp32(c)) + 4.0 * (per_token * tokens + attention_scratch) +
         8.0 * tokens * double(t.eval_batches);  // held-out inputs and targets (int32)
}

namespace {

// Validate before allocating: sequences must fit the model's context, and the run must fit in
// memory (batch 4096 x seq_len 8192 passes the range checks).
const TrainConfig& check_training_fits(const ModelConfig& c, const TrainConfig& t) {
  check_trainable(c);
  if (c.sliding_window > 0 && t.seq_len > c.sliding_window)
    fail("seq_len", "sequences of " + std::to_string(t.seq_len) + " tokens are longer than the model's sliding_window = " +
                        std::to_string(c.sliding_window) + " (the lab has no sliding-window mask)");
  if (t.seq_len > c.max_positions)
    fail("seq_len", "sequences of " + std::to_string(t.seq_len) + " tokens are longer than the model's context of " +
                        std::to_string(c.max_positions) + " (max_position_embeddings)");
  const double need = training_memory_bytes(c, t, int(std::thread::hardware_concurrency()));
  const double have = double(physical_memory_bytes()) * 0.8;
  if (need > have)
    fail("training", "batch " + std::to_string(t.batch) + " x seq_len " + std::to_string(t.seq_len) + " needs about " +
                         human_bytes(need) + " of memory, more than this machine's " + human_bytes(have / 0.8) +
                         " allows (lower the batch or the sequence length)");
  return t;
}

}  // namespace

Trainer::Trainer(Model& model, const Corpus& corpus, const TrainConfig& config)
    : model_(model),
      corpus_(corpus),
      cfg_(check_training_fits(model.config(), config)),
      grads_(model.zeros_like()),
      m_(model.zeros_like()),
      v_(model.zeros_like()),
      data_rng_(config.seed * 2 + 1),
      noise_rng_(config.seed * 2 + 2) {
  if (model.stored_weight_bytes() > 0)
    fail(model.config().architecture, "this model's weights are bf16/f16 as stored in its checkpoint; training "
                                      "needs fp32 weights (Model::load with widen)");
  Rng probe_rng(12345);
  probe_ = corpus_.sample(4, cfg_.seq_len, probe_rng, /*validation=*/true);
}

double Trainer::learning_rate(int64_t step) const {
  if (cfg_.warmup > 0 && step <= cfg_.warmup) return double(cfg_.lr) * double(step) / double(cfg_.warmup);
  const double span = double(std::max<int64_t>(1, cfg_.steps - cfg_.warmup));
  const double progress = std::min(1.0, double(step - cfg_.warmup) / span);
  const double lo = double(cfg_.lr) * double(cfg_.min_lr_ratio);
  return lo + 0.5 * (double(cfg_.lr) - lo) * (1.0 + std::cos(M_PI * progress));  // cosine decay
}

void Trainer::update_bias(const std::vector<StepRouting>& routing) {
  // DeepSeek-V3's bias update (router.hpp, update_selection_bias) on each MoE layer's bias.
  Backend& b = model_.backend();
  for (auto& L : model_.params().layers) {
    if (L.selection_bias.empty()) continue;
    const int64_t l = &L - model_.params().layers.data();
    std::vector<const std::vector<int32_t>*> ids;  // this layer's choices in every micro-batch
    for (const StepRouting& r : routing)
      if (r.layer == l) ids.push_back(&r.ids);
    std::vector<float> bias(static_cast<size_t>(L.selection_bias.numel()));
    b.download(L.selection_bias, bias.data());
    update_selection_bias(bias, ids, cfg_.bias_gamma);
    b.upload(L.selection_bias, bias.data());
  }
}

StepRecord Trainer::step() {
  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  const ModelConfig& c = model_.config();
  Backend& b = model_.backend();
  StepRecord rec;
  rec.step = step_ + 1;
  zero_params(b, c, grads_);
  StepKnobs knobs;
  knobs.aux_alpha = cfg_.aux_alpha;
  knobs.z_coef = cfg_.z_coef;
  knobs.capacity = cfg_.capacity;
  std::vector<int32_t> token_domain;
  const float scale = 1.0f / float(cfg_.grad_accum);
  for (int64_t a = 0; a < cfg_.grad_accum; ++a) {
    const Batch batch = corpus_.sample(cfg_.batch, cfg_.seq_len, data_rng_, false);
    StepResult r = forward_backward(model_, grads_, batch, knobs, noise_rng_, scale, true);
    rec.loss += r.loss * scale;
    rec.lm_loss += r.lm_loss * scale;
    rec.aux_loss += r.aux_loss * scale;
    rec.z_loss += r.z_loss * scale;
    for (auto& s : r.routing) rec.routing.push_back(std::move(s));
    for (int32_t d : batch.domains) token_domain.insert(token_domain.end(), size_t(batch.T), d);
  }
  if (!std::isfinite(rec.loss))
    fail("step " + std::to_string(rec.step), "the loss is " + std::string(std::isnan(rec.loss) ? "NaN" : "infinite") +
                                                 "; training stopped before the update (lower the learning rate)");
  rec.lr = learning_rate(rec.step);
  rec.grad_norm = adamw_update(model_, grads_, m_, v_, rec.step, float(rec.lr), cfg_);
  if (!std::isfinite(rec.grad_norm))
    fail("step " + std::to_string(rec.step), "the gradient norm is not finite; the weights were not updated");
  if (cfg_.bias_gamma > 0) update_bias(rec.routing);
  step_ = rec.step;
  const double train_s = std::chrono::duration<double>(Clock::now() - t0).count();
  rec.tokens_per_s = double(cfg_.batch * cfg_.seq_len * cfg_.grad_accum) / train_s;

  // Metrics per MoE layer, over the step's micro-batches.
  const auto domains = corpus_.domains();
  rec.domain_names = domains;
  for (int64_t l = 0; l < c.num_layers; ++l) {
    std::vector<const StepRouting*> mine;
    for (const auto& r : rec.routing)
      if (r.layer == l) mine.push_back(&r);
    if (mine.empty()) continue;
    rec.layers.push_back(layer_stats_window(mine));
    const LayerWeights& L = model_.params().layers[size_t(l)];
    if (!L.selection_bias.empty()) {
      std::vector<float> bias(static_cast<size_t>(L.selection_bias.numel()));
      b.download(L.selection_bias, bias.data());
      rec.bias.push_back(bias);
    }
    if (!domains.empty()) {
      std::vector<std::vector<double>> total(domains.size(), std::vector<double>(size_t(c.num_experts), 0.0));
      int64_t off = 0;
      for (const StepRouting* r : mine) {
        const std::vector<int32_t> dom(token_domain.begin() + off, token_domain.begin() + off + r->tokens);
        const auto m = domain_matrix(*r, dom, int64_t(domains.size()));
        for (size_t d = 0; d < m.size(); ++d)
          for (size_t e = 0; e < m[d].size(); ++e) total[d][e] += m[d][e];
        off += r->tokens;
      }
      rec.specialisation.push_back(specialisation_score(total));
      rec.domain_matrix.push_back(std::move(total));
    }
  }
  if (cfg_.probe_every > 0 && (rec.step % cfg_.probe_every == 0 || rec.step == 1)) {
    // The fixed probe batch through the current model (no noise, no capacity): which experts it
    // chooses now, to see routing settle (saturation) and to replay.
    rec.probe_ids.assign(rec.layers.size(), {});
    for (int64_t s = 0; s < probe_.B; ++s) {
      RoutingTrace trace;
      model_.forward_full({probe_.inputs.begin() + s * probe_.T, probe_.inputs.begin() + (s + 1) * probe_.T}, &trace);
      for (size_t i = 0; i < trace.layers().size() && i < rec.probe_ids.size(); ++i)
        rec.probe_ids[i].insert(rec.probe_ids[i].end(), trace.layers()[i].ids.begin(), trace.layers()[i].ids.end());
    }
    if (!rec.routing.empty()) {
      rec.drop_by_position.assign(size_t(cfg_.seq_len), 0.0);
      int n = 0;
      for (const auto& r : rec.routing) {
        const auto d = drop_rate_by_position(r, cfg_.seq_len);
        for (size_t p = 0; p < d.size(); ++p) rec.drop_by_position[p] += d[p];
        ++n;
      }
      for (double& v : rec.drop_by_position) v /= n;
    }
  }
  if (cfg_.eval_every > 0 && (rec.step % cfg_.eval_every == 0 || rec.step == cfg_.steps)) {
    Rng unused(0);
    rec.val_loss = evaluate_loss(model_, corpus_.sample(cfg_.batch * cfg_.eval_batches, cfg_.seq_len, unused, true));
  }
  elapsed_ += std::chrono::duration<double>(Clock::now() - t0).count();
  rec.elapsed_s = elapsed_;
  return rec;
}

// ---- checkpoints ----

void Trainer::save_checkpoint(const std::string& dir) const {
  const std::string tmp = dir + ".tmp";
  std::error_code ec;
  fs::remove_all(tmp, ec);
  model_.save(tmp);
  Backend& b = model_.backend();
  const ModelConfig& c = model_.config();
  auto M = trainable_params(c, const_cast<ParamSet&>(m_)), V = trainable_params(c, const_cast<ParamSet&>(v_));
  std::vector<std::vector<float>> host;
  std::vector<TensorToWrite> tw;
  host.reserve(2 * M.size());
  for (auto* set : {&M, &V})
    for (const ParamRef& r : *set) {
      host.emplace_back(size_t(r.tensor->numel()));
      b.download(*r.tensor, host.back().data());
      tw.push_back({std::string(set == &M ? "m." : "v.") + r.name, r.tensor->shape, host.back().data(), DType::F32});
    }
  write_safetensors((fs::path(tmp) / "optimizer.safetensors").string(), tw);
  const auto d = data_rng_.save(), n = noise_rng_.save();
  json state = {{"step", step_},
                {"elapsed_s", elapsed_},
                {"data_rng", {d.state, d.spare, d.has_spare}},
                {"noise_rng", {n.state, n.spare, n.has_spare}},
                {"train", train_config_to_json(cfg_)}};
  write_text_atomic((fs::path(tmp) / "trainer.json").string(), state.dump(2) + "\n");
  // Swap the finished folder in: a crash leaves either the old checkpoint or the new one.
  fs::remove_all(dir + ".old", ec);
  if (fs::exists(dir)) fs::rename(dir, dir + ".old", ec);
  fs::rename(tmp, dir, ec);
  if (ec) fail(dir, "cannot move the checkpoint into place: " + ec.message());
  fs::remove_all(dir + ".old", ec);
}

void Trainer::load_checkpoint(const std::string& dir) {
  const std::string state_file = (fs::path(dir) / "trainer.json").string();
  const json state = read_json_file(state_file, 1 << 20);
  // The trainer state is read whole before any weight is replaced.
  int64_t step = 0;
  double elapsed = 0;
  Rng::State data_rng{}, noise_rng{};
  try {
    const json& s = state.at("step");
    if (!s.is_number_integer() || s.get<int64_t>() < 0 || s.get<int64_t>() > 10000000)
      fail(state_file, "'step' must be a whole number in [0, 10000000]");
    step = s.get<int64_t>();
    elapsed = state.at("elapsed_s").get<double>();
    const auto& d = state.at("data_rng");
    const auto& n = state.at("noise_rng");  // at(): a short list must not be read past its end
    data_rng = {d.at(0).get<uint64_t>(), d.at(1).get<double>(), d.at(2).get<bool>()};
    noise_rng = {n.at(0).get<uint64_t>(), n.at(1).get<double>(), n.at(2).get<bool>()};
  } catch (const json::exception& e) {
    fail(state_file, std::string("incomplete trainer state: ") + e.what());
  }
  Model saved = Model::load(dir, model_.backend_ptr(), /*widen=*/true);  // training needs fp32 weights
  Backend& b = model_.backend();
  const ModelConfig& c = model_.config();
  // Every tensor, by name and shape (equal parameter counts are not enough: the copies below
  // index the saved model's layers by the run's registry).
  const auto want = tensor_specs(c), have = tensor_specs(saved.config());
  bool same = want.size() == have.size();
  for (size_t i = 0; same && i < want.size(); ++i) same = want[i].name == have[i].name && want[i].shape == have[i].shape;
  if (!same) fail(dir, "the checkpoint's model does not match the run's model");
  for (const TensorSpec& s : tensor_specs(c)) {
    int64_t off = 0, off2 = 0;
    Tensor* dst = slot_for(model_.params(), s, &off);
    Tensor* src = slot_for(saved.params(), s, &off2);
    if (off == 0) b.copy(*src, *dst);
  }
  SafetensorsFile opt((fs::path(dir) / "optimizer.safetensors").string());
  auto M = trainable_params(c, m_), V = trainable_params(c, v_);
  std::vector<float> host;
  for (auto* set : {&M, &V})
    for (ParamRef& r : *set) {
      const std::string name = std::string(set == &M ? "m." : "v.") + r.name;
      const TensorView* t = opt.find(name);
      if (!t || t->shape != r.tensor->shape) fail(opt.path(), "missing or misshapen optimizer tensor '" + name + "'");
      host.resize(size_t(t->numel()));
      tensor_to_float(*t, host.data());
      b.upload(*r.tensor, host.data());
    }
  step_ = step;
  elapsed_ = elapsed;
  data_rng_.restore(data_rng);
  noise_rng_.restore(noise_rng);
}

}  // namespace moelab
