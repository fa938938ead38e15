// The random-checkpoint generator of `bench --shape`: the real shapes' configs against the
// published config.json files in resources/real-models, the tiny shapes' files (tensor names and
// shapes counted by hand, dtype, size, values), determinism in the seed, reuse of a complete cache,
// regeneration of a partial or corrupted one, refusal of a shape that does not fit, and the models
// it writes loading as stored (bf16, memory-mapped) with the same weights as widened to fp32.
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "check.hpp"
#include "files.hpp"
#include "model.hpp"
#include "random_checkpoint.hpp"
#include "registry.hpp"
#include "safetensors.hpp"
#include "test_util.hpp"

using namespace moelab;
using testutil::read_file;
using testutil::TempDir;
namespace fs = std::filesystem;

namespace {

RandomCheckpointOptions in(const TempDir& tmp, const std::string& sub = "cache") {
  RandomCheckpointOptions o;
  o.cache_dir = tmp / sub;
  return o;
}

}  // namespace

// The real shapes are the published configs, field for field (resources/real-models holds each
// model's config.json as published on the Hugging Face hub).
TEST(real_shapes_are_the_published_configs) {
  const std::pair<const char*, const char*> pairs[] = {{"olmoe-1b-7b", "olmoe-1b-7b-0924"},
                                                       {"granite-3b-a800m", "granite-3.0-3b-a800m-base"},
                                                       {"qwen3-30b-a3b", "qwen3-30b-a3b"}};
  for (const auto& [shape, dir] : pairs) {
    const nlohmann::json published =
        read_json_file(std::string(MOELAB_SOURCE_DIR) + "/resources/real-models/" + dir + "/config.json", 1 << 20);
    CHECK(shape_config_json(shape) == published);
  }
  // The figures the issue names, by hand.
  const ModelConfig g = shape_config("granite-3b-a800m");
  CHECK_EQ(g.hidden_size, 1536);
  CHECK_EQ(g.num_layers, 32);
  CHECK_EQ(g.num_experts, 40);
  CHECK_EQ(g.top_k, 8);
  CHECK_EQ(g.expert_ffn_size, 512);
  CHECK_EQ(g.num_heads, 24);
  CHECK_EQ(g.num_kv_heads, 8);
  CHECK_EQ(g.vocab_size, 49155);
  CHECK(g.tie_word_embeddings);
  // OLMoE-1B-7B in bf16: 6,919,161,856 parameters (the published total) at 2 bytes, plus the header.
  const int64_t olmoe = random_checkpoint_bytes(shape_config("olmoe-1b-7b"));
  CHECK(olmoe > int64_t(6919161856) * 2 && olmoe < int64_t(6919161856) * 2 + (1 << 20));
  CHECK_THROWS_WITH(shape_config("olmoe-2b"), "not a known shape");
}

