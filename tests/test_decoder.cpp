// Recorded decode (core/decoder): token-by-token decode that records one step and replays it
// must give what the plain forward gives. The recording backend of recording_backend.hpp stands in
// for CUDA graph capture on the CPU, so what is checked here is core's side of the contract: the
// recorded step reads its token and position from device scalars, writes the KV cache at the
// replayed position, and brings its routing back through the device trace. Reference: the logits
// of Model::forward_full over the whole text (one pass, no cache), row by row.
#include <algorithm>
#include <cmath>
#include <vector>

#include "check.hpp"
#include "decoder.hpp"
#include "generate.hpp"
#include "model.hpp"
#include "recording_backend.hpp"
#include "test_util.hpp"

using namespace moelab;
using testutil::RecordingBackend;

namespace {

const std::vector<int32_t> kText = {3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7};
constexpr size_t kPrompt = 4;

struct Variant {
  const char* name;
  ModelConfig config;
};

std::vector<Variant> variants() {
  using testutil::tiny_config;
  std::vector<Variant> v;
  v.push_back({"mixtral", tiny_config(Family::Mixtral)});
  ModelConfig q2 = tiny_config(Family::Qwen2Moe);
  q2.qkv_bias = true;
  q2.shared_ffn_size = 20;
  q2.shared_expert_gate = true;
  q2.norm_topk_prob = false;
  q2.num_layers = 3;
  q2.mlp_only_layers = {1};  // dense and MoE layers mixed
  v.push_back({"qwen2_moe shared expert, dense layer", q2});
  ModelConfig q3 = tiny_config(Family::Qwen3Moe);
  q3.qk_norm = QkNorm::PerHead;
  v.push_back({"qwen3_moe", q3});
  ModelConfig ol = tiny_config(Family::Olmoe);
  ol.qk_norm = QkNorm::Whole;
  ol.clip_qkv = 0.5;
  v.push_back({"olmoe", ol});
  ModelConfig sg = tiny_config(Family::Mixtral);
  sg.scoring = RouterScoring::Sigmoid;
  sg.top_k = 3;
  v.push_back({"sigmoid router, top-3", sg});
  return v;
}

double max_rel(const float* a, const float* b, int64_t n) {
  double diff = 0, scale = 1e-12;
  for (int64_t i = 0; i < n; ++i) {
    diff = std::max(diff, std::fabs(double(a[i]) - double(b[i])));
    scale = std::max(scale, std::fabs(double(b[i])));
  }
  return diff / scale;
}

}  // namespace

TEST(recorded_decode_equals_full_forward_for_every_family) {
  for (const Variant& var : variants()) {
    auto rec = std::make_shared<RecordingBackend>(make_eigen_backend());
    Model m = Model::random(var.config, 5, rec, 0.2f);
    const int64_t V = var.config.vocab_size;
    RoutingTrace full_trace;
    const std::vector<float> full = m.forward_full(kText, &full_trace);

    Decoder dec(m, int64_t(kText.size()));
    CHECK(dec.graphed());
    RoutingTrace trace;
    std::vector<float> logits = dec.prefill({kText.begin(), kText.begin() + kPrompt}, &trace);
    CHECK_EQ(rec->recordings, 0);  // the prompt runs directly
    for (size_t i = kPrompt; i < kText.size(); ++i) {
      logits = dec.step(kText[i], &trace);
      const double err = max_rel(logits.data(), full.data() + int64_t(i) * V, V);
      if (err > 1e-5) check::report(__FILE__, __LINE__, std::string(var.name) + " position " + std::to_string(i) +
                                                            ": relative error " + std::to_string(err));
    }
    CHECK_EQ(rec->recordings, 1);  // recorded once, replayed for every token
    CHECK_EQ(rec->replays, int(kText.size() - kPrompt));
    CHECK(dec.graph_nodes() > 10);
    CHECK_EQ(dec.length(), int64_t(kText.size()));

    // The routing brought back from the device trace is the routing of the full pass.
    CHECK_EQ(trace.layers().size(), full_trace.layers().size());
    for (size_t l = 0; l < std::min(trace.layers().size(), full_trace.layers().size()); ++l) {
      const auto& a = trace.layers()[l];
      const auto& b = full_trace.layers()[l];
      CHECK_EQ(a.layer, b.layer);
      CHECK_EQ(a.tokens(), int64_t(kText.size()));
      CHECK(a.ids == b.ids);
      CHECK(a.wanted == b.ids);
      CHECK(max_rel(a.probs.data(), b.probs.data(), int64_t(b.probs.size())) < 1e-5);
      CHECK(max_rel(a.logits.data(), b.logits.data(), int64_t(b.logits.size())) < 1e-5);
      CHECK(max_rel(a.weights.data(), b.weights.data(), int64_t(b.weights.size())) < 1e-5);
      CHECK(max_rel(a.input_norm.data(), b.input_norm.data(), int64_t(b.input_norm.size())) < 1e-5);
    }
  }
}

