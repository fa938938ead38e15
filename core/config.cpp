#include "config.hpp"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "error.hpp"
#include "files.hpp"

namespace moelab {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// Caps on what a config may ask for (validate before allocating anything).
constexpr int64_t kMaxVocab = 4 << 20;
constexpr int64_t kMaxHidden = 1 << 16;
constexpr int64_t kMaxLayers = 1024;
constexpr int64_t kMaxHeads = 1024;
constexpr int64_t kMaxExperts = 4096;
constexpr int64_t kMaxFfn = 1 << 20;
constexpr int64_t kMaxPositions = 1 << 24;
// Routed experts over all MoE layers: the registry lists every expert's tensors one by one, so
// 1024 layers of 4096 experts would be 12 million entries (gigabytes) before anything is checked.
// The largest published models have about 15,000 (DeepSeek-V3: 58 x 256).
constexpr int64_t kMaxRoutedExperts = 1 << 16;

// A value as an error message shows it: scalars as written (shortened), lists and objects by
// kind only (dumping a hostile, deeply nested value would overflow the stack).
std::string shown(const json& v) {
  if (v.is_array()) return "a list";
  if (v.is_object()) return "an object";
  std::string s = v.dump();
  return s.size() > 40 ? s.substr(0, 37) + "..." : s;
}

int64_t get_int(const json& j, const char* key, int64_t dflt, const std::string& src) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return dflt;
  if (it->is_number_integer() || it->is_number_unsigned()) return it->get<int64_t>();
  if (it->is_number_float()) {
    double v = it->get<double>();
    if (std::fabs(v) < 9e18 && v == static_cast<double>(static_cast<int64_t>(v))) return static_cast<int64_t>(v);
  }
  fail(src, std::string("'") + key + "' must be an integer, got " + shown(*it));
}

double get_double(const json& j, const char* key, double dflt, const std::string& src) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return dflt;
  if (!it->is_number()) fail(src, std::string("'") + key + "' must be a number, got " + shown(*it));
  return it->get<double>();
}

bool get_bool(const json& j, const char* key, bool dflt, const std::string& src) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return dflt;
  if (!it->is_boolean()) fail(src, std::string("'") + key + "' must be true or false, got " + shown(*it));
  return it->get<bool>();
}

std::string get_string(const json& j, const char* key, const std::string& dflt, const std::string& src) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return dflt;
  if (!it->is_string()) fail(src, std::string("'") + key + "' must be a string, got " + shown(*it));
  return it->get<std::string>();
}

void check_range(int64_t v, int64_t lo, int64_t hi, const char* what, const std::string& src) {
  if (v < lo || v > hi)
    fail(src, std::string(what) + " = " + std::to_string(v) + " is outside [" + std::to_string(lo) +
                  ", " + std::to_string(hi) + "]");
}

// A refused field: one line naming the field, its value and why the lab does not run it.
[[noreturn]] void refuse(const std::string& src, const std::string& field, const std::string& value,
                         const std::string& why) {
  fail(src, "'" + field + "' = " + value + ": " + why);
}