TEST(tiny_shape_files_names_shapes_dtype_values) {
  TempDir tmp("randckpt-files");
  const RandomCheckpoint r = ensure_random_checkpoint("olmoe-tiny", in(tmp));
  CHECK(r.generated);
  CHECK_EQ(r.dir, (fs::path(tmp / "cache") / "olmoe-tiny").string());
  SafetensorsFile f(r.dir + "/model.safetensors");
  // embed + 2 layers × (2 norms + q,k,v,o + q_norm,k_norm + router + 8 experts × 3) + norm + lm_head
  CHECK_EQ(f.tensors().size(), size_t(1 + 2 * (2 + 4 + 2 + 1 + 24) + 2));
  int64_t data = 0;
  for (const TensorView& t : f.tensors()) {
    CHECK(t.dtype == DType::BF16);
    data += t.nbytes;
  }
  const auto shape_of = [&](const char* name) {
    const TensorView* t = f.find(name);
    return t ? t->shape : std::vector<int64_t>{};
  };
  CHECK(shape_of("model.embed_tokens.weight") == (std::vector<int64_t>{512, 64}));
  CHECK(shape_of("lm_head.weight") == (std::vector<int64_t>{512, 64}));
  CHECK(shape_of("model.layers.1.mlp.experts.7.down_proj.weight") == (std::vector<int64_t>{64, 32}));
  CHECK(shape_of("model.layers.0.mlp.experts.0.gate_proj.weight") == (std::vector<int64_t>{32, 64}));
  CHECK(shape_of("model.layers.0.self_attn.q_norm.weight") == (std::vector<int64_t>{64}));
  CHECK(shape_of("model.layers.1.mlp.gate.weight") == (std::vector<int64_t>{8, 64}));
  CHECK_EQ(int64_t(fs::file_size(r.dir + "/model.safetensors")), r.bytes);
  CHECK(r.bytes > data && r.bytes < data + 16384);  // the data plus a header
  // Norms are exactly 1; the rest uniform with standard deviation 0.02 (|v| ≤ 0.02·√3).
  std::vector<float> v;
  const TensorView* norm = f.find("model.layers.1.post_attention_layernorm.weight");
  v.resize(size_t(norm->numel()));
  tensor_to_float(*norm, v.data());
  for (float x : v) CHECK_EQ(x, 1.0f);
  const TensorView* emb = f.find("model.embed_tokens.weight");
  v.resize(size_t(emb->numel()));
  tensor_to_float(*emb, v.data());
  double sum = 0, sq = 0, maxabs = 0;
  for (float x : v) {
    sum += x;
    sq += double(x) * x;
    maxabs = std::max(maxabs, double(std::fabs(x)));
  }
  const double mean = sum / double(v.size()), sd = std::sqrt(sq / double(v.size()) - mean * mean);
  CHECK(std::fabs(mean) < 0.001);
  CHECK_NEAR(sd, 0.02, 0.001);
  CHECK(maxabs <= 0.0347);
  // config.json round-trips: the lab reads back the shape's config.
  const ModelConfig back = load_config(r.dir), want = shape_config("olmoe-tiny");
  CHECK_EQ(back.hidden_size, want.hidden_size);
  CHECK_EQ(back.num_experts, want.num_experts);
  CHECK_EQ(back.top_k, want.top_k);
  CHECK_EQ(back.vocab_size, want.vocab_size);
  CHECK(back.family == Family::Olmoe && back.qk_norm == QkNorm::Whole && !back.norm_topk_prob);
  CHECK_EQ(back.dtype, std::string("bfloat16"));
}

TEST(deterministic_in_the_seed_and_reused) {
  TempDir tmp("randckpt-seed");
  const RandomCheckpoint a = ensure_random_checkpoint("granite-tiny", in(tmp, "a"));
  const RandomCheckpoint b = ensure_random_checkpoint("granite-tiny", in(tmp, "b"));
  RandomCheckpointOptions o = in(tmp, "c");
  o.seed = 1;
  const RandomCheckpoint c = ensure_random_checkpoint("granite-tiny", o);
  const std::string wa = read_file(a.dir + "/model.safetensors");
  CHECK(wa == read_file(b.dir + "/model.safetensors"));
  CHECK(wa != read_file(c.dir + "/model.safetensors"));
  CHECK_EQ(wa.size(), read_file(c.dir + "/model.safetensors").size());
  // A second call finds the complete cache: nothing written.
  const auto before = fs::last_write_time(a.dir + "/model.safetensors");
  const RandomCheckpoint again = ensure_random_checkpoint("granite-tiny", in(tmp, "a"));
  CHECK(!again.generated);
  CHECK(fs::last_write_time(a.dir + "/model.safetensors") == before);
  // Another seed in the same cache is a different checkpoint: rewritten.
  o = in(tmp, "a");
  o.seed = 1;
  CHECK(ensure_random_checkpoint("granite-tiny", o).generated);
  CHECK(read_file(a.dir + "/model.safetensors") == read_file(c.dir + "/model.safetensors"));
  // No temporary folder is left behind.
  int entries = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(tmp / "a")) ++entries;
  CHECK_EQ(entries, 1);
}

