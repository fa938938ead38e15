// The model against the independent PyTorch reference (tests/reference/make_fixtures.py writes
// random tiny checkpoints of each family with their logits and expert choices): logits to 1e-4
// relative, identical experts; and KV-cached decode equals the full forward.
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "check.hpp"
#include "model.hpp"

using namespace moelab;
using nlohmann::json;
namespace fs = std::filesystem;

static std::vector<std::string> fixture_dirs() {
  if (check::args().empty()) throw check::Skip{"no fixture folder given"};
  std::vector<std::string> dirs;
  for (const auto& e : fs::directory_iterator(check::args()[0]))
    if (fs::exists(e.path() / "expected.json")) dirs.push_back(e.path().string());
  std::sort(dirs.begin(), dirs.end());
  if (dirs.empty()) throw check::Skip{"no fixtures in " + check::args()[0]};
  return dirs;
}

// max |a - b| / max |b|
static double rel_err(const std::vector<float>& a, const std::vector<double>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < b.size(); ++i) {
    num = std::max(num, std::fabs(double(a[i]) - b[i]));
    den = std::max(den, std::fabs(b[i]));
  }
  return num / std::max(den, 1e-30);
}

TEST(logits_and_experts_match_pytorch_reference) {
  int n = 0;
  for (const auto& dir : fixture_dirs()) {
    std::ifstream in(dir + "/expected.json");
    const json e = json::parse(in);
    Model m = Model::load(dir, make_eigen_backend());
    const std::vector<int32_t> tokens = e["tokens"].get<std::vector<int32_t>>();
    RoutingTrace trace;
    const std::vector<float> logits = m.forward_full(tokens, &trace);
    std::vector<double> want;
    for (const auto& row : e["logits"])
      for (const auto& v : row) want.push_back(v.get<double>());
    CHECK_EQ(logits.size(), want.size());
    const double err = rel_err(logits, want);
    if (!(err <= 1e-4)) check::report(__FILE__, __LINE__, dir + ": logits differ, relative error " + std::to_string(err));
    const json& routing = e["routing"];
    CHECK_EQ(trace.layers().size(), routing.size());
    for (size_t l = 0; l < std::min(trace.layers().size(), routing.size()); ++l) {
      const auto& L = trace.layers()[l];
      CHECK_EQ(L.layer, routing[l]["layer"].get<int64_t>());
      std::vector<int32_t> ids;
      std::vector<double> w, p;
      for (const auto& row : routing[l]["experts"])
        for (const auto& v : row) ids.push_back(v.get<int32_t>());
      for (const auto& row : routing[l]["weights"])
        for (const auto& v : row) w.push_back(v.get<double>());
      for (const auto& row : routing[l]["probs"])
        for (const auto& v : row) p.push_back(v.get<double>());
      if (L.ids != ids) check::report(__FILE__, __LINE__, dir + ": expert choices differ in layer " + std::to_string(L.layer));
      CHECK(rel_err(L.weights, w) <= 1e-4);
      CHECK(rel_err(L.probs, p) <= 1e-4);
    }
    ++n;
  }
  CHECK(n >= 7);
}

TEST(kv_cached_decode_equals_full_forward) {
  for (const auto& dir : fixture_dirs()) {
    std::ifstream in(dir + "/expected.json");
    const json e = json::parse(in);
    Model m = Model::load(dir, make_eigen_backend());
    const std::vector<int32_t> tokens = e["tokens"].get<std::vector<int32_t>>();
    RoutingTrace full_trace, step_trace;
    const std::vector<float> full = m.forward_full(tokens, &full_trace);
    // Prefill the first 3 tokens, then one token at a time.
    KvCache cache = m.new_cache(int64_t(tokens.size()));
    std::vector<float> stepped = m.forward({tokens.begin(), tokens.begin() + 3}, cache, &step_trace);
    for (size_t t = 3; t < tokens.size(); ++t) {
      const auto row = m.forward({tokens[t]}, cache, &step_trace);
      stepped.insert(stepped.end(), row.begin(), row.end());
    }
    std::vector<double> want(full.begin(), full.end());
    const double err = rel_err(stepped, want);
    if (!(err <= 1e-5)) check::report(__FILE__, __LINE__, dir + ": decode differs from full forward by " + std::to_string(err));
    for (size_t l = 0; l < full_trace.layers().size(); ++l)
      CHECK(full_trace.layers()[l].ids == step_trace.layers()[l].ids);
  }
}

CHECK_MAIN()