TEST(untraced_steps_use_their_own_recording) {
  auto rec = std::make_shared<RecordingBackend>(make_eigen_backend());
  Model m = Model::random(testutil::tiny_config(), 9, rec, 0.2f);
  const std::vector<float> full = m.forward_full(kText);
  Decoder dec(m, int64_t(kText.size()));
  dec.prefill({kText.front()});
  RoutingTrace trace;
  for (size_t i = 1; i < kText.size(); ++i) {
    // Alternate: with and without an observer (two recordings, one KV cache).
    const std::vector<float> logits = dec.step(kText[i], i % 2 ? &trace : nullptr);
    CHECK(max_rel(logits.data(), full.data() + int64_t(i) * 40, 40) < 1e-5);
  }
  CHECK_EQ(rec->recordings, 2);
  CHECK_EQ(trace.layers().front().tokens(), int64_t(kText.size() / 2));
}

TEST(plain_backend_decodes_without_recording) {
  Model m = Model::random(testutil::tiny_config(), 9, make_eigen_backend(), 0.2f);
  const std::vector<float> full = m.forward_full(kText);
  Decoder dec(m, int64_t(kText.size()));
  CHECK(!dec.graphed());
  dec.prefill({kText.begin(), kText.begin() + 2});
  for (size_t i = 2; i < kText.size(); ++i) {
    const std::vector<float> logits = dec.step(kText[i]);
    CHECK(max_rel(logits.data(), full.data() + int64_t(i) * 40, 40) < 1e-6);
  }
}

TEST(decode_errors_are_clear) {
  auto rec = std::make_shared<RecordingBackend>(make_eigen_backend());
  Model m = Model::random(testutil::tiny_config(), 9, rec, 0.2f);
  Decoder dec(m, 3);
  dec.prefill({1, 2});
  CHECK(check::error_of([&] { dec.step(40); }).find("out of range") != std::string::npos);
  dec.step(3);
  CHECK(check::error_of([&] { dec.step(4); }).find("exceeds the context of 3") != std::string::npos);
  // A backend without recording refuses to record, in one line naming itself.
  auto cpu = make_eigen_backend();
  Tensor pos = cpu->alloc({1}, Elem::Int32);
  CHECK(check::error_of([&] { cpu->begin_recording(pos, 8); }).find("cpu") != std::string::npos);
}

TEST(generate_is_the_same_with_and_without_recording) {
  Model a = Model::random(testutil::tiny_config(), 4, make_eigen_backend(), 0.3f);
  Model b = Model::random(testutil::tiny_config(), 4, std::make_shared<RecordingBackend>(make_eigen_backend()), 0.3f);
  SamplingOptions opt;
  opt.temperature = 0.8f;
  opt.seed = 3;
  RoutingTrace ta, tb;
  const auto ga = generate(a, {1, 2, 3}, 20, opt, &ta);
  const auto gb = generate(b, {1, 2, 3}, 20, opt, &tb);
  CHECK(ga == gb);
  CHECK_EQ(ga.size(), size_t(20));
  CHECK(ta.layers().front().ids == tb.layers().front().ids);
}

// A recording that fails: the decoder says why and runs the ops directly.
TEST(a_failed_recording_falls_back_to_direct_ops) {
  auto rec = std::make_shared<RecordingBackend>(make_eigen_backend());
  Model m = Model::random(testutil::tiny_config(), 9, rec, 0.2f);
  const std::vector<float> full = m.forward_full(kText);
  rec->fail_next_recording = true;
  Decoder dec(m, int64_t(kText.size()));
  dec.prefill({kText.front()});
  for (size_t i = 1; i < kText.size(); ++i) {
    const std::vector<float> logits = dec.step(kText[i]);
    CHECK(max_rel(logits.data(), full.data() + int64_t(i) * 40, 40) < 1e-6);
  }
  CHECK(!dec.graphed());
  CHECK(dec.graph_problem().find("simulated") != std::string::npos);
  CHECK_EQ(rec->replays, 0);
}

CHECK_MAIN()