TEST(partial_or_corrupted_cache_is_rewritten) {
  TempDir tmp("randckpt-partial");
  const RandomCheckpoint r = ensure_random_checkpoint("olmoe-tiny", in(tmp));
  const std::string good = read_file(r.dir + "/model.safetensors");
  // Truncated weights (an interrupted copy): rewritten whole.
  fs::resize_file(r.dir + "/model.safetensors", good.size() / 2);
  CHECK(ensure_random_checkpoint("olmoe-tiny", in(tmp)).generated);
  CHECK(read_file(r.dir + "/model.safetensors") == good);
  // No marker (a folder from an older or interrupted writer), or a garbled one: rewritten.
  fs::remove(r.dir + "/moelab-shape.json");
  CHECK(ensure_random_checkpoint("olmoe-tiny", in(tmp)).generated);
  testutil::write_file(r.dir + "/moelab-shape.json", "{\"generator_version\": ");
  CHECK(ensure_random_checkpoint("olmoe-tiny", in(tmp)).generated);
  // An older generator's marker: rewritten.
  testutil::write_file(r.dir + "/moelab-shape.json",
                       "{\"generator_version\": 0, \"shape\": \"olmoe-tiny\", \"seed\": 0, \"weights_bytes\": " +
                           std::to_string(r.bytes) + "}");
  CHECK(ensure_random_checkpoint("olmoe-tiny", in(tmp)).generated);
  CHECK(read_file(r.dir + "/model.safetensors") == good);
  CHECK(!ensure_random_checkpoint("olmoe-tiny", in(tmp)).generated);
}

TEST(shapes_that_do_not_fit_are_refused_before_writing) {
  TempDir tmp("randckpt-refuse");
  // Qwen3-30B-A3B (~61 GB in bf16) on a machine of 23.5 GiB, as here.
  RandomCheckpointOptions o = in(tmp);
  o.memory_bytes = int64_t(235) * (int64_t(1) << 30) / 10;
  CHECK_THROWS_WITH(ensure_random_checkpoint("qwen3-30b-a3b", o), "56.9 GiB");
  CHECK_THROWS_WITH(ensure_random_checkpoint("qwen3-30b-a3b", o), "refused");
  // The memory check counts the spare the run needs beside the weights.
  o.memory_bytes = ensure_random_checkpoint("olmoe-tiny", in(tmp, "ok")).bytes + o.memory_spare - 1;
  CHECK_THROWS_WITH(ensure_random_checkpoint("olmoe-tiny", o), "refused");
  // Not enough disk.
  o = in(tmp);
  o.disk_free_bytes = 1000;
  CHECK_THROWS_WITH(ensure_random_checkpoint("olmoe-tiny", o), "of disk");
  CHECK(!fs::exists(tmp / "cache/olmoe-tiny"));
}

// The three families load as stored (bf16 in the memory map, GraniteMoE's stacked experts viewed
// in place) with exactly the weights the fp32 load reads, and run to finite logits.
TEST(tiny_shapes_load_as_stored_and_run) {
  TempDir tmp("randckpt-load");
  for (const char* shape : {"olmoe-tiny", "granite-tiny", "qwen3-tiny"}) {
    const RandomCheckpoint r = ensure_random_checkpoint(shape, in(tmp));
    Model stored = Model::load(r.dir, make_eigen_backend(), false);
    Model wide = Model::load(r.dir, make_eigen_backend(), true);
    CHECK(stored.stored_weight_bytes() > 0);
    CHECK_EQ(wide.stored_weight_bytes(), int64_t(0));
    const auto a = stored.export_weights(), b = wide.export_weights();
    CHECK_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size() && i < b.size(); ++i)
      if (a[i].second != b[i].second) CHECK_EQ(a[i].first, std::string("(differs) ") + b[i].first);
    const std::vector<int32_t> tokens = {1, 5, 9, 200, 3};
    const std::vector<float> ls = stored.forward_full(tokens), lw = wide.forward_full(tokens);
    CHECK_EQ(ls.size(), size_t(5 * stored.config().vocab_size));
    double diff = 0, mag = 0;
    for (size_t i = 0; i < ls.size(); ++i) {
      CHECK(std::isfinite(ls[i]));
      diff = std::max(diff, double(std::fabs(ls[i] - lw[i])));
      mag = std::max(mag, double(std::fabs(lw[i])));
    }
    CHECK(mag > 0 && diff <= 1e-4 * mag);  // the same weights, fp32 sums either way
  }
}

CHECK_MAIN()
