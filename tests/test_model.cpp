// The model's own invariants and its handling of bad input: routing invariants, determinism,
// inference-time overrides, and clear one-line errors for broken configs and checkpoints.
#include <filesystem>
#include <set>

#include <nlohmann/json.hpp>

#include "check.hpp"
#include "generate.hpp"
#include "model.hpp"
#include "params.hpp"
#include "safetensors.hpp"
#include "test_util.hpp"

using namespace moelab;
using testutil::TempDir;
using testutil::tiny_config;
using testutil::write_file;
namespace fs = std::filesystem;

static const std::vector<int32_t> kTokens = {3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5};

TEST(routing_invariants_hold_for_every_family) {
  for (Family f : {Family::Mixtral, Family::Qwen2Moe, Family::Qwen3Moe, Family::Olmoe, Family::GraniteMoe}) {
    ModelConfig c = tiny_config(f);
    if (f == Family::GraniteMoe) {
      c.norm_topk_prob = true;
      c.embedding_multiplier = 12.0;
      c.attention_multiplier = 0.05;
      c.residual_multiplier = 0.22;
      c.logits_scaling = 6.0;
    }
    if (f == Family::Qwen2Moe) {
      c.qkv_bias = true;
      c.shared_ffn_size = 20;
      c.shared_expert_gate = true;
      c.norm_topk_prob = false;
    }
    if (f == Family::Qwen3Moe) c.qk_norm = QkNorm::PerHead;
    if (f == Family::Olmoe) {
      c.qk_norm = QkNorm::Whole;
      c.clip_qkv = 0.5;
    }
    Model m = Model::random(c, 11, make_eigen_backend(), 0.2f);
    RoutingTrace trace;
    m.forward_full(kTokens, &trace);
    CHECK_EQ(int64_t(trace.layers().size()), c.num_moe_layers());
    for (const auto& L : trace.layers()) {
      CHECK_EQ(L.tokens(), int64_t(kTokens.size()));
      // The router's input is RMSNorm output with unit weights: RMS 1, so length sqrt(H).
      for (float n : L.input_norm) CHECK_NEAR(n, std::sqrt(double(c.hidden_size)), 1e-3);
      for (int64_t t = 0; t < L.tokens(); ++t) {
        const float* p = &L.probs[size_t(t * L.experts)];
        double psum = 0;
        for (int64_t e = 0; e < L.experts; ++e) psum += p[e];
        CHECK_NEAR(psum, 1.0, 1e-5);
        std::set<int32_t> chosen;
        double wsum = 0, pk = 0;
        float kth = 2.0f;
        for (int64_t k = 0; k < L.top_k; ++k) {
          const int32_t e = L.ids[size_t(t * L.top_k + k)];
          chosen.insert(e);
          wsum += L.weights[size_t(t * L.top_k + k)];
          pk += p[e];
          kth = std::min(kth, p[e]);
        }
        CHECK_EQ(int64_t(chosen.size()), L.top_k);  // distinct experts
        for (int64_t e = 0; e < L.experts; ++e)     // the chosen are the most probable
          if (!chosen.count(int32_t(e))) CHECK(p[e] <= kth);
        CHECK_NEAR(wsum, c.norm_topk_prob ? 1.0 : pk, 1e-5);
      }
    }
  }
}

TEST(same_seed_same_model_same_outputs) {
  const ModelConfig c = tiny_config();
  Model a = Model::random(c, 5, make_eigen_backend()), b = Model::random(c, 5, make_eigen_backend()),
        d = Model::random(c, 6, make_eigen_backend());
  CHECK(a.forward_full(kTokens) == b.forward_full(kTokens));
  CHECK(a.forward_full(kTokens) != d.forward_full(kTokens));
  SamplingOptions opt{0.9f, 0.95f, 42};
  CHECK(generate(a, {1, 2, 3}, 12, opt) == generate(b, {1, 2, 3}, 12, opt));
}

