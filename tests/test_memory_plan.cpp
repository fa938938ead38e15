// The memory plan (core/memory_plan.hpp) against figures worked out by hand from the published
// shapes, and Model::load / new_cache refusing and cancelling with the same figures.
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "check.hpp"
#include "memory_plan.hpp"
#include "model.hpp"
#include "safetensors.hpp"
#include "test_util.hpp"

using namespace moelab;
using testutil::TempDir;
using testutil::tiny_config;
namespace fs = std::filesystem;

namespace {
const std::string kReal = std::string(MOELAB_SOURCE_DIR) + "/resources/real-models/";

// MOELAB_MEMORY_LIMIT for one scope.
struct MemoryLimit {
  explicit MemoryLimit(const char* v) { ::setenv("MOELAB_MEMORY_LIMIT", v, 1); }
  ~MemoryLimit() { ::unsetenv("MOELAB_MEMORY_LIMIT"); }
};

// Whether this process still maps a file under `dir` (/proc/self/maps).
bool maps_under(const std::string& dir) {
  std::ifstream f("/proc/self/maps");
  std::string line;
  while (std::getline(f, line))
    if (line.find(dir) != std::string::npos) return true;
  return false;
}
}  // namespace

TEST(olmoe_1b_7b_bf16_figures_by_hand) {
  // OLMoE-1B-7B-0924: 6,919,161,856 parameters (published; tests/data/params/figures.json).
  // Kept as fp32: routers 16 × 64 × 2048, norms 16 × (2 × 2048 + q and k norms over the whole
  // projection 2 × 2048) + final 2048 = 2,097,152 + 131,072 + 2,048 = 2,230,272 elements.
  const ModelConfig c = load_config(kReal + "olmoe-1b-7b-0924");
  const MemoryPlan p = memory_plan(c, DType::BF16, 4096, 512);
  const int64_t owned_elems = 2097152 + 131072 + 2048;
  CHECK_EQ(p.owned, owned_elems * 4);                                 // 8,921,088
  CHECK_EQ(p.mapped, (int64_t(6919161856) - owned_elems) * 2);        // 13,833,863,168
  CHECK_EQ(p.mapped_by_dtype.at("bf16"), p.mapped);
  CHECK_EQ(p.fp32_weights, int64_t(6919161856) * 4);
  // KV cache: 2 (k, v) × 16 layers × 4096 tokens × 16 kv heads × 128 head dim × 4 bytes = 1 GiB.
  CHECK_EQ(p.kv_cache, int64_t(2) * 16 * 4096 * 16 * 128 * 4);
  CHECK_EQ(p.kv_cache, int64_t(1) << 30);
  // Activations of a 512-token forward (T = 512, H = 2048, NH·D = NKV·D = 2048, E = 64, K = 8,
  // F = 1024, V = 50304), in reals: 3TH 3,145,728 + 2T(2048 + 2048) 4,194,304 + 16 · 512² 4,194,304
  // + 3TE + 2TK 106,496 + TK(2H + 2F) 25,165,824 + TV 25,755,648 = 62,562,304 → × 4, plus the
  // host copy of the logits TV × 4 = 103,022,592.
  CHECK_EQ(p.activations, int64_t(62562304) * 4 + 103022592);
  CHECK_EQ(p.total(), int64_t(15269797888));  // 14.2 GiB: under 16 GiB (and under 16 GB)
  CHECK(p.total() < int64_t(16) * 1000 * 1000 * 1000);
  {
    MemoryLimit limit("16G");
    const MemoryBudget b = memory_budget();
    CHECK_EQ(b.total, int64_t(16) << 30);
    CHECK_EQ(b.usable, int64_t(15) << 30);  // less a 1 GiB reserve
    CHECK_EQ(b.source, std::string("MOELAB_MEMORY_LIMIT"));
    check_memory_plan(p, "olmoe", "a context of 4096 tokens");  // does not throw
  }
  {
    MemoryLimit limit("12G");  // the bf16 weights alone are 12.9 GiB
    CHECK_THROWS_WITH(check_memory_plan(p, "olmoe", "a context of 4096 tokens"), "a context of 4096 tokens needs 14.2 GiB");
    CHECK_THROWS_WITH(check_memory_plan(p, "olmoe", "x"), "1.0 GiB of KV cache for 4096 tokens");
  }
}