// One RoPE settings object (rope_scaling, or rope_parameters in transformers 5): the static
// scalings rope.hpp implements (linear, llama3), "dynamic" (NTK) where it equals the plain RoPE,
// and a one-line refusal for the rest (yarn, longrope, ...).
RopeScaling parse_rope_scaling(const json& r, const char* key, int64_t max_positions, const std::string& src) {
  const std::string type = get_string(r, "rope_type", get_string(r, "type", "default", src), src);
  auto required = [&](const char* name) {
    if (!r.contains(name) || r[name].is_null())
      fail(src, std::string("'") + key + "' of rope_type \"" + type + "\" needs '" + name + "'");
    return get_double(r, name, 0.0, src);
  };
  const double partial = get_double(r, "partial_rotary_factor", 1.0, src);
  if (partial != 1.0)
    refuse(src, std::string(key) + ".partial_rotary_factor", shown(r["partial_rotary_factor"]),
           "partial rotary embeddings are not implemented");
  RopeScaling s;
  if (type == "default") return s;
  if (type == "dynamic") {
    // Dynamic NTK changes the frequencies only for sequences longer than the pre-training context
    // (max_position_embeddings, or original_max_position_embeddings where given), and the lab
    // never runs a context longer than max_position_embeddings.
    const int64_t original = get_int(r, "original_max_position_embeddings", max_positions, src);
    if (original < max_positions)
      refuse(src, std::string(key) + ".original_max_position_embeddings", std::to_string(original),
             "dynamic NTK scaling below max_position_embeddings (" + std::to_string(max_positions) +
                 ") is not implemented");
    return s;
  }
  if (type == "linear" || type == "llama3") {
    s.type = type == "linear" ? RopeType::Linear : RopeType::Llama3;
    s.factor = required("factor");
    if (!(s.factor > 0.0 && s.factor < 1e6)) refuse(src, std::string(key) + ".factor", shown(r["factor"]), "must be positive");
    if (s.type == RopeType::Llama3) {
      s.low_freq_factor = required("low_freq_factor");
      s.high_freq_factor = required("high_freq_factor");
      required("original_max_position_embeddings");
      s.original_max_positions = get_int(r, "original_max_position_embeddings", 0, src);
      if (!(s.high_freq_factor > s.low_freq_factor && s.low_freq_factor > 0.0) || s.original_max_positions < 1)
        fail(src, std::string("'") + key + "' of rope_type \"llama3\" needs 0 < low_freq_factor < high_freq_factor "
                                           "and original_max_position_embeddings >= 1");
    }
    return s;
  }
  std::string factor;
  if (auto f = r.find("factor"); f != r.end()) factor = " (factor " + shown(*f) + ")";
  refuse(src, key, "{rope_type: \"" + type + "\"" + factor + "}",
         "this RoPE scaling is not implemented (default, linear, dynamic and llama3 are)");
}

// The RoPE settings: rope_theta at the top level (transformers 4) or inside rope_parameters
// (transformers 5), and the scaling of rope_scaling / rope_parameters where the lab runs the model
// (`runnable`); count-only families just read theta.
double parse_rope(const json& j, ModelConfig& c, double default_theta, bool runnable, const std::string& src) {
  double theta = get_double(j, "rope_theta", 0.0, src);
  bool seen = false;
  for (const char* key : {"rope_scaling", "rope_parameters"}) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) continue;
    if (!it->is_object()) fail(src, std::string("'") + key + "' must be an object, got " + shown(*it));
    if (theta == 0.0) theta = get_double(*it, "rope_theta", 0.0, src);
    if (!runnable) continue;
    const RopeScaling s = parse_rope_scaling(*it, key, c.max_positions, src);
    if (seen && s.type != RopeType::Default && !(s == c.rope_scaling))
      fail(src, "'rope_scaling' and 'rope_parameters' ask for different RoPE scalings");
    if (s.type != RopeType::Default || !seen) c.rope_scaling = s;
    seen = seen || s.type != RopeType::Default;
  }
  return theta == 0.0 ? default_theta : theta;
}

// Fields a runnable family's config may carry that change the computation and are not
// implemented: refused here (docs/config-fields.md lists every field and its status).
void refuse_unimplemented(const json& j, const std::string& src) {
  const std::string act = get_string(j, "hidden_act", "silu", src);
  if (act != "silu" && act != "swish")  // transformers' ACT2FN maps both to SiLU
    refuse(src, "hidden_act", "\"" + act + "\"", "the lab's experts and MLPs use silu only");
  if (auto it = j.find("quantization_config"); it != j.end() && !it->is_null()) {
    std::string method = it->is_object() && it->contains("quant_method") ? shown((*it)["quant_method"]) : shown(*it);
    refuse(src, "quantization_config", "{quant_method: " + method + "}", "quantized checkpoints are not implemented");
  }
}