TEST(overrides_ban_force_and_change_top_k) {
  ModelConfig c = tiny_config();
  c.num_experts = 6;
  Model m = Model::random(c, 3, make_eigen_backend(), 0.3f);
  KvCache cache = m.new_cache(32);
  RoutingOverrides ov;
  ov.banned = {0, 2};
  RoutingTrace trace;
  m.forward(kTokens, cache, &trace, &ov);
  for (const auto& L : trace.layers())
    for (int32_t e : L.ids) CHECK(e != 0 && e != 2);
  RoutingOverrides force;
  force.forced = 4;
  force.top_k = 3;
  RoutingTrace t2;
  KvCache c2 = m.new_cache(32);
  m.forward(kTokens, c2, &t2, &force);
  for (const auto& L : t2.layers()) {
    CHECK_EQ(L.top_k, int64_t(3));
    for (int64_t t = 0; t < L.tokens(); ++t) CHECK_EQ(L.ids[size_t(t * 3)], 4);
  }
}

// Banned experts are never chosen, neither by the router nor as a re-route target, and with
// fewer allowed experts than K the routing keeps only the allowed ones.
TEST(banned_experts_are_never_chosen) {
  ModelConfig c = tiny_config();
  c.num_experts = 6;
  c.top_k = 2;
  Model m = Model::random(c, 3, make_eigen_backend(), 0.3f);
  const int64_t T = int64_t(kTokens.size());
  RoutingOverrides one_left;
  one_left.banned = {0, 1, 2, 3, 5};
  RoutingTrace t1;
  m.forward_full(kTokens, &t1, &one_left);
  for (const auto& L : t1.layers()) {
    CHECK_EQ(L.top_k, int64_t(1));
    CHECK_EQ(int64_t(L.ids.size()), T);
    for (int32_t e : L.ids) CHECK_EQ(e, 4);
  }
  // Capacity with re-routing: 2 allowed experts x ceil(0.5·11·2/6) = 2 places each; the rest of
  // the 22 slots are dropped, not sent to a banned expert with room (which all of them have).
  RoutingOverrides two_left;
  two_left.banned = {0, 1, 2, 3};
  two_left.capacity = {0.5, true};
  RoutingTrace t2;
  m.forward_full(kTokens, &t2, &two_left);
  for (const auto& L : t2.layers()) {
    CHECK_EQ(L.top_k, int64_t(2));
    int64_t kept = 0;
    for (size_t i = 0; i < L.ids.size(); ++i) {
      CHECK(L.ids[i] == -1 || L.ids[i] == 4 || L.ids[i] == 5);
      CHECK_EQ(L.ids[i] == -1, L.dropped[i] == 1);
      kept += L.ids[i] >= 0;
    }
    CHECK_EQ(kept, int64_t(4));
  }
  RoutingOverrides none_left;
  none_left.banned = {0, 1, 2, 3, 4, 5};
  CHECK_THROWS_WITH(m.forward_full(kTokens, nullptr, &none_left), "every expert is banned");
}

// Capacity at inference: forward_full's drop flags are exactly what Backend::limit_capacity gives
// on the same router output, every layer, in both overflow policies; factor 0 changes nothing.
TEST(capacity_override_matches_limit_capacity) {
  ModelConfig c = tiny_config();
  c.num_experts = 6;
  c.num_layers = 3;
  Model m = Model::random(c, 3, make_eigen_backend(), 0.3f);
  Backend& b = m.backend();
  const int64_t T = int64_t(kTokens.size()), E = c.num_experts, K = c.top_k;
  RoutingTrace plain;
  const std::vector<float> plain_logits = m.forward_full(kTokens, &plain);
  RoutingOverrides none;  // capacity factor 0: no limit
  RoutingTrace unlimited;
  CHECK(m.forward_full(kTokens, &unlimited, &none) == plain_logits);
  for (const auto& L : unlimited.layers()) {
    CHECK(L.dropped == std::vector<uint8_t>(size_t(T * K), 0));
    CHECK(L.wanted == L.ids);
  }
  for (bool reroute : {false, true}) {
    RoutingOverrides ov;
    ov.capacity = {0.5, reroute};  // each expert takes ceil(0.5 · 11 · 2 / 6) = 2 of the 22 slots
    CHECK_EQ(expert_capacity(ov.capacity.factor, T, K, E), int64_t(2));
    RoutingTrace trace;
    const std::vector<float> logits = m.forward_full(kTokens, &trace, &ov);
    CHECK(logits != plain_logits);
    CHECK_EQ(int64_t(trace.layers().size()), c.num_moe_layers());
    for (const auto& L : trace.layers()) {
      // The same router output through route + limit_capacity, by hand.
      Tensor lg = b.alloc({T, E}), probs = b.alloc({T, E}), ids = b.alloc({T, K}, Elem::Int32), w = b.alloc({T, K}),
             dropped = b.alloc({T, K});
      b.upload(lg, L.logits.data());
      RouterSpec spec;
      spec.top_k = K;
      spec.renormalize = c.norm_topk_prob;
      spec.capacity = ov.capacity;
      b.route(lg, spec, probs, ids, w);
      std::vector<int32_t> wanted(size_t(T * K)), got(size_t(T * K));
      b.download(ids, wanted.data());
      b.limit_capacity(probs, spec, expert_capacity(ov.capacity.factor, T, K, E), ids, w, dropped);
      std::vector<float> flags(size_t(T * K)), weights(size_t(T * K));
      b.download(dropped, flags.data());
      b.download(ids, got.data());
      b.download(w, weights.data());
      CHECK(L.wanted == wanted);
      CHECK(L.ids == got);
      int64_t drops = 0, reroutes = 0;
      for (size_t i = 0; i < flags.size(); ++i) {
        CHECK_EQ(int(L.dropped[i]), int(flags[i]));
        CHECK_NEAR(L.weights[i], weights[i], 1e-6);
        drops += L.dropped[i] == 1;
        reroutes += L.dropped[i] == 2;
        CHECK(L.dropped[i] == 1 ? L.ids[i] == -1 : L.ids[i] >= 0);
      }
      // 22 slots, 6 experts x 2 places = 12: at least 10 slots overflow. Re-routing fills the
      // free places, so only the slots beyond the 12 places are still dropped.
      CHECK(drops + reroutes >= 10);
      if (reroute) CHECK(reroutes > 0);
      else CHECK_EQ(reroutes, int64_t(0));
    }
  }
}

