#include "presets.hpp"

#include <algorithm>
#include <cstdlib>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "files.hpp"
#include "error.hpp"
#include "tokenizer.hpp"

namespace moelab {
namespace fs = std::filesystem;
using nlohmann::json;

std::string resources_dir() {
  if (const char* env = std::getenv("MOELAB_RESOURCES")) return env;
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  for (const fs::path& p : {exe.parent_path() / "../resources", exe.parent_path() / "../../resources",
                            exe.parent_path() / "../share/moelab/resources"})
    if (fs::exists(p / "presets", ec)) return fs::canonical(p, ec).string();
#ifdef MOELAB_RESOURCE_DIR
  return MOELAB_RESOURCE_DIR;
#else
  return "resources";
#endif
}

namespace {

ModelConfig lab_model_from_spec(const json& s, const std::string& src) {
  auto get = [&](const char* k, int64_t d) -> int64_t {
    if (!s.contains(k)) return d;
    if (!s[k].is_number_integer()) fail(src, std::string("model.") + k + " must be an integer");
    // Bounded before the products below (experts x fine_grained, ...) can overflow.
    const int64_t v = s[k].get<int64_t>();
    if (v < -(int64_t(1) << 31) || v > (int64_t(1) << 31))
      fail(src, std::string("model.") + k + " = " + s[k].dump() + " is out of range");
    return v;
  };
  const int64_t shared = get("shared_experts", 0), m = get("fine_grained", 1);
  if (m < 1 || m > 64) fail(src, "model.fine_grained must be in [1, 64]");
  std::vector<int64_t> dense;
  if (s.contains("dense_layers")) {
    if (!s["dense_layers"].is_array()) fail(src, "model.dense_layers must be a list of layer numbers");
    for (const auto& v : s["dense_layers"]) {
      if (!v.is_number_integer()) fail(src, "model.dense_layers must be a list of layer numbers");
      dense.push_back(v.get<int64_t>());
    }
  }
  const int64_t experts = get("experts", 8);
  ModelConfig c;
  const bool qwen = shared > 0 || !dense.empty() || experts == 0;
  c.family = qwen ? Family::Qwen2Moe : Family::Mixtral;
  c.architecture = qwen ? "Qwen2MoeForCausalLM" : "MixtralForCausalLM";
  c.model_type = qwen ? "qwen2_moe" : "mixtral";
  c.vocab_size = get("vocab", kByteVocab);
  c.hidden_size = get("hidden", 128);
  c.num_layers = get("layers", 4);
  c.num_heads = get("heads", 4);
  c.num_kv_heads = get("kv_heads", c.num_heads);
  c.head_dim = c.num_heads > 0 ? c.hidden_size / c.num_heads : 0;
  c.max_positions = get("max_positions", 1024);
  c.rope_theta = s.value("rope_theta", 10000.0);
  c.rms_norm_eps = 1e-5;
  // Fine-grained segmentation (DeepSeekMoE): m times more experts, each 1/m as wide, top-k·m,
  // so total and active parameters stay the same while combinations multiply.
  c.num_experts = experts * m;
  c.top_k = get("top_k", 2) * m;
  c.expert_ffn_size = get("expert_hidden", 256) / m;
  c.fine_grained = m;
  c.norm_topk_prob = s.value("renormalize", true);
  c.shared_ffn_size = shared * c.expert_ffn_size;
  c.shared_expert_gate = shared > 0;
  c.qkv_bias = qwen;  // Qwen2-MoE attention has q/k/v biases
  c.mlp_only_layers = dense;
  c.dense_ffn_size = get("dense_hidden", experts == 0 ? get("expert_hidden", 256) * get("top_k", 2) : c.expert_ffn_size * c.top_k);
  c.tokenizer = "bytes";
  set_router_kind(c, s.value("router", std::string("softmax")), src);
  if (c.hidden_size % std::max<int64_t>(1, c.num_heads) != 0) fail(src, "model.hidden must be a multiple of model.heads");
  validate_config(c, src);
  return c;
}

}  // namespace

ModelConfig lab_model_from_json(const json& s, const std::string& src) {
  if (!s.is_object()) fail(src, "the model spec must be a JSON object");
  try {
    return lab_model_from_spec(s, src);
  } catch (const json::exception& e) {
    fail(src, std::string("a model setting has the wrong type: ") + e.what());
  }
}

std::vector<std::string> list_presets() {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(fs::path(resources_dir()) / "presets", ec))
    if (e.path().extension() == ".json") names.push_back(e.path().stem().string());
  std::sort(names.begin(), names.end());
  return names;
}

Preset load_preset(const std::string& name_or_path) {
  std::error_code ec;
  std::string path = name_or_path;
  if (!fs::exists(path, ec) || fs::is_directory(path, ec)) {
    path = (fs::path(resources_dir()) / "presets" / (name_or_path + ".json")).string();
    if (!fs::exists(path, ec)) {
      std::string known;
      for (const auto& n : list_presets()) known += (known.empty() ? "" : ", ") + n;
      fail(name_or_path, "no such preset or file (presets: " + known + ")");
    }
  }
  const json j = read_json_file(path, 1 << 20);
  if (!j.is_object() || !j.contains("model")) fail(path, "a preset needs a \"model\" object");
  Preset p;
  p.name = fs::path(path).stem().string();
  try {
    p.title = j.value("title", p.name);
    p.description = j.value("description", std::string());
    p.corpus = j.value("corpus", std::string("builtin:domains"));
  } catch (const json::exception& e) {
    fail(path, std::string("title, description and corpus must be strings: ") + e.what());
  }
  p.model = lab_model_from_json(j["model"], path);
  p.model.preset = p.name;
  if (j.contains("train")) p.train = train_config_from_json(j["train"], p.train, path);
  return p;
}

}  // namespace moelab