TEST(mixtral_and_granite_by_hand) {
  // Mixtral-8x7B, 46,702,792,704 parameters; fp32: routers 32 × 8 × 4096, norms 32 × 2 × 4096 + 4096.
  const ModelConfig m = load_config(kReal + "mixtral-8x7b");
  const MemoryPlan pm = memory_plan(m, DType::BF16, 32768, 1);
  const int64_t m_owned = 32 * 8 * 4096 + 32 * 2 * 4096 + 4096;
  CHECK_EQ(pm.owned, m_owned * 4);
  CHECK_EQ(pm.mapped, (int64_t(46702792704) - m_owned) * 2);
  CHECK_EQ(pm.kv_cache, int64_t(2) * 32 * 32768 * 8 * 128 * 4);  // 8 GiB: 8 kv heads of 128
  // GraniteMoE 3.0 1B: the fused input_linear [32, 1024, 1024] and output_linear [32, 1024, 512]
  // of 24 layers stay as stored (viewed per expert); the routers [32, 1024] and the norms are fp32.
  const ModelConfig g = load_config(kReal + "granite-3.0-1b-a400m-base");
  const MemoryPlan pg = memory_plan(g, DType::BF16, 4096, 512);
  const int64_t g_owned = 24 * 32 * 1024 + 24 * 2 * 1024 + 1024;
  CHECK_EQ(pg.owned, g_owned * 4);
  CHECK_EQ(pg.mapped, (int64_t(1334628352) - g_owned) * 2);
  CHECK_EQ(pg.kv_cache, int64_t(2) * 24 * 4096 * 8 * 64 * 4);
  // An fp32 checkpoint: nothing mapped, every weight owned.
  const MemoryPlan pf = memory_plan(g, DType::F32, 16, 16);
  CHECK_EQ(pf.mapped, int64_t(0));
  CHECK_EQ(pf.owned, int64_t(1334628352) * 4);
}

TEST(load_and_new_cache_use_the_plan) {
  TempDir tmp("plan");
  ModelConfig c = tiny_config();
  c.max_positions = int64_t(1) << 20;
  Model::random(c, 3, make_eigen_backend()).save(tmp / "m", DType::BF16);
  Model m = Model::load(tmp / "m", make_eigen_backend());
  const ModelConfig loaded = m.config();
  // The loaded model's figures are the plan of its config at bf16, which `info` prints.
  const MemoryPlan from_config = memory_plan(loaded, DType::BF16, 1000, 100);
  const MemoryPlan from_model = m.memory_plan(1000, 100);
  CHECK_EQ(from_model.mapped, from_config.mapped);
  CHECK_EQ(from_model.owned, from_config.owned);
  CHECK_EQ(from_model.total(), from_config.total());
  CHECK_EQ(from_model.mapped, m.stored_weight_bytes());
  CHECK(from_model.mapped > 0);
  // A budget a little under what a context of 2^20 tokens needs: refused with the plan's figure;
  // a context that fits still works.
  const MemoryPlan big = m.memory_plan(int64_t(1) << 20);
  const std::string limit = std::to_string(big.total() - 4096);  // reserve: 10% of it
  MemoryLimit l(limit.c_str());
  CHECK_THROWS_WITH(m.new_cache(int64_t(1) << 20), "a context of 1048576 tokens needs " + human_bytes(double(big.total())));
  CHECK_EQ(m.new_cache(64).capacity, int64_t(64));
}