// ---- bad input: each a clear error naming the file and the problem ----

static void save_tiny(const std::string& dir) { Model::random(tiny_config(), 1, make_eigen_backend()).save(dir); }

static nlohmann::json read_json(const std::string& path) { return nlohmann::json::parse(testutil::read_file(path)); }

// Shapes are checked once, by Backend's public ops, for every backend: the CPU refuses what the
// GPU refuses, before any element is touched.
TEST(backend_ops_refuse_inconsistent_shapes) {
  for (auto b : {make_eigen_backend(), make_eigen_backend_f64()}) {
    Tensor x = b->alloc({3, 4}), w = b->alloc({5, 4}), out = b->alloc({3, 5}), wrong = b->alloc({3, 6});
    b->linear(x, w, nullptr, out);  // [3,4] · [5,4]ᵀ = [3,5]
    CHECK_THROWS_WITH(b->linear(x, w, nullptr, wrong), "linear shapes");
    Tensor ids = b->alloc({3, 2}, Elem::Int32), real_ids = b->alloc({3, 2}), weights = b->alloc({3, 2});
    CHECK_THROWS_WITH(b->copy(ids, real_ids), "same size and element type");
    RouterSpec spec;
    spec.top_k = 6;  // more than the 5 experts
    Tensor probs = b->alloc({3, 5});
    CHECK_THROWS_WITH(b->route(out, spec, probs, ids, weights), "route shapes");
    spec.top_k = 2;
    b->route(out, spec, probs, ids, weights);
    CHECK_THROWS_WITH(b->route(out, spec, probs, real_ids, weights), "route shapes");  // ids must be I32
    ExpertWeights ew{b->alloc({5, 8, 4}), b->alloc({5, 8, 4}), b->alloc({5, 4, 8}), {}, {}, {}};
    Tensor y = b->alloc({3, 4});
    b->moe_experts(x, ids, weights, ew, y);
    ExpertWeights bad{b->alloc({5, 8, 4}), b->alloc({5, 8, 4}), b->alloc({5, 8, 4}), {}, {}, {}};  // down must be [E,H,F]
    CHECK_THROWS_WITH(b->moe_experts(x, ids, weights, bad, y), "moe_experts shapes");
    Tensor cache = b->alloc({4, 4});
    CHECK_THROWS_WITH(b->copy_rows(x, cache, 2), "copy_rows shapes");  // rows 2..4 of a 4-row cache
    CHECK_THROWS_WITH(b->attention(x, cache, cache, 2, 0, 1, 1, 4, y), "attention");  // 3 rows in 2 sequences
  }
}

