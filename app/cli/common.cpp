#include "common.hpp"

#include <unistd.h>

#include <cstdio>
#include <filesystem>

#include "devices.hpp"
#include "error.hpp"
#include "files.hpp"
#include "presets.hpp"
#include "safetensors.hpp"
#include "tokenizer.hpp"

namespace moelab::cli {

ModelConfig builtin_config() {
  ModelConfig c;
  c.family = Family::Mixtral;
  c.architecture = "MixtralForCausalLM";
  c.model_type = "mixtral";
  c.vocab_size = kByteVocab;
  c.hidden_size = 128;
  c.num_layers = 4;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 32;
  c.max_positions = 1024;
  c.rope_theta = 10000.0;
  c.rms_norm_eps = 1e-5;
  c.num_experts = 8;
  c.top_k = 2;
  c.expert_ffn_size = 256;
  c.norm_topk_prob = true;
  c.tokenizer = "bytes";
  return c;
}

std::shared_ptr<Backend> cli_backend(const std::string& device, const std::string& precision) {
  const Precision p = parse_precision(precision);
  std::string why;
  std::shared_ptr<Backend> backend = moelab::make_backend(device, &why);
  if (!why.empty()) std::fprintf(stderr, "moelab-cli: --device cuda: %s; using the CPU\n", why.c_str());
  backend->set_precision(p);
  return backend;
}

void add_device_options(CLI::App* cmd, std::string& device, std::string& precision) {
  cmd->add_option("--device", device, "cpu, cuda or auto");
  cmd->add_option("--precision", precision,
                  "Matrix products: fp32 (default), bf16 (bf16 operands, fp32 sums; emulated on the CPU) or tf32 (GPU)");
}

std::string builtin_model_dir() { return resources_dir() + "/models/builtin"; }

Model open_model(const std::string& dir, std::shared_ptr<Backend> backend) {
  if (dir.empty() || dir == "builtin") {
    std::error_code ec;
    if (std::filesystem::exists(builtin_model_dir() + "/config.json", ec)) return Model::load(builtin_model_dir(), std::move(backend));
    return Model::random(builtin_config(), kBuiltinSeed, std::move(backend), 0.08f);  // not shipped: untrained
  }
  return Model::load(dir, std::move(backend));
}

nlohmann::json routing_to_json(const RoutingTrace& trace, bool with_logits) {
  using nlohmann::json;
  json out = json::array();
  for (const auto& L : trace.layers()) {
    const int64_t T = L.tokens(), E = L.experts, K = L.top_k;
    json experts = json::array(), weights = json::array(), probs = json::array(), logits = json::array();
    for (int64_t t = 0; t < T; ++t) {
      experts.push_back(std::vector<int32_t>(L.ids.begin() + t * K, L.ids.begin() + (t + 1) * K));
      weights.push_back(std::vector<float>(L.weights.begin() + t * K, L.weights.begin() + (t + 1) * K));
      probs.push_back(std::vector<float>(L.probs.begin() + t * E, L.probs.begin() + (t + 1) * E));
      if (with_logits) logits.push_back(std::vector<float>(L.logits.begin() + t * E, L.logits.begin() + (t + 1) * E));
    }
    json l = {{"layer", L.layer}, {"experts", experts}, {"weights", weights}, {"probs", probs}};
    if (with_logits) l["router_logits"] = logits;
    out.push_back(l);
  }
  return out;
}

void write_json_file(const std::string& path, const nlohmann::json& j) { write_text_atomic(path, j.dump() + "\n"); }

bool stdout_is_terminal() { return ::isatty(1) == 1; }

}  // namespace moelab::cli
