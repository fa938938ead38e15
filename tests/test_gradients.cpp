// Finite-difference gradient checks in double precision: every trainable tensor, every router
// and balancing variant, including the router weights through top-k selection. Elements whose
// perturbation flips a top-k choice (or a capacity decision) are skipped and counted.
#include "check.hpp"
#include "test_util.hpp"
#include "train_step.hpp"

using namespace moelab;

namespace {

struct Variant {
  const char* name;
  ModelConfig config;
  StepKnobs knobs;
};

std::vector<Variant> variants() {
  std::vector<Variant> v;
  ModelConfig base = testutil::tiny_config(Family::Mixtral);
  base.hidden_size = 16;
  base.head_dim = 4;
  base.expert_ffn_size = 8;
  base.vocab_size = 24;
  StepKnobs k;
  k.aux_alpha = 0.3f;
  k.z_coef = 0.05f;
  v.push_back({"softmax top-2 renormalised + aux + z", base, k});
  ModelConfig sw = base;
  sw.top_k = 1;
  sw.norm_topk_prob = false;
  v.push_back({"switch top-1 (gate = p) + aux", sw, {.aux_alpha = 0.2f, .z_coef = 0.0f, .capacity = {}, .noise = true}});
  ModelConfig noisy = base;
  noisy.router_noise = true;
  v.push_back({"noisy top-k", noisy, k});
  ModelConfig sig = base;
  sig.scoring = RouterScoring::Sigmoid;
  sig.score_correction_bias = true;
  v.push_back({"sigmoid + selection bias", sig, {.aux_alpha = 0.0f, .z_coef = 0.02f, .capacity = {}, .noise = true}});
  ModelConfig qw = testutil::tiny_config(Family::Qwen2Moe);
  qw.hidden_size = 16;
  qw.head_dim = 4;
  qw.expert_ffn_size = 8;
  qw.dense_ffn_size = 12;
  qw.vocab_size = 24;
  qw.num_layers = 3;
  qw.qkv_bias = true;
  qw.shared_ffn_size = 10;
  qw.shared_expert_gate = true;
  qw.norm_topk_prob = false;
  qw.mlp_only_layers = {1};
  v.push_back({"qwen2-moe: shared expert, dense layer, biases", qw, k});
  v.push_back({"capacity 0.6, dropped", base, {.aux_alpha = 0.1f, .z_coef = 0.0f, .capacity = {.factor = 0.6, .reroute = false}, .noise = true}});
  v.push_back({"capacity 0.6, re-routed", base, {.aux_alpha = 0.1f, .z_coef = 0.0f, .capacity = {.factor = 0.6, .reroute = true}, .noise = true}});
  return v;
}

double loss_of(Model& m, const Batch& batch, const StepKnobs& k, std::vector<int32_t>* choices) {
  ParamSet scratch = m.zeros_like();
  Rng noise(77);
  const StepResult r = forward_backward(m, scratch, batch, k, noise);
  if (choices) {
    choices->clear();
    for (const auto& L : r.routing) choices->insert(choices->end(), L.ids.begin(), L.ids.end());
  }
  return r.loss;
}

}  // namespace

TEST(finite_differences_match_backward_for_every_tensor_and_variant) {
  auto backend = make_eigen_backend_f64();
  for (Variant& v : variants()) {
    Model m = Model::random(v.config, 3, backend, 0.4f);
    if (v.config.score_correction_bias) {  // a non-zero selection bias
      for (auto& L : m.params().layers)
        if (!L.selection_bias.empty()) {
          std::vector<double> bias = {0.05, -0.1, 0.0, 0.08};
          backend->upload(L.selection_bias, bias.data());
        }
    }
    const Batch batch = testutil::random_batch(v.config, 2, 6);
    ParamSet grads = m.zeros_like();
    Rng noise(77);
    const StepResult base = forward_backward(m, grads, batch, v.knobs, noise);
    std::vector<int32_t> base_choice;
    for (const auto& L : base.routing) base_choice.insert(base_choice.end(), L.ids.begin(), L.ids.end());
    auto wrefs = trainable_params(v.config, m.params());
    auto grefs = trainable_params(v.config, grads);
    int checked = 0, skipped = 0, worst_i = -1;
    double worst = 0;
    for (size_t i = 0; i < wrefs.size(); ++i) {
      Tensor& W = *wrefs[i].tensor;
      const int64_t n = W.numel();
      std::vector<double> w(static_cast<size_t>(n)), g(static_cast<size_t>(n));
      backend->download(W, w.data());
      backend->download(*grefs[i].tensor, g.data());
      // The element with the largest gradient plus two pseudo-random ones.
      int64_t big = 0;
      for (int64_t j = 1; j < n; ++j)
        if (std::fabs(g[size_t(j)]) > std::fabs(g[size_t(big)])) big = j;
      if (std::fabs(g[size_t(big)]) < 1e-9)
        check::report(__FILE__, __LINE__, std::string(v.name) + ": " + wrefs[i].name + " has an all-zero gradient");
      for (int64_t j : {big, (int64_t(i) * 7 + 3) % n, (int64_t(i) * 13 + 5) % n}) {
        const double h = 1e-5, orig = w[size_t(j)];
        std::vector<int32_t> cp, cm;
        backend->upload(W, std::vector<double>{orig + h}.data(), j, 1);
        const double lp = loss_of(m, batch, v.knobs, &cp);
        backend->upload(W, std::vector<double>{orig - h}.data(), j, 1);
        const double lm = loss_of(m, batch, v.knobs, &cm);
        backend->upload(W, std::vector<double>{orig}.data(), j, 1);
        if (cp != base_choice || cm != base_choice) {
          ++skipped;
          continue;
        }
        const double fd = (lp - lm) / (2 * h), an = g[size_t(j)];
        // Relative error, judged absolutely (against 1e-6) for near-zero gradients where the
        // finite difference is mostly rounding noise of the loss (~1e-11 here).
        const double err = std::fabs(fd - an) / (1e-6 + std::max(std::fabs(fd), std::fabs(an)));
        if (err > worst) {
          worst = err;
          worst_i = int(i);
        }
        if (err > 1e-4)
          check::report(__FILE__, __LINE__, std::string(v.name) + ": " + wrefs[i].name + "[" + std::to_string(j) +
                                                "] analytic " + std::to_string(an) + " vs finite difference " +
                                                std::to_string(fd));
        ++checked;
      }
    }
    std::fprintf(stderr, "  %-45s %zu tensors, %d elements checked, %d skipped (choice flips), worst rel err %.1e (%s)\n",
                 v.name, wrefs.size(), checked, skipped, worst, worst_i >= 0 ? wrefs[size_t(worst_i)].name.c_str() : "-");
    CHECK(skipped * 10 <= checked);
  }
}

CHECK_MAIN()