TEST(config_errors_name_file_and_problem) {
  TempDir tmp("cfg");
  CHECK_THROWS_WITH(load_config(tmp / "nope"), "no such file");
  CHECK_THROWS_WITH(load_config(tmp.path.string()), "has no config.json");
  write_file(tmp / "bad.json", "{\"architectures\": [\"MixtralForCausalLM\"], ");
  CHECK_THROWS_WITH(load_config(tmp / "bad.json"), "malformed JSON");
  CHECK_THROWS_WITH(load_config(tmp / "bad.json"), tmp / "bad.json");
  write_file(tmp / "unknown.json", R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama"})");
  CHECK_THROWS_WITH(load_config(tmp / "unknown.json"), "unknown architecture 'LlamaForCausalLM'");
  nlohmann::json j = config_to_json(tiny_config());
  j["num_experts_per_tok"] = 9;
  write_file(tmp / "topk.json", j.dump());
  CHECK_THROWS_WITH(load_config(tmp / "topk.json"), "larger than the number of experts");
  j = config_to_json(tiny_config());
  j["num_local_experts"] = 0;
  write_file(tmp / "zero.json", j.dump());
  CHECK_THROWS_WITH(load_config(tmp / "zero.json"), "at least one expert");
  j = config_to_json(tiny_config());
  j["hidden_size"] = "wide";
  write_file(tmp / "type.json", j.dump());
  CHECK_THROWS_WITH(load_config(tmp / "type.json"), "'hidden_size' must be an integer");
  // A deeply nested value is described, not dumped (dumping it overflowed the stack).
  const std::string deep = j.dump();
  write_file(tmp / "deep.json", deep.substr(0, deep.size() - 1) + ", \"vocab_size\": " + std::string(1000000, '[') +
                                    std::string(1000000, ']') + "}");
  CHECK_THROWS_WITH(load_config(tmp / "deep.json"), "'vocab_size' must be an integer, got a list");
  // 1024 MoE layers of 4096 experts: each dimension within its cap, but the registry would list
  // 12 million tensors (gigabytes, seconds) before anything else is checked.
  j = config_to_json(tiny_config());
  j["num_hidden_layers"] = 1024;
  j["num_local_experts"] = 4096;
  write_file(tmp / "experts.json", j.dump());
  CHECK_THROWS_WITH(load_config(tmp / "experts.json"), "routed experts the lab can list");
  j = config_to_json(tiny_config(Family::Qwen2Moe));
  j["mlp_only_layers"] = std::vector<int64_t>(5000, 0);
  write_file(tmp / "mlp_only.json", j.dump());
  CHECK_THROWS_WITH(load_config(tmp / "mlp_only.json"), "'mlp_only_layers'");
  // DeepSeek sizes are checked before they are added or multiplied (a negative rope dimension
  // was accepted; a huge shared-expert count wrapped around to 0).
  const std::string ds = std::string(MOELAB_SOURCE_DIR) + "/tests/data/params/deepseek-v3/config.json";
  j = read_json(ds);
  j["qk_rope_head_dim"] = -64;
  j["qk_nope_head_dim"] = 192;
  write_file(tmp / "rope.json", j.dump());
  CHECK_THROWS_WITH(load_config(tmp / "rope.json"), "qk_rope_head_dim = -64");
  j = read_json(ds);
  j["n_shared_experts"] = int64_t(1) << 62;
  write_file(tmp / "shared.json", j.dump());
  CHECK_THROWS_WITH(load_config(tmp / "shared.json"), "n_shared_experts");
}

TEST(absurd_size_is_refused_before_allocating) {
  TempDir tmp("absurd");
  // About 500 GiB of fp32 weights: every dimension is within its cap, the total is not.
  nlohmann::json j = config_to_json(tiny_config());
  j["hidden_size"] = 8192;
  j["intermediate_size"] = 16384;
  j["num_local_experts"] = 8;
  j["num_hidden_layers"] = 40;
  j["num_attention_heads"] = 64;
  j["num_key_value_heads"] = 8;
  j["head_dim"] = 128;
  fs::create_directories(tmp / "m");
  write_file(tmp / "m/config.json", j.dump());
  const double gib = double(count_params(load_config(tmp / "m")).total) * 4 / double(1ull << 30);
  CHECK(gib > 450 && gib < 550);
  CHECK_THROWS_WITH(Model::load(tmp / "m", make_eigen_backend()), "this machine can give it");
  CHECK_THROWS_WITH(Model::load(tmp / "m", make_eigen_backend()), "config.json");
}

