// Every field of a runnable family's transformers configuration class is implemented or refused
// (docs/config-fields.md): the refused ones fail in one line naming the field and its value, the
// implemented ones are read as transformers reads them, and GraniteMoE's fields reach the model.
#include <cmath>
#include <string>

#include <nlohmann/json.hpp>

#include "check.hpp"
#include "files.hpp"
#include "model.hpp"
#include "train_step.hpp"
#include "test_util.hpp"

using namespace moelab;
using nlohmann::json;
using testutil::tiny_config;

static const std::string kSrc = "edited/config.json";

static json config_of(Family f) { return config_to_json(tiny_config(f)); }

static json published(const std::string& name) {
  return read_json_file(std::string(MOELAB_SOURCE_DIR) + "/tests/data/params/" + name + "/config.json", 1 << 20);
}

// The error of parsing j: it must be one line naming the file and every needle.
static void check_refused(const json& j, std::initializer_list<std::string> needles) {
  const std::string msg = check::error_of([&] { parse_config(j, kSrc); });
  if (msg.find('\n') != std::string::npos) check::report(__FILE__, __LINE__, "not one line: " + msg);
  if (msg.find(kSrc) == std::string::npos) check::report(__FILE__, __LINE__, "does not name the file: " + msg);
  for (const std::string& n : needles)
    if (msg.find(n) == std::string::npos) check::report(__FILE__, __LINE__, "'" + n + "' not in: '" + msg + "'");
}

static const Family kRunnable[] = {Family::Mixtral, Family::Qwen2Moe, Family::Qwen3Moe, Family::Olmoe,
                                   Family::GraniteMoe};

TEST(rope_scaling_is_read_or_refused_with_its_type) {
  for (Family f : kRunnable) {
    json j = config_of(f);
    // linear and llama3 are implemented (the reference fixtures qwen3_moe_rope_linear_f32 and
    // mixtral_rope_llama3_f32 check the numbers), under either key (the old "type" spelling too)
    j["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
    ModelConfig c = parse_config(j, kSrc);
    CHECK(c.rope_scaling.type == RopeType::Linear);
    CHECK_EQ(c.rope_scaling.factor, 2.0);
    CHECK(parse_config(config_to_json(c), kSrc).rope_scaling == c.rope_scaling);  // written back
    j["rope_scaling"] = nullptr;
    j["rope_parameters"] = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                            {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 16}};
    c = parse_config(j, kSrc);
    CHECK(c.rope_scaling.type == RopeType::Llama3);
    CHECK_EQ(c.rope_scaling.original_max_positions, 16);
    CHECK(parse_config(config_to_json(c), kSrc).rope_scaling == c.rope_scaling);
    j["rope_parameters"].erase("low_freq_factor");
    check_refused(j, {"'rope_parameters' of rope_type \"llama3\" needs 'low_freq_factor'"});
    j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", 2.0}};
    j["rope_parameters"] = {{"rope_type", "linear"}, {"factor", 3.0}};
    check_refused(j, {"ask for different RoPE scalings"});
    // dynamic NTK equals the plain RoPE up to max_position_embeddings, which the lab never exceeds
    j["rope_parameters"] = nullptr;
    j["rope_scaling"] = {{"rope_type", "dynamic"}, {"factor", 4.0}};
    CHECK(parse_config(j, kSrc).rope_scaling.type == RopeType::Default);
    j["rope_scaling"]["original_max_position_embeddings"] = 16;  // max_position_embeddings is 64
    check_refused(j, {"'rope_scaling.original_max_position_embeddings' = 16", "dynamic NTK"});
    j["rope_scaling"] = nullptr;
    j["rope_parameters"] = {{"rope_type", "yarn"}, {"factor", 4.0}, {"rope_theta", 1e6}};
    check_refused(j, {"'rope_parameters' = {rope_type: \"yarn\" (factor 4.0)}", "not implemented"});
    j["rope_parameters"] = {{"rope_type", "longrope"}, {"factor", 4.0}};
    check_refused(j, {"'rope_parameters'", "longrope"});
    j["rope_parameters"] = {{"rope_type", "default"}, {"partial_rotary_factor", 0.5}};
    check_refused(j, {"partial_rotary_factor", "0.5"});
    // The default RoPE in either place is accepted, and transformers 5's rope_parameters carries theta.
    j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 500000.0}};
    j.erase("rope_theta");
    CHECK_EQ(parse_config(j, kSrc).rope_theta, 500000.0);
    j["rope_scaling"] = {{"type", "default"}};
    CHECK_EQ(parse_config(j, kSrc).rope_theta, 500000.0);
  }
  // Count-only families keep their scaled RoPE: their parameters are still counted.
  CHECK(!parse_config(published("deepseek-v3"), "deepseek").runnable());
  CHECK(!parse_config(published("gpt-oss-20b"), "gpt-oss").runnable());
}