// Sliding-window attention: the window when the config turns it on, else 0.
int64_t parse_sliding_window(const json& j, Family family, const std::string& src) {
  if (family == Family::Mixtral) return get_int(j, "sliding_window", 0, src);  // applied whenever it is not null
  // Qwen's default window is 4096 when the key is absent; null means none.
  const int64_t window = j.contains("sliding_window") && j["sliding_window"].is_null()
                             ? 0
                             : get_int(j, "sliding_window", 4096, src);
  // Qwen2-MoE / Qwen3-MoE: only with use_sliding_window (then on some layers, by
  // max_window_layers or layer_types; the lab's context cap makes the choice of layers moot).
  if (auto it = j.find("layer_types"); it != j.end() && !it->is_null()) {
    if (!it->is_array()) fail(src, "'layer_types' must be a list, got " + shown(*it));
    for (const auto& t : *it)
      if (!t.is_string() || (t.get<std::string>() != "full_attention" && t.get<std::string>() != "sliding_attention"))
        refuse(src, "layer_types", "[..., " + shown(t) + ", ...]", "only full_attention and sliding_attention layers exist");
  }
  return get_bool(j, "use_sliding_window", false, src) ? window : 0;
}

struct ArchInfo {
  const char* architecture;
  const char* model_type;
  Family family;
};
constexpr ArchInfo kArchs[] = {
    {"MixtralForCausalLM", "mixtral", Family::Mixtral},
    {"Qwen2MoeForCausalLM", "qwen2_moe", Family::Qwen2Moe},
    {"Qwen3MoeForCausalLM", "qwen3_moe", Family::Qwen3Moe},
    {"OlmoeForCausalLM", "olmoe", Family::Olmoe},
    {"DeepseekV2ForCausalLM", "deepseek_v2", Family::DeepseekV2},
    {"DeepseekV3ForCausalLM", "deepseek_v3", Family::DeepseekV3},
    {"GptOssForCausalLM", "gpt_oss", Family::GptOss},
    {"GraniteMoeForCausalLM", "granitemoe", Family::GraniteMoe},
};

}  // namespace

const char* family_name(Family f) {
  for (const auto& a : kArchs)
    if (a.family == f) return a.architecture;
  return "?";
}

bool ModelConfig::is_moe_layer(int64_t layer) const {
  if (num_experts <= 0) return false;
  switch (family) {
    case Family::Qwen2Moe:
    case Family::Qwen3Moe:
      if (std::find(mlp_only_layers.begin(), mlp_only_layers.end(), layer) != mlp_only_layers.end())
        return false;
      return decoder_sparse_step > 0 && (layer + 1) % decoder_sparse_step == 0;
    case Family::DeepseekV2:
    case Family::DeepseekV3:
      return layer >= first_dense_layers;
    default:
      return true;
  }
}

int64_t ModelConfig::num_moe_layers() const {
  int64_t n = 0;
  for (int64_t l = 0; l < num_layers; ++l) n += is_moe_layer(l) ? 1 : 0;
  return n;
}

bool ModelConfig::runnable() const {
  return family == Family::Mixtral || family == Family::Qwen2Moe || family == Family::Qwen3Moe ||
         family == Family::Olmoe || family == Family::GraniteMoe;
}

bool ModelConfig::has_multipliers() const {
  return embedding_multiplier != 1.0 || attention_multiplier != 0.0 || residual_multiplier != 1.0 ||
         logits_scaling != 1.0;
}

bool is_model_config_json(const json& j) {
  return j.is_object() && !j.contains("model") && (j.contains("architectures") || j.contains("model_type"));
}

ModelConfig load_config(const std::string& path) {
  const std::string file = config_path_of(path);
  return parse_config(read_json_file(file, 16 << 20), file);
}

void set_router_kind(ModelConfig& c, const std::string& kind, const std::string& src) {
  c.router_noise = kind == "noisy";
  const bool sigmoid = kind == "sigmoid";
  c.scoring = sigmoid ? RouterScoring::Sigmoid : RouterScoring::Softmax;
  c.score_correction_bias = sigmoid;
  if (kind != "softmax" && kind != "noisy" && !sigmoid)
    fail(src, "the router must be softmax, noisy or sigmoid, not '" + kind + "'");
}