TEST(kv_cache_too_large_for_memory_is_refused_before_allocating) {
  // The longest context a config may ask (16M positions) of a small model with 16 layers: the
  // cache alone is 2 x 16 x 16M x (kv heads x head dim) x 4 bytes, tens of GiB: refused with its
  // size before anything is allocated.
  ModelConfig c = tiny_config();
  c.max_positions = int64_t(1) << 24;
  c.num_layers = 16;
  Model m = Model::random(c, 1, make_eigen_backend());
  CHECK(2 * 16 * (int64_t(1) << 24) * c.num_kv_heads * c.head_dim * 4 > physical_memory_bytes());
  const std::string msg = check::error_of([&] { m.new_cache(int64_t(1) << 24); });
  CHECK(msg.find("a context of 16777216 tokens needs") != std::string::npos);
  CHECK(msg.find("of KV cache for 16777216 tokens") != std::string::npos);
  CHECK(msg.find("this machine can give it") != std::string::npos);
  CHECK(m.new_cache(64).capacity == 64);  // an ordinary context still works
}

TEST(checkpoint_errors_name_file_and_tensor) {
  TempDir tmp("ckpt");
  save_tiny(tmp / "good");
  // Shape that disagrees with the config.
  fs::copy(tmp / "good", tmp / "shape");
  nlohmann::json j = read_json(tmp / "shape/config.json");
  j["intermediate_size"] = 20;
  write_file(tmp / "shape/config.json", j.dump());
  CHECK_THROWS_WITH(Model::load(tmp / "shape", make_eigen_backend()), "has shape [16, 32] but config.json implies [20, 32]");
  // Missing tensor.
  fs::copy(tmp / "good", tmp / "layers");
  j = read_json(tmp / "layers/config.json");
  j["num_hidden_layers"] = 3;
  write_file(tmp / "layers/config.json", j.dump());
  CHECK_THROWS_WITH(Model::load(tmp / "layers", make_eigen_backend()), "no tensor 'model.layers.2.input_layernorm.weight'");
  // NaN in a weight: the error names the tensor.
  ModelConfig c = tiny_config();
  Model m = Model::random(c, 1, make_eigen_backend());
  auto w = m.export_weights();
  std::vector<TensorToWrite> tw;
  const auto specs = tensor_specs(c);
  for (size_t i = 0; i < specs.size(); ++i) {
    if (specs[i].name == "model.layers.1.self_attn.k_proj.weight") w[i].second[5] = std::nanf("");
    tw.push_back({specs[i].name, specs[i].shape, w[i].second.data(), DType::BF16});
  }
  fs::create_directories(tmp / "nan");
  fs::copy(tmp / "good/config.json", tmp / "nan/config.json");
  write_safetensors(tmp / "nan/model.safetensors", tw);
  CHECK_THROWS_WITH(Model::load(tmp / "nan", make_eigen_backend()), "'model.layers.1.self_attn.k_proj.weight': holds NaN");
  // Truncated weights file.
  fs::copy(tmp / "good", tmp / "trunc");
  const std::string bytes = testutil::read_file(tmp / "trunc/model.safetensors");
  write_file(tmp / "trunc/model.safetensors", bytes.substr(0, bytes.size() / 2));
  CHECK_THROWS_WITH(Model::load(tmp / "trunc", make_eigen_backend()), "model.safetensors");
  // No weights at all.
  fs::create_directories(tmp / "empty");
  fs::copy(tmp / "good/config.json", tmp / "empty/config.json");
  CHECK_THROWS_WITH(Model::load(tmp / "empty", make_eigen_backend()), "no model.safetensors");
  // Count-only architectures are refused for running, with the reason.
  CHECK_THROWS_WITH(Model::load(std::string(MOELAB_SOURCE_DIR) + "/tests/data/params/deepseek-v3", make_eigen_backend()),
                    "parameter counts only");
}

TEST(token_ids_out_of_range_are_refused) {
  Model m = Model::random(tiny_config(), 1, make_eigen_backend());
  CHECK_THROWS_WITH(m.forward_full({1, 2, 40}), "token id 40 is out of range for a vocabulary of 40");
  CHECK_THROWS_WITH(m.forward_full({-1}), "token id -1");
  KvCache cache = m.new_cache(4);
  CHECK_THROWS_WITH(m.forward({1, 2, 3, 4, 5}, cache), "exceeds the context of 4");
}

CHECK_MAIN()