TEST(other_unimplemented_fields_are_refused) {
  for (Family f : kRunnable) {
    json j = config_of(f);
    j["hidden_act"] = "gelu";
    check_refused(j, {"'hidden_act' = \"gelu\"", "silu"});
    j["hidden_act"] = "swish";  // transformers' ACT2FN maps swish to SiLU
    CHECK(parse_config(j, kSrc).runnable());
    j = config_of(f);
    j["quantization_config"] = {{"quant_method", "fp8"}};
    check_refused(j, {"'quantization_config'", "fp8"});
  }
  // head_dim other than hidden_size / heads, where the family's attention does not read it
  for (Family f : {Family::Qwen2Moe, Family::Olmoe, Family::GraniteMoe}) {
    json j = config_of(f);
    j["head_dim"] = 16;  // 32 / 4 = 8
    check_refused(j, {"'head_dim' = 16", "= 8"});
  }
  json j = config_of(Family::Qwen2Moe);
  j["layer_types"] = {"full_attention", "chunked_attention"};
  check_refused(j, {"'layer_types'", "chunked_attention"});
  j = config_of(Family::GraniteMoe);
  j["position_embedding_type"] = "alibi";
  check_refused(j, {"'position_embedding_type' = \"alibi\""});
}

TEST(fields_are_read_as_transformers_reads_them) {
  // Absent keys take the configuration class's defaults.
  json j = config_of(Family::Qwen2Moe);
  for (const char* k : {"num_experts", "num_experts_per_tok", "shared_expert_intermediate_size"}) j.erase(k);
  const ModelConfig d = parse_config(j, kSrc);
  CHECK_EQ(d.num_experts, 60);
  CHECK_EQ(d.top_k, 4);
  CHECK_EQ(d.shared_ffn_size, 5632);
  j = config_of(Family::Qwen2Moe);
  j["qkv_bias"] = false;  // a Qwen2MoeConfig field since transformers 5
  CHECK(!parse_config(j, kSrc).qkv_bias);
  j.erase("qkv_bias");
  CHECK(parse_config(j, kSrc).qkv_bias);
  // Qwen's sliding window only with use_sliding_window (4096 when the key is absent).
  j["use_sliding_window"] = false;
  j["sliding_window"] = 16;
  CHECK_EQ(parse_config(j, kSrc).sliding_window, 0);
  j["use_sliding_window"] = true;
  CHECK_EQ(parse_config(j, kSrc).sliding_window, 16);
  j.erase("sliding_window");
  CHECK_EQ(parse_config(j, kSrc).sliding_window, 4096);
  j["sliding_window"] = nullptr;
  CHECK_EQ(parse_config(j, kSrc).sliding_window, 0);
  // Mixtral's whenever it is set; published Qwen configs carry a window that is off.
  j = config_of(Family::Mixtral);
  j["sliding_window"] = 4096;
  CHECK_EQ(parse_config(j, kSrc).sliding_window, 4096);
  CHECK_EQ(parse_config(published("qwen1.5-moe-a2.7b"), "qwen").sliding_window, 0);
  // The training-only fields are read (and refused by the trainer, below).
  j["router_jitter_noise"] = 0.01;
  j["attention_dropout"] = 0.1;
  const ModelConfig c = parse_config(j, kSrc);
  CHECK_EQ(c.router_jitter_noise, 0.01);
  CHECK_EQ(c.attention_dropout, 0.1);
}

