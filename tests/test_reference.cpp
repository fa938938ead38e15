// The model against the independent PyTorch reference (tests/reference/make_fixtures.py writes
// random tiny checkpoints of each family with their logits and expert choices): logits to 1e-4
// relative, identical experts; and KV-cached decode equals the full forward.
#include <filesystem>
#include <fstream>
#include <set>

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
  std::set<std::string> families;
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
    std::printf("  %-30s logits max rel err %.1e\n", fs::path(dir).filename().c_str(), err);
    families.insert(e["family"].get<std::string>());
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
  CHECK(n >= 10);
  for (const char* f : {"mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "granitemoe"}) CHECK(families.count(f) == 1);
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

// bf16 mode (Backend::set_precision): every product's operands rounded to bfloat16, fp32 sums.
// The reference does the same rounding in PyTorch (with float64 sums). Where an intermediate lies
// within float32 noise of a bf16 rounding boundary the two may round it apart (one bf16 step, about
// 1e-3 of the logits downstream), so: almost all logits agree to 1e-5 of the largest, none is off
// by more than 3e-3, while bf16 and fp32 agree to 1e-5 almost nowhere. A bf16 mode that did
// nothing, or rounded other operands, fails.
TEST(bf16_products_match_pytorch_reference) {
  struct Share {
    size_t close = 0, total = 0;
    void add(const std::vector<float>& a, const std::vector<double>& b) {
      double mx = 0;
      for (double v : b) mx = std::max(mx, std::fabs(v));
      for (size_t i = 0; i < b.size(); ++i) close += std::fabs(double(a[i]) - b[i]) <= 1e-5 * mx;
      total += b.size();
    }
    double value() const { return total ? double(close) / double(total) : 0.0; }
  } forward_share, decode_share, fp32_share;
  int n = 0;
  for (const auto& dir : fixture_dirs()) {
    std::ifstream in(dir + "/expected.json");
    const json e = json::parse(in);
    if (!e.contains("bf16_products")) continue;
    auto backend = make_eigen_backend();
    backend->set_precision(Precision::BF16);
    CHECK(backend->precision() == Precision::BF16);
    Model m = Model::load(dir, backend);
    const std::vector<int32_t> tokens = e["tokens"].get<std::vector<int32_t>>();
    RoutingTrace trace;
    const std::vector<float> logits = m.forward_full(tokens, &trace);
    std::vector<double> want;
    std::vector<float> fp32;
    for (const auto& row : e["bf16_products"]["logits"])
      for (const auto& v : row) want.push_back(v.get<double>());
    for (const auto& row : e["logits"])
      for (const auto& v : row) fp32.push_back(v.get<float>());
    CHECK_EQ(logits.size(), want.size());
    CHECK_EQ(fp32.size(), want.size());
    const double err = rel_err(logits, want);
    if (!(err <= 3e-3)) check::report(__FILE__, __LINE__, dir + ": bf16 logits differ, relative error " + std::to_string(err));
    forward_share.add(logits, want);
    fp32_share.add(fp32, want);
    const json& experts = e["bf16_products"]["experts"];
    CHECK_EQ(trace.layers().size(), experts.size());
    for (size_t l = 0; l < std::min(trace.layers().size(), experts.size()); ++l) {
      std::vector<int32_t> ids;
      for (const auto& row : experts[l])
        for (const auto& v : row) ids.push_back(v.get<int32_t>());
      if (trace.layers()[l].ids != ids)
        check::report(__FILE__, __LINE__, dir + ": bf16 expert choices differ in layer " + std::to_string(l));
    }
    // Decode with the KV cache (matrix-vector products) rounds the same operands.
    KvCache cache = m.new_cache(int64_t(tokens.size()));
    std::vector<float> stepped = m.forward({tokens.begin(), tokens.begin() + 3}, cache);
    for (size_t t = 3; t < tokens.size(); ++t) {
      const auto row = m.forward({tokens[t]}, cache);
      stepped.insert(stepped.end(), row.begin(), row.end());
    }
    const double derr = rel_err(stepped, want);
    if (!(derr <= 3e-3)) check::report(__FILE__, __LINE__, dir + ": bf16 decode differs by " + std::to_string(derr));
    decode_share.add(stepped, want);
    ++n;
  }
  std::printf("  logits within 1e-5 of the bf16 reference: forward %.3f, decode %.3f; fp32 logits: %.3f\n",
              forward_share.value(), decode_share.value(), fp32_share.value());
  CHECK(n >= 7);
  CHECK(forward_share.value() >= 0.9);
  CHECK(decode_share.value() >= 0.9);
  CHECK(fp32_share.value() <= 0.05);
}

TEST(precision_modes_parse_and_refuse) {
  CHECK(parse_precision("BF16") == Precision::BF16);
  CHECK(parse_precision("fp32") == Precision::FP32);
  CHECK_THROWS_WITH(parse_precision("fp8"), "precision: unknown mode 'fp8' (choose fp32, tf32 or bf16)");
  CHECK_THROWS_WITH(make_eigen_backend()->set_precision(Precision::TF32), "tf32 is a GPU tensor-core mode");
  CHECK_THROWS_WITH(make_eigen_backend_f64()->set_precision(Precision::BF16), "fp64 only");
}

CHECK_MAIN()