ModelConfig parse_config(const json& j, const std::string& src) {
  if (!j.is_object()) fail(src, "config must be a JSON object");
  ModelConfig c;
  std::string arch;
  if (auto it = j.find("architectures"); it != j.end() && it->is_array() && !it->empty() && (*it)[0].is_string())
    arch = (*it)[0].get<std::string>();
  std::string model_type = get_string(j, "model_type", "", src);
  const ArchInfo* info = nullptr;
  for (const auto& a : kArchs)
    if (arch == a.architecture || (arch.empty() && model_type == a.model_type)) info = &a;
  if (!info) {
    std::string known;
    for (const auto& a : kArchs) known += std::string(known.empty() ? "" : ", ") + a.architecture;
    fail(src, "unknown architecture '" + (arch.empty() ? model_type : arch) + "' (known: " + known + ")");
  }
  c.family = info->family;
  c.architecture = info->architecture;
  c.model_type = info->model_type;
  c.dtype = get_string(j, "torch_dtype", get_string(j, "dtype", "float32", src), src);
  if (j.contains("dtype") && j["dtype"].is_string()) c.dtype = j["dtype"].get<std::string>();

  c.vocab_size = get_int(j, "vocab_size", 0, src);
  c.hidden_size = get_int(j, "hidden_size", 0, src);
  c.num_layers = get_int(j, "num_hidden_layers", 0, src);
  c.num_heads = get_int(j, "num_attention_heads", 0, src);
  c.num_kv_heads = get_int(j, "num_key_value_heads", c.num_heads, src);
  c.max_positions = get_int(j, "max_position_embeddings", 4096, src);
  c.rms_norm_eps = get_double(j, "rms_norm_eps", 1e-6, src);
  c.rope_theta = parse_rope(j, c, 10000.0, c.runnable(), src);
  if (c.runnable()) {
    refuse_unimplemented(j, src);
    c.sliding_window = parse_sliding_window(j, c.family, src);
    c.attention_dropout = get_double(j, "attention_dropout", 0.0, src);
  }

  const int64_t default_head_dim = c.num_heads > 0 ? c.hidden_size / c.num_heads : 0;
  c.head_dim = get_int(j, "head_dim", default_head_dim, src);
  // The expert count under either name; absent, the configuration class's default.
  auto n_experts = [&](int64_t dflt) {
    return get_int(j, "num_local_experts", get_int(j, "num_experts", dflt, src), src);
  };
  const int64_t n_experts_key = n_experts(0);
  // Families whose attention takes head_dim = hidden_size / num_attention_heads: a different
  // head_dim in the file is read by some transformers versions and not by others, so refuse it.
  auto fixed_head_dim = [&]() {
    const int64_t hd = get_int(j, "head_dim", default_head_dim, src);
    if (hd != default_head_dim)
      refuse(src, "head_dim", std::to_string(hd),
             "this family's attention uses hidden_size / num_attention_heads = " + std::to_string(default_head_dim));
    return default_head_dim;
  };

  switch (c.family) {
    case Family::Mixtral:
      c.tie_word_embeddings = get_bool(j, "tie_word_embeddings", false, src);
      c.num_experts = n_experts(8);
      c.top_k = get_int(j, "num_experts_per_tok", 2, src);
      c.expert_ffn_size = get_int(j, "intermediate_size", 0, src);
      c.norm_topk_prob = true;  // Mixtral always renormalises (the lab may switch it off, below)
      c.rope_theta = parse_rope(j, c, 1e6, true, src);
      c.rms_norm_eps = get_double(j, "rms_norm_eps", 1e-5, src);
      c.router_jitter_noise = get_double(j, "router_jitter_noise", 0.0, src);
      break;
    case Family::Qwen2Moe:
    case Family::Qwen3Moe:
      c.tie_word_embeddings = get_bool(j, "tie_word_embeddings", false, src);
      c.num_experts = n_experts(c.family == Family::Qwen2Moe ? 60 : 128);
      c.top_k = get_int(j, "num_experts_per_tok", c.family == Family::Qwen2Moe ? 4 : 8, src);
      c.dense_ffn_size = get_int(j, "intermediate_size", 0, src);
      c.expert_ffn_size = get_int(j, "moe_intermediate_size", 0, src);
      c.norm_topk_prob = get_bool(j, "norm_topk_prob", false, src);
      c.decoder_sparse_step = get_int(j, "decoder_sparse_step", 1, src);
      if (auto it = j.find("mlp_only_layers"); it != j.end() && !it->is_null()) {
        if (!it->is_array() || it->size() > size_t(kMaxLayers)) fail(src, "'mlp_only_layers' must be a list of layer numbers");
        for (const auto& v : *it) {
          if (!v.is_number_integer()) fail(src, "'mlp_only_layers' must be a list of layer numbers");
          c.mlp_only_layers.push_back(v.get<int64_t>());
        }
      }
      if (c.family == Family::Qwen2Moe) {
        c.qkv_bias = get_bool(j, "qkv_bias", true, src);  // a field since transformers 5; true before
        c.shared_ffn_size = get_int(j, "shared_expert_intermediate_size", 5632, src);  // the class's default
        c.shared_expert_gate = c.shared_ffn_size > 0;
        c.head_dim = fixed_head_dim();
      } else {
        c.qkv_bias = get_bool(j, "attention_bias", false, src);
        c.o_bias = c.qkv_bias;
        c.qk_norm = QkNorm::PerHead;
      }
      break;
    case Family::Olmoe:
      c.tie_word_embeddings = get_bool(j, "tie_word_embeddings", false, src);
      c.num_experts = n_experts(64);
      c.top_k = get_int(j, "num_experts_per_tok", 8, src);
      c.expert_ffn_size = get_int(j, "intermediate_size", 0, src);
      c.norm_topk_prob = get_bool(j, "norm_topk_prob", false, src);
      c.qkv_bias = get_bool(j, "attention_bias", false, src);
      c.o_bias = c.qkv_bias;
      c.qk_norm = QkNorm::Whole;
      c.clip_qkv = get_double(j, "clip_qkv", 0.0, src);
      c.rms_norm_eps = get_double(j, "rms_norm_eps", 1e-5, src);
      c.head_dim = fixed_head_dim();
      break;
    case Family::DeepseekV2:
    case Family::DeepseekV3:
      c.tie_word_embeddings = get_bool(j, "tie_word_embeddings", false, src);
      c.mla = true;
      c.q_lora_rank = get_int(j, "q_lora_rank", 0, src);
      c.kv_lora_rank = get_int(j, "kv_lora_rank", 0, src);
      c.qk_rope_head_dim = get_int(j, "qk_rope_head_dim", 0, src);
      c.qk_nope_head_dim = get_int(j, "qk_nope_head_dim", 0, src);
      c.v_head_dim = get_int(j, "v_head_dim", 0, src);
      check_range(c.qk_rope_head_dim, 0, 4096, "qk_rope_head_dim", src);  // before they are added
      check_range(c.qk_nope_head_dim, 0, 4096, "qk_nope_head_dim", src);
      c.head_dim = c.qk_rope_head_dim + c.qk_nope_head_dim;
      c.qkv_bias = get_bool(j, "attention_bias", false, src);
      c.num_experts = get_int(j, "n_routed_experts", 0, src);
      c.top_k = get_int(j, "num_experts_per_tok", 8, src);
      c.dense_ffn_size = get_int(j, "intermediate_size", 0, src);
      c.expert_ffn_size = get_int(j, "moe_intermediate_size", 0, src);
      {
        const int64_t n_shared = get_int(j, "n_shared_experts", 0, src);
        check_range(c.expert_ffn_size, 0, kMaxFfn, "moe_intermediate_size", src);  // before they are multiplied
        check_range(n_shared, 0, kMaxExperts, "n_shared_experts", src);
        c.shared_ffn_size = c.expert_ffn_size * n_shared;
      }
      c.first_dense_layers = get_int(j, "first_k_dense_replace", 0, src);
      c.norm_topk_prob = get_bool(j, "norm_topk_prob", true, src);
      c.scoring = get_string(j, "scoring_func", c.family == Family::DeepseekV3 ? "sigmoid" : "softmax", src) == "softmax"
                      ? RouterScoring::Softmax
                      : RouterScoring::Sigmoid;
      // V3's selection bias (a buffer, not a parameter) exists with the "noaux_tc" top-k method.
      c.score_correction_bias =
          get_string(j, "topk_method", c.family == Family::DeepseekV3 ? "noaux_tc" : "greedy", src) == "noaux_tc";
      c.n_group = get_int(j, "n_group", 1, src);
      c.topk_group = get_int(j, "topk_group", 1, src);
      break;
    case Family::GptOss:
      c.tie_word_embeddings = get_bool(j, "tie_word_embeddings", false, src);
      c.num_experts = n_experts_key;
      c.top_k = get_int(j, "num_experts_per_tok", get_int(j, "experts_per_token", 4, src), src);
      c.expert_ffn_size = get_int(j, "intermediate_size", 0, src);
      c.qkv_bias = get_bool(j, "attention_bias", true, src);
      c.o_bias = c.qkv_bias;
      c.attention_sinks = true;
      c.router_bias = true;
      c.expert_bias = true;
      break;
    case Family::GraniteMoe:
      c.tie_word_embeddings = get_bool(j, "tie_word_embeddings", false, src);
      c.num_experts = get_int(j, "num_local_experts", 8, src);
      c.top_k = get_int(j, "num_experts_per_tok", 2, src);
      c.expert_ffn_size = get_int(j, "intermediate_size", 0, src);
      c.qkv_bias = get_bool(j, "attention_bias", false, src);
      c.o_bias = c.qkv_bias;
      c.head_dim = fixed_head_dim();
      // Top-k of the router logits, softmax over those k: the same weights as softmax over all
      // experts renormalised over the chosen k (GraniteMoeTopKGating).
      c.norm_topk_prob = true;
      c.embedding_multiplier = get_double(j, "embedding_multiplier", 1.0, src);
      c.attention_multiplier = get_double(j, "attention_multiplier", 1.0, src);  // the softmax scale itself
      c.residual_multiplier = get_double(j, "residual_multiplier", 1.0, src);
      c.logits_scaling = get_double(j, "logits_scaling", 1.0, src);
      if (const std::string pe = get_string(j, "position_embedding_type", "rope", src); pe != "rope")
        refuse(src, "position_embedding_type", "\"" + pe + "\"", "only rotary position embeddings are implemented");
      break;
  }
  if (auto it = j.find("moelab"); it != j.end()) {
    if (!it->is_object()) fail(src, "'moelab' must be an object");
    const json& m = *it;
    c.tokenizer = get_string(m, "tokenizer", "", src);
    c.preset = get_string(m, "preset", "", src);
    c.fine_grained = get_int(m, "fine_grained", 1, src);
    set_router_kind(c, get_string(m, "router", "softmax", src), src);
    if (m.contains("norm_topk_prob")) c.norm_topk_prob = get_bool(m, "norm_topk_prob", true, src);
  }
  validate_config(c, src);
  return c;
}

