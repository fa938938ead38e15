// A training step against the independent PyTorch reference (tests/reference/train_reference.py,
// float64 autograd and torch.optim.AdamW semantics): the loss and each part of it, every gradient
// of every tensor at step 0, and the weights after three AdamW steps with clipping.
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "check.hpp"
#include "trainer.hpp"

using namespace moelab;
using nlohmann::json;
namespace fs = std::filesystem;

// max |a − b| / max |b| over a tensor
static double rel(const std::vector<float>& a, const json& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num = std::max(num, std::fabs(double(a[i]) - b[i].get<double>()));
    den = std::max(den, std::fabs(b[i].get<double>()));
  }
  return den == 0 ? num : num / den;
}

// Host copies, by Hugging Face name, of a ParamSet (weights or gradients).
static std::map<std::string, std::vector<float>> by_name(Model& m, ParamSet& p) {
  std::map<std::string, std::vector<float>> out;
  for (const TensorSpec& s : tensor_specs(m.config())) {
    int64_t off = 0;
    Tensor* t = slot_for(p, s, &off);
    std::vector<float> host(static_cast<size_t>(s.numel()));
    m.backend().download(*t, host.data(), off, s.numel());
    out[s.name] = std::move(host);
  }
  return out;
}

TEST(training_steps_match_pytorch_reference) {
  if (check::args().empty()) throw check::Skip{"no fixture folder given"};
  int fixtures = 0;
  for (const auto& e : fs::directory_iterator(check::args()[0])) {
    const std::string dir = e.path().string();
    if (!fs::exists(dir + "/expected_train.json")) continue;
    const json batch_j = json::parse(std::ifstream(dir + "/batch.json"));
    const json want = json::parse(std::ifstream(dir + "/expected_train.json"));
    Model m = Model::load(dir, make_eigen_backend());
    Batch batch;
    for (const auto& seq : batch_j["tokens"]) {
      const auto t = seq.get<std::vector<int32_t>>();
      batch.T = int64_t(t.size()) - 1;
      batch.inputs.insert(batch.inputs.end(), t.begin(), t.end() - 1);
      batch.targets.insert(batch.targets.end(), t.begin() + 1, t.end());
      ++batch.B;
    }
    StepKnobs knobs;
    knobs.aux_alpha = batch_j["aux_loss_alpha"];
    knobs.z_coef = batch_j["z_loss_coef"];
    TrainConfig tc;
    tc.beta1 = batch_j["betas"][0];
    tc.beta2 = batch_j["betas"][1];
    tc.adam_eps = batch_j["eps"];
    tc.weight_decay = batch_j["weight_decay"];
    tc.clip = batch_j["clip"];
    const float lr = batch_j["lr"];
    ParamSet grads = m.zeros_like(), mom = m.zeros_like(), var = m.zeros_like();
    Rng noise(0);
    for (int step = 0; step < batch_j["steps"].get<int>(); ++step) {
      zero_params(m.backend(), m.config(), grads);
      const StepResult r = forward_backward(m, grads, batch, knobs, noise);
      auto close = [&](double got, const char* key) {
        const double w = want[key][size_t(step)];
        if (std::fabs(got - w) > 1e-4 * std::max(1.0, std::fabs(w)))
          check::report(__FILE__, __LINE__, dir + " step " + std::to_string(step) + " " + key + ": " +
                                                std::to_string(got) + " vs " + std::to_string(w));
      };
      close(r.loss, "loss");
      close(r.lm_loss, "lm_loss");
      close(r.aux_loss, "aux_loss");
      close(r.z_loss, "z_loss");
      if (step == 0) {
        int n = 0;
        for (const auto& [name, g] : by_name(m, grads)) {
          if (!want["grads"].contains(name)) {
            check::report(__FILE__, __LINE__, dir + ": the reference has no gradient for " + name);
            continue;
          }
          const double err = rel(g, want["grads"][name]);
          if (err > 1e-4) check::report(__FILE__, __LINE__, dir + ": gradient of " + name + " differs by " + std::to_string(err));
          ++n;
        }
        CHECK_EQ(size_t(n), want["grads"].size());
      }
      const double norm = adamw_update(m, grads, mom, var, step + 1, lr, tc);
      close(norm, "grad_norm");
    }
    // Adam divides each gradient by its own running magnitude, so an element whose gradient is
    // tiny (below 1e-3 of its tensor's largest) moves by about ±lr whatever its size, and fp32
    // rounding of that tiny gradient may flip the sign. Those elements are held to Adam's bound
    // (|update| <= lr per step); all others to 1e-4 of the tensor's scale.
    const int steps = batch_j["steps"].get<int>();
    int sensitive = 0, total = 0;
    for (const auto& [name, w] : by_name(m, m.params())) {
      const json& ref = want["weights_after"][name];
      const json& g0 = want["grads"][name];
      double wmax = 0, gmax = 0;
      for (size_t i = 0; i < w.size(); ++i) {
        wmax = std::max(wmax, std::fabs(ref[i].get<double>()));
        gmax = std::max(gmax, std::fabs(g0[i].get<double>()));
      }
      for (size_t i = 0; i < w.size(); ++i) {
        const bool tiny = std::fabs(g0[i].get<double>()) < 1e-3 * gmax;
        const double tol = tiny ? 2.0 * lr * steps : 1e-4 * wmax;
        sensitive += tiny;
        ++total;
        if (std::fabs(double(w[i]) - ref[i].get<double>()) > tol) {
          check::report(__FILE__, __LINE__, dir + ": " + name + "[" + std::to_string(i) + "] after AdamW: " +
                                                std::to_string(w[i]) + " vs " + std::to_string(ref[i].get<double>()));
          break;
        }
      }
    }
    std::fprintf(stderr, "  %s: %d weights compared, %d with tiny gradients held to Adam's bound\n", dir.c_str(), total, sensitive);
    ++fixtures;
  }
  CHECK(fixtures >= 2);
}

CHECK_MAIN()
