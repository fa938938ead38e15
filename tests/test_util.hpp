// Helpers shared by the core test suites: a tiny lab config and a scratch folder.
#pragma once

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "config.hpp"
#include "corpus.hpp"
#include "random.hpp"

namespace testutil {

inline moelab::ModelConfig tiny_config(moelab::Family family = moelab::Family::Mixtral) {
  moelab::ModelConfig c;
  c.family = family;
  switch (family) {
    case moelab::Family::Qwen2Moe: c.architecture = "Qwen2MoeForCausalLM"; c.model_type = "qwen2_moe"; break;
    case moelab::Family::Qwen3Moe: c.architecture = "Qwen3MoeForCausalLM"; c.model_type = "qwen3_moe"; break;
    case moelab::Family::Olmoe: c.architecture = "OlmoeForCausalLM"; c.model_type = "olmoe"; break;
    case moelab::Family::GraniteMoe:
      c.architecture = "GraniteMoeForCausalLM";
      c.model_type = "granitemoe";
      c.attention_multiplier = 1.0;  // the config class's default: the softmax scale itself
      break;
    default: break;
  }
  c.vocab_size = 40;
  c.hidden_size = 32;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 8;
  c.max_positions = 64;
  c.num_experts = 4;
  c.top_k = 2;
  c.expert_ffn_size = 16;
  c.dense_ffn_size = 24;
  return c;
}

// Variants of the tiny config that change which tensors exist or how they combine (the GPU,
// stored-weight and config tests build their family tables from them).
inline moelab::ModelConfig qwen2_moe_shared_expert_and_dense_layer() {
  moelab::ModelConfig c = tiny_config(moelab::Family::Qwen2Moe);
  c.num_layers = 3;
  c.qkv_bias = true;
  c.shared_ffn_size = 20;
  c.shared_expert_gate = true;
  c.norm_topk_prob = false;
  c.mlp_only_layers = {1};
  return c;
}
inline moelab::ModelConfig qwen3_moe_qk_norm_per_head() {
  moelab::ModelConfig c = tiny_config(moelab::Family::Qwen3Moe);
  c.qk_norm = moelab::QkNorm::PerHead;
  return c;
}
inline moelab::ModelConfig olmoe_qk_norm_and_clip() {
  moelab::ModelConfig c = tiny_config(moelab::Family::Olmoe);
  c.qk_norm = moelab::QkNorm::Whole;
  c.clip_qkv = 0.5;
  return c;
}
inline moelab::ModelConfig granitemoe_multipliers() {
  moelab::ModelConfig c = tiny_config(moelab::Family::GraniteMoe);
  c.norm_topk_prob = true;
  c.embedding_multiplier = 12.0;
  c.attention_multiplier = 0.05;
  c.residual_multiplier = 0.22;
  c.logits_scaling = 6.0;
  return c;
}
// The tiny Mixtral on byte tokens (vocabulary 256, the "bytes" tokenizer): what the tests train
// on the built-in corpus.
inline moelab::ModelConfig byte_mixtral() {
  moelab::ModelConfig c = tiny_config(moelab::Family::Mixtral);
  c.vocab_size = 256;
  c.tokenizer = "bytes";
  return c;
}

// B sequences of T random tokens with random next-token targets; position 3 has none (ignored).
inline moelab::Batch random_batch(const moelab::ModelConfig& c, int64_t B, int64_t T) {
  moelab::Batch b;
  b.B = B;
  b.T = T;
  moelab::Rng r(5);
  for (int64_t i = 0; i < B * T; ++i) {
    b.inputs.push_back(int32_t(r.next_u64() % uint64_t(c.vocab_size)));
    b.targets.push_back(int32_t(r.next_u64() % uint64_t(c.vocab_size)));
  }
  b.targets[3] = -1;
  return b;
}

// A fresh folder under the system temp dir, removed when the object goes away.
struct TempDir {
  std::filesystem::path path;
  explicit TempDir(const std::string& tag) {
    path = std::filesystem::temp_directory_path() / ("moelab-test-" + tag + "-" + std::to_string(::getpid()));
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

inline void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), std::streamsize(bytes.size()));
}
inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// A safetensors file from a raw header string and data bytes.
inline std::string safetensors_bytes(const std::string& header, const std::string& data) {
  std::string s(8, '\0');
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) s[size_t(i)] = char((n >> (8 * i)) & 0xff);
  return s + header + data;
}

}  // namespace testutil