void validate_config(const ModelConfig& c, const std::string& src) {
  check_range(c.vocab_size, 1, kMaxVocab, "vocab_size", src);
  check_range(c.hidden_size, 1, kMaxHidden, "hidden_size", src);
  check_range(c.num_layers, 1, kMaxLayers, "num_hidden_layers", src);
  check_range(c.num_heads, 1, kMaxHeads, "num_attention_heads", src);
  check_range(c.num_kv_heads, 1, c.num_heads, "num_key_value_heads", src);
  check_range(c.max_positions, 1, kMaxPositions, "max_position_embeddings", src);
  if (c.num_heads % c.num_kv_heads != 0)
    fail(src, "num_attention_heads (" + std::to_string(c.num_heads) + ") is not a multiple of num_key_value_heads (" +
                  std::to_string(c.num_kv_heads) + ")");
  check_range(c.head_dim, 1, 4096, "head_dim", src);
  if (!c.mla && c.head_dim % 2 != 0) fail(src, "head_dim must be even for rotary embeddings");
  if (!(c.rms_norm_eps > 0.0 && c.rms_norm_eps < 1.0)) fail(src, "rms_norm_eps must be in (0, 1)");
  if (!(c.rope_theta > 1.0 && c.rope_theta < 1e12)) fail(src, "rope_theta must be in (1, 1e12)");
  check_range(c.num_experts, 0, kMaxExperts, "number of experts", src);
  if (c.num_experts * c.num_moe_layers() > kMaxRoutedExperts)
    fail(src, std::to_string(c.num_moe_layers()) + " MoE layers of " + std::to_string(c.num_experts) +
                  " experts is more than the " + std::to_string(kMaxRoutedExperts) + " routed experts the lab can list");
  if (c.num_experts > 0) {
    if (c.top_k < 1) fail(src, "num_experts_per_tok must be at least 1");
    if (c.top_k > c.num_experts)
      fail(src, "num_experts_per_tok (" + std::to_string(c.top_k) + ") is larger than the number of experts (" +
                    std::to_string(c.num_experts) + ")");
    check_range(c.expert_ffn_size, 1, kMaxFfn, "expert intermediate size", src);
  } else if (c.family != Family::Qwen2Moe && c.family != Family::Qwen3Moe) {
    fail(src, "a " + std::string(family_name(c.family)) + " model needs at least one expert");
  }
  check_range(c.dense_ffn_size, 0, kMaxFfn, "intermediate_size", src);
  check_range(c.shared_ffn_size, 0, kMaxFfn, "shared expert intermediate size", src);
  if (c.decoder_sparse_step < 1) fail(src, "decoder_sparse_step must be at least 1");
  for (int64_t l = 0; l < c.num_layers; ++l)
    if (!c.is_moe_layer(l) && c.dense_ffn_size <= 0)
      fail(src, "layer " + std::to_string(l) + " is dense but intermediate_size is 0");
  if (c.clip_qkv < 0.0) fail(src, "clip_qkv must be positive");
  if (c.sliding_window < 0) fail(src, "sliding_window must be positive");
  if (!(c.attention_dropout >= 0.0 && c.attention_dropout < 1.0)) fail(src, "attention_dropout must be in [0, 1)");
  for (auto [name, v] : {std::pair{"embedding_multiplier", c.embedding_multiplier},
                         std::pair{"residual_multiplier", c.residual_multiplier},
                         std::pair{"logits_scaling", c.logits_scaling}})
    if (!(std::isfinite(v) && v != 0.0 && std::fabs(v) < 1e6))
      fail(src, std::string(name) + " = " + std::to_string(v) + " must be a non-zero number below 1e6");
  if (!(c.attention_multiplier >= 0.0 && c.attention_multiplier < 1e6) ||
      (c.family == Family::GraniteMoe && !(c.attention_multiplier > 0.0)))
    fail(src, "attention_multiplier = " + std::to_string(c.attention_multiplier) + " must be positive");
  if (c.mla) {
    check_range(c.kv_lora_rank, 1, kMaxHidden, "kv_lora_rank", src);
    check_range(c.q_lora_rank, 0, kMaxHidden, "q_lora_rank", src);
    check_range(c.v_head_dim, 1, 4096, "v_head_dim", src);
  }
}

