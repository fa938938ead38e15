// Model::load on a backend that keeps bf16/f16 weights in its own memory (Backend::keeps_stored_weights,
// the CUDA backend's way), tested here without a GPU: the recording backend of recording_backend.hpp
// stands in for the device (its own 2-byte buffers, a device memory size, graph recording) around
// the Eigen backend. What is checked is core's side of the contract: which tensors are kept, in
// their dtype, as one stack per expert matrix; the bytes the memory check counts; the same
// numbers as the CPU's memory-mapped path and as the widened fp32 model; the refusals.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "check.hpp"
#include "corpus.hpp"
#include "decoder.hpp"
#include "model.hpp"
#include "params.hpp"
#include "recording_backend.hpp"
#include "safetensors.hpp"
#include "stored_families.hpp"
#include "test_util.hpp"
#include "trainer.hpp"

using namespace moelab;
using testutil::TempDir;

namespace {

const std::vector<int32_t>& kTokens = testutil::kStoredTokens;

std::shared_ptr<testutil::RecordingBackend> device_like(int64_t memory = 0) {
  auto b = std::make_shared<testutil::RecordingBackend>(make_eigen_backend());
  b->keep_stored = true;
  b->device_memory = memory;
  return b;
}

// The tiny Qwen2-MoE with a shared expert, a dense layer and untied embeddings: every role that
// is kept as stored appears (embedding, LM head, attention, experts, shared and dense MLPs).
ModelConfig qwen_config() {
  const ModelConfig c = testutil::stored_families()[1].config;
  MOELAB_ASSERT(c.shared_ffn_size > 0 && !c.mlp_only_layers.empty() && !c.tie_word_embeddings, "the qwen2-moe variant");
  return c;
}

// Parameters kept as stored at 2 bytes each: all but norms, biases, routers and gates (fp32).
int64_t expected_stored_bytes(const ModelConfig& c) {
  int64_t n = 0;
  for (const TensorSpec& s : tensor_specs(c))
    switch (s.role) {
      case Role::Embed: case Role::LmHead: case Role::Q: case Role::K: case Role::V: case Role::O:
      case Role::ExpertGate: case Role::ExpertUp: case Role::ExpertDown: case Role::SharedGate:
      case Role::SharedUp: case Role::SharedDown: case Role::DenseGate: case Role::DenseUp: case Role::DenseDown:
        n += s.numel();
        break;
      default:
        break;
    }
  return 2 * n;
}

std::string saved(const TempDir& tmp, const ModelConfig& c, DType dtype, const char* name) {
  const std::string dir = tmp / name;
  testutil::save_stored_fixture(c, dir, dtype);
  return dir;
}

// The smallest top-k margin over tokens and MoE layers (stored_families.hpp's topk_margin).
double min_topk_margin(const RoutingTrace& trace, int64_t E, int64_t K) {
  double m = INFINITY;
  for (const RoutingTrace::Layer& L : trace.layers())
    for (size_t t = 0; t + size_t(E) <= L.probs.size(); t += size_t(E))
      m = std::min(m, testutil::topk_margin(L.probs.data() + t, E, K));
  return m;
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double d = a.size() == b.size() ? 0.0 : INFINITY;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) d = std::max(d, double(std::fabs(a[i] - b[i])));
  return d;
}

}  // namespace