TEST(load_refused_before_mapping_when_weights_do_not_fit) {
  TempDir tmp("plan-refuse");
  Model::random(tiny_config(), 3, make_eigen_backend()).save(tmp / "m", DType::BF16);
  MemoryLimit l("4K");  // less than the tiny model's weights
  CHECK_THROWS_WITH(Model::load(tmp / "m", make_eigen_backend()), "the model needs");
  CHECK_THROWS_WITH(Model::load(tmp / "m", make_eigen_backend()), "config.json");
  CHECK(!maps_under(tmp.path.string()));
}

TEST(load_reports_progress_to_the_end) {
  TempDir tmp("progress");
  Model::random(tiny_config(), 3, make_eigen_backend()).save(tmp / "m", DType::BF16);
  std::vector<LoadProgress> seen;
  Model m = Model::load(tmp / "m", make_eigen_backend(), false, [&](const LoadProgress& p) {
    seen.push_back(p);
    return true;
  });
  CHECK(seen.size() > 10);
  CHECK_EQ(seen.front().stage, std::string("reading config.json"));
  CHECK_EQ(seen.back().stage, std::string("loaded"));
  int64_t bytes = 0;
  const Checkpoint ck(tmp / "m");
  for (const TensorView* t : ck.all()) bytes += t->nbytes;
  CHECK_EQ(seen.back().total, bytes);
  CHECK_EQ(seen.back().done, bytes);
  for (size_t i = 1; i < seen.size(); ++i) CHECK(seen[i].done >= seen[i - 1].done);
}

TEST(cancel_stops_a_load_and_releases_its_mappings) {
  TempDir tmp("cancel");
  ModelConfig c = tiny_config();
  c.num_layers = 6;
  for (DType dt : {DType::BF16, DType::F32}) {  // kept as stored (NaN scan), and widened
    const std::string dir = tmp / (dt == DType::BF16 ? "bf16" : "f32");
    Model::random(c, 3, make_eigen_backend()).save(dir, dt);
    int calls = 0;
    bool cancelled = false;
    try {
      Model::load(dir, make_eigen_backend(), false, [&](const LoadProgress& p) {
        if (p.done > 0 && ++calls == 5) return false;  // after a few tensors
        return calls < 5;
      });
    } catch (const LoadCancelled&) {
      cancelled = true;
    }
    CHECK(cancelled);
    CHECK_EQ(calls, 5);  // stopped at once: not asked again
    CHECK(!maps_under(dir));
    // The same load, not cancelled, works (nothing left half-done).
    const Model again = Model::load(dir, make_eigen_backend());
    CHECK_EQ(again.stored_weight_bytes(), again.memory_plan(1).mapped);
  }
}

TEST(long_scans_report_and_cancel_inside_a_tensor) {
  // An embedding of 200,000 × 32: 12.8 MB as bf16, 25.6 MB as fp32 — more than one 8 MB step.
  TempDir tmp("steps");
  ModelConfig c = tiny_config();
  c.vocab_size = 200000;
  Model src = Model::random(c, 3, make_eigen_backend());
  const int64_t embed_numel = c.vocab_size * c.hidden_size;
  src.save(tmp / "bf16", DType::BF16);
  int64_t first_done = -1;
  try {
    Model::load(tmp / "bf16", make_eigen_backend(), false, [&](const LoadProgress& p) {
      if (p.done == 0) return true;
      first_done = p.done;
      return false;
    });
  } catch (const LoadCancelled&) {
  }
  CHECK_EQ(first_done, int64_t(8) << 20);  // the first 8 MB of the embedding, not all 12.8 MB
  // Widened in steps, a NaN past the first step is named by its index in the whole tensor.
  std::vector<float> nan_at(1, std::nanf(""));
  src.backend().upload(src.params().embed, nan_at.data(), 3000000, 1);
  src.save(tmp / "f32", DType::F32);
  CHECK(embed_numel > 3000000);
  CHECK_THROWS_WITH(Model::load(tmp / "f32", make_eigen_backend()), "'model.embed_tokens.weight': holds NaN at element 3000000");
  CHECK(!maps_under(tmp / "f32"));
}

CHECK_MAIN()