json config_to_json(const ModelConfig& c) {
  MOELAB_ASSERT(c.runnable(), "only runnable families are written");
  json j;
  j["architectures"] = json::array({c.architecture});
  j["model_type"] = c.model_type;
  j["dtype"] = c.dtype;
  j["torch_dtype"] = c.dtype;
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["num_hidden_layers"] = c.num_layers;
  j["num_attention_heads"] = c.num_heads;
  j["num_key_value_heads"] = c.num_kv_heads;
  j["max_position_embeddings"] = c.max_positions;
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["rope_theta"] = c.rope_theta;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["num_experts_per_tok"] = c.top_k;
  j["hidden_act"] = "silu";
  j["attention_dropout"] = c.attention_dropout;
  j["use_cache"] = true;
  if (c.rope_scaling.type == RopeType::Default) {
    j["rope_scaling"] = nullptr;
  } else {  // the transformers 4 key; transformers 5 reads it too
    const RopeScaling& s = c.rope_scaling;
    json r = {{"rope_type", rope_type_name(s.type)}, {"factor", s.factor}};
    if (s.type == RopeType::Llama3) {
      r["low_freq_factor"] = s.low_freq_factor;
      r["high_freq_factor"] = s.high_freq_factor;
      r["original_max_position_embeddings"] = s.original_max_positions;
    }
    j["rope_scaling"] = r;
  }
  switch (c.family) {
    case Family::Mixtral:
      j["num_local_experts"] = c.num_experts;
      j["intermediate_size"] = c.expert_ffn_size;
      j["head_dim"] = c.head_dim;
      j["sliding_window"] = c.sliding_window > 0 ? json(c.sliding_window) : json(nullptr);
      j["router_aux_loss_coef"] = 0.0;
      j["router_jitter_noise"] = c.router_jitter_noise;
      break;
    case Family::Qwen2Moe:
    case Family::Qwen3Moe:
      j["num_experts"] = c.num_experts;
      j["moe_intermediate_size"] = c.expert_ffn_size;
      j["intermediate_size"] = c.dense_ffn_size;
      j["norm_topk_prob"] = c.norm_topk_prob;
      j["decoder_sparse_step"] = c.decoder_sparse_step;
      j["mlp_only_layers"] = c.mlp_only_layers;
      j["use_sliding_window"] = c.sliding_window > 0;
      j["sliding_window"] = c.sliding_window > 0 ? json(c.sliding_window) : json(nullptr);
      if (c.family == Family::Qwen2Moe) {
        j["shared_expert_intermediate_size"] = c.shared_ffn_size;
        j["qkv_bias"] = c.qkv_bias;
      } else {
        j["head_dim"] = c.head_dim;
        j["attention_bias"] = c.qkv_bias;
      }
      break;
    case Family::Olmoe:
      j["num_experts"] = c.num_experts;
      j["intermediate_size"] = c.expert_ffn_size;
      j["norm_topk_prob"] = c.norm_topk_prob;
      j["clip_qkv"] = c.clip_qkv > 0 ? json(c.clip_qkv) : json(nullptr);
      j["attention_bias"] = c.qkv_bias;
      break;
    case Family::GraniteMoe:
      j["num_local_experts"] = c.num_experts;
      j["intermediate_size"] = c.expert_ffn_size;
      j["attention_bias"] = c.qkv_bias;
      j["embedding_multiplier"] = c.embedding_multiplier;
      j["attention_multiplier"] = c.attention_multiplier;
      j["residual_multiplier"] = c.residual_multiplier;
      j["logits_scaling"] = c.logits_scaling;
      j["router_aux_loss_coef"] = 0.0;
      break;
    default:
      break;
  }
  json lab = json::object();
  if (!c.tokenizer.empty()) lab["tokenizer"] = c.tokenizer;
  if (!c.preset.empty()) lab["preset"] = c.preset;
  if (c.fine_grained > 1) lab["fine_grained"] = c.fine_grained;
  if (c.router_noise) lab["router"] = "noisy";
  if (c.scoring == RouterScoring::Sigmoid) lab["router"] = "sigmoid";
  // Mixtral always renormalises in transformers; the lab's switch lives here.
  if (c.family == Family::Mixtral && !c.norm_topk_prob) lab["norm_topk_prob"] = false;
  if (!lab.empty()) j["moelab"] = lab;
  return j;
}

}  // namespace moelab