TEST(stored_weights_are_copied_in_their_dtype_as_one_stack_per_expert_matrix) {
  TempDir tmp("stored-device");
  const ModelConfig c = qwen_config();
  for (DType dtype : {DType::BF16, DType::F16}) {
    const std::string dir = saved(tmp, c, dtype, dtype == DType::BF16 ? "bf16" : "f16");
    const Elem want = dtype == DType::BF16 ? Elem::BF16 : Elem::F16;
    auto dev = device_like();
    Model m = Model::load(dir, dev);
    CHECK_EQ(m.stored_weight_bytes(), expected_stored_bytes(c));
    const ParamSet& w = m.params();
    CHECK(w.embed.type == want && w.lm_head.type == want);
    int64_t stacks = 0;
    for (const LayerWeights& L : w.layers) {
      CHECK(L.q.type == want && L.o.type == want);
      CHECK(L.input_norm.type == Elem::Real);  // norms stay fp32
      if (!L.moe) continue;
      CHECK(L.router.type == Elem::Real);     // the router decides the routing: fp32
      const ExpertWeights& X = L.experts;
      CHECK(X.per_expert() && X.gate.type == want && X.down.type == want);
      const int64_t E = c.num_experts, F = c.expert_ffn_size, H = c.hidden_size;
      CHECK(X.gate.shape == (std::vector<int64_t>{E, F, H}) && X.down.shape == (std::vector<int64_t>{E, H, F}));
      for (int64_t e = 0; e < E; ++e) {  // each expert a view of its layer's stack, in expert order
        CHECK(X.gate_e[size_t(e)].ptr == static_cast<char*>(X.gate.ptr) + e * F * H * 2);
        CHECK(X.up_e[size_t(e)].ptr == static_cast<char*>(X.up.ptr) + e * F * H * 2);
        CHECK(X.down_e[size_t(e)].ptr == static_cast<char*>(X.down.ptr) + e * H * F * 2);
        CHECK(X.gate_e[size_t(e)].storage == X.gate.storage);
      }
      stacks += 3;
    }
    // One buffer per stack and per other stored matrix: 2 (embed, head) + 4 attention per layer
    // + the shared expert's 3 per MoE layer + the dense layer's 3, never one per expert.
    const int64_t moe_layers = stacks / 3;
    CHECK_EQ(dev->stored_allocs, 2 + 4 * c.num_layers + stacks + 3 * moe_layers + 3);
    // The values are the checkpoint's: the export (widened) equals the CPU's mapped model's.
    Model mapped = Model::load(dir, make_eigen_backend());
    CHECK_EQ(mapped.stored_weight_bytes(), m.stored_weight_bytes());
    const auto a = m.export_weights(), b = mapped.export_weights();
    CHECK_EQ(a.size(), b.size());
    for (size_t i = 0; i < std::min(a.size(), b.size()); ++i)
      if (a[i].second != b[i].second) check::report(__FILE__, __LINE__, a[i].first + " differs from the mapped model's");
  }
}

// Every family variant test_gpu_stored runs on the GPU (stored_families.hpp), here on the stand-in.
TEST(stored_copies_compute_what_the_mapped_and_the_widened_models_compute) {
  TempDir tmp("stored-device");
  for (const testutil::FamilyCase& f : testutil::stored_families()) {
    const ModelConfig& c = f.config;
    const std::string dir = saved(tmp, c, DType::BF16, "m");
    Model dev = Model::load(dir, device_like()), mapped = Model::load(dir, make_eigen_backend());
    Model wide = Model::load(dir, make_eigen_backend(), /*widen=*/true);
    CHECK_EQ(wide.stored_weight_bytes(), int64_t(0));
    RoutingTrace td, tm;
    const std::vector<float> ld = dev.forward_full(kTokens, &td), lm = mapped.forward_full(kTokens, &tm);
    const std::vector<float> lw = wide.forward_full(kTokens);
    // The same kernels on the same values: identical. Against fp32 weights (bf16 widens exactly),
    // only the order of the fp32 sums differs.
    CHECK(dev.stored_weight_bytes() > 0);
    CHECK_EQ(dev.stored_weight_bytes(), mapped.stored_weight_bytes());
    if (max_abs_diff(ld, lm) != 0.0) check::report(__FILE__, __LINE__, std::string(f.name) + ": differs from the mapped model");
    double scale = 0;
    for (float v : lw) scale = std::max(scale, double(std::fabs(v)));
    if (!(max_abs_diff(ld, lw) <= 1e-5 * scale))
      check::report(__FILE__, __LINE__, std::string(f.name) + ": differs from the widened model");
    CHECK_EQ(td.layers().size(), tm.layers().size());
    for (size_t l = 0; l < std::min(td.layers().size(), tm.layers().size()); ++l)
      if (td.layers()[l].ids != tm.layers()[l].ids)
        check::report(__FILE__, __LINE__, std::string(f.name) + ": expert choices differ");
    // test_gpu_stored asks the GPU for identical expert choices on these models and tokens: in
    // fp32 (scores within ~1e-6 of the CPU's) that needs no near ties. (In bf16 mode it excuses
    // a differing choice whose margin is below 5e-3, and counts it.)
    auto cpu16 = make_eigen_backend();
    cpu16->set_precision(Precision::BF16);
    Model m16 = Model::load(dir, cpu16);
    RoutingTrace t16;
    m16.forward_full(kTokens, &t16);
    const double margin = min_topk_margin(tm, c.num_experts, c.top_k),
                 margin16 = min_topk_margin(t16, c.num_experts, c.top_k);
    std::fprintf(stderr, "  %s: smallest top-k margin %.2e (fp32), %.2e (bf16 mode)\n", f.name, margin, margin16);
    if (!(margin > 1e-3 && margin16 > 1e-3)) check::report(__FILE__, __LINE__, std::string(f.name) + ": a near tie");
    std::filesystem::remove_all(dir);
  }
}