TEST(sliding_window_runs_contexts_up_to_the_window_only) {
  json j = config_of(Family::Mixtral);
  j["sliding_window"] = 6;
  Model windowed(parse_config(j, kSrc), make_eigen_backend());
  const std::vector<int32_t> six = {3, 1, 4, 1, 5, 9};
  CHECK_EQ(windowed.forward_full(six).size(), size_t(6 * 40));  // within the window: nothing changes
  CHECK_THROWS_WITH(windowed.new_cache(7), "sliding_window = 6");
  CHECK_THROWS_WITH(windowed.forward_full({3, 1, 4, 1, 5, 9, 2}), "longer than sliding_window = 6");
  // config.json written by the lab keeps the window
  CHECK_EQ(parse_config(config_to_json(windowed.config()), kSrc).sliding_window, 6);
}

TEST(training_refuses_what_it_cannot_train) {
  CHECK_THROWS_WITH(check_trainable(tiny_config(Family::GraniteMoe)), "training GraniteMoE models is not implemented");
  ModelConfig c = tiny_config();
  check_trainable(c);  // a plain Mixtral trains
  c.attention_dropout = 0.1;
  CHECK_THROWS_WITH(check_trainable(c), "'attention_dropout' = 0.1");
  c.attention_dropout = 0.0;
  c.router_jitter_noise = 0.01;
  CHECK_THROWS_WITH(check_trainable(c), "'router_jitter_noise' = 0.01");
}

TEST(granite_fields_are_read_and_written) {
  const ModelConfig c = parse_config(published("granite-3.0-1b-a400m-base"), "granite");
  CHECK(c.runnable());
  CHECK_EQ(c.embedding_multiplier, 12.0);
  CHECK_EQ(c.attention_multiplier, 0.015625);
  CHECK_EQ(c.residual_multiplier, 0.22);
  CHECK_EQ(c.logits_scaling, 6.0);
  CHECK_EQ(c.head_dim, 64);
  CHECK_EQ(c.num_experts, 32);
  CHECK_EQ(c.top_k, 8);
  CHECK(c.tie_word_embeddings && c.norm_topk_prob);
  const ModelConfig back = parse_config(config_to_json(c), "written");
  CHECK_EQ(back.embedding_multiplier, 12.0);
  CHECK_EQ(back.attention_multiplier, 0.015625);
  CHECK_EQ(back.residual_multiplier, 0.22);
  CHECK_EQ(back.logits_scaling, 6.0);
  CHECK(back.tie_word_embeddings);
  // The config class's defaults where a key is absent: untied, attention scale 1.0.
  json j = config_of(Family::GraniteMoe);
  j.erase("tie_word_embeddings");
  j.erase("attention_multiplier");
  CHECK(!parse_config(j, kSrc).tie_word_embeddings);
  CHECK_EQ(parse_config(j, kSrc).attention_multiplier, 1.0);
  j["attention_multiplier"] = 0.0;
  check_refused(j, {"attention_multiplier", "must be positive"});
  j["attention_multiplier"] = 0.1;
  j["logits_scaling"] = 0.0;
  check_refused(j, {"logits_scaling"});
}

// A lab-made GraniteMoE saves input_linear [E,2F,H] and output_linear [E,H,F] and loads them back
// into the same numbers (the gate and up halves split and joined again).
TEST(granite_checkpoint_round_trips) {
  const ModelConfig c = testutil::granitemoe_multipliers();
  Model m = Model::random(c, 5, make_eigen_backend(), 0.2f);
  testutil::TempDir tmp("granite");
  m.save(tmp.path.string());
  Model back = Model::load(tmp.path.string(), make_eigen_backend());
  const std::vector<int32_t> tokens = {3, 1, 4, 1, 5, 9, 2, 6};
  CHECK(m.forward_full(tokens) == back.forward_full(tokens));
  const auto a = m.export_weights(), b = back.export_weights();
  CHECK_EQ(a.size(), b.size());
  int fused = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    CHECK(a[i] == b[i]);
    fused += a[i].first == "model.layers.1.block_sparse_moe.input_linear.weight" &&
             a[i].second.size() == size_t(4 * 2 * 16 * 32);  // [E, 2F, H]
  }
  CHECK_EQ(fused, 1);
}

CHECK_MAIN()