TEST(recorded_decode_reads_the_stored_copies) {
  TempDir tmp("stored-device");
  const ModelConfig c = qwen_config();
  const std::string dir = saved(tmp, c, DType::BF16, "m");
  auto dev = device_like();
  Model m = Model::load(dir, dev), mapped = Model::load(dir, make_eigen_backend());
  const int64_t T = int64_t(kTokens.size()), V = c.vocab_size;
  const std::vector<float> full = mapped.forward_full(kTokens);
  Decoder dec(m, T);
  CHECK(dec.graphed());
  std::vector<float> got = dec.prefill({kTokens.front()});
  for (int64_t t = 1; t < T; ++t) {
    const std::vector<float> step = dec.step(kTokens[size_t(t)]);
    got.insert(got.end(), step.begin(), step.end());
  }
  CHECK(dev->replays > 0);
  CHECK_EQ(int64_t(got.size()), T * V);
  double scale = 0;
  for (float v : full) scale = std::max(scale, double(std::fabs(v)));
  CHECK(max_abs_diff(got, full) <= 1e-5 * scale);
}

TEST(the_memory_check_counts_two_bytes_per_stored_weight_in_the_device_memory) {
  TempDir tmp("stored-device");
  const ModelConfig c = qwen_config();
  const std::string dir = saved(tmp, c, DType::BF16, "m");
  const int64_t stored = expected_stored_bytes(c), total = count_params(c).total;
  const int64_t fp32_rest = 4 * (total - stored / 2), need = stored + fp32_rest;
  CHECK(need < 4 * total);
  // Room for the bf16 copies and the fp32 rest (less the 10% reserve), not for fp32 weights.
  const int64_t room = need / 8 * 10 + 1024;
  CHECK(4 * total > room / 10 * 8);
  Model m = Model::load(dir, device_like(room));
  CHECK_EQ(m.stored_weight_bytes(), stored);
  CHECK_THROWS_WITH(Model::load(dir, device_like(room), /*widen=*/true), "the device can give it");
  // Too small for the copies too: one line naming the config file and the device.
  const std::string msg = check::error_of([&] { Model::load(dir, device_like(need / 2)); });
  CHECK(msg.find("config.json") != std::string::npos);
  CHECK(msg.find("as stored") != std::string::npos);
  CHECK(msg.find("the device can give it") != std::string::npos);
  // The KV cache is checked against the device's memory too.
  CHECK_THROWS_WITH(m.new_cache(c.max_positions), "the device can give it");
}

TEST(what_the_stored_copies_cannot_do_is_refused_in_one_line) {
  TempDir tmp("stored-device");
  const ModelConfig c = testutil::byte_mixtral();
  const std::string dir = saved(tmp, c, DType::BF16, "m");
  Model m = Model::load(dir, device_like());
  const auto corpus = open_corpus("builtin:domains");
  TrainConfig tc;
  tc.steps = 2;
  tc.batch = 2;
  tc.seq_len = 8;
  CHECK_THROWS_WITH(Trainer(m, *corpus, tc), "training needs fp32 weights");
  // Widened, the same checkpoint trains.
  Model wide = Model::load(dir, device_like(), /*widen=*/true);
  CHECK_EQ(wide.stored_weight_bytes(), int64_t(0));
  Trainer ok(wide, *corpus, tc);
  CHECK(std::isfinite(ok.step().loss));
  // A backend that keeps no stored weights refuses to make them, in one line.
  auto cpu = make_eigen_backend();
  CHECK(!cpu->keeps_stored_weights());
  CHECK_THROWS_WITH(cpu->alloc_stored({4, 4}, Elem::BF16), "keeps no bf16/f16 weights");
}

CHECK_MAIN()
