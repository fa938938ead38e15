// The lab's byte-level tokenizer: one token per byte (0..255) plus a few specials. Any UTF-8
// text round-trips exactly; a student can see every token.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace moelab {

struct ModelConfig;
class HfTokenizer;

constexpr int32_t kBosToken = 256;  // <bos>: start of a sequence
constexpr int32_t kEosToken = 257;  // <eos>: end of a sequence
constexpr int32_t kPadToken = 258;  // <pad>
constexpr int32_t kSepToken = 259;  // <sep>: between documents
constexpr int32_t kByteVocab = 260;

std::vector<int32_t> encode_bytes(const std::string& text, bool add_bos = true);
std::string decode_bytes(const std::vector<int32_t>& ids);  // specials are skipped
// How a single token reads on screen: printable bytes as themselves, others escaped ("\n", "<0xE2>").
std::string token_label(int32_t id);

// How a model reads and writes text, the one place the CLI, the GUI and traces ask: the model
// folder's tokenizer.json (a Hugging Face tokenizer), or the lab's byte tokenizer for lab models.
class TextTokenizer {
 public:
  // A model's tokenizer: DIR's tokenizer.json if there is one (errors name the file), the byte
  // tokenizer when the config says "bytes", otherwise nullptr: the model takes token ids only.
  static std::shared_ptr<const TextTokenizer> for_model(const std::string& dir, const ModelConfig& config);
  static std::shared_ptr<const TextTokenizer> bytes();
  static std::shared_ptr<const TextTokenizer> hugging_face(std::shared_ptr<const HfTokenizer> tok);

  // A prompt as the model is fed it (BOS where the tokenizer's files ask for it).
  std::vector<int32_t> encode_prompt(const std::string& text) const;
  // Text of token ids (special tokens kept, as transformers' decode does by default).
  std::string decode(const std::vector<int32_t>& ids) const;
  // One token as a person reads it: its text with spaces, newlines and lone bytes made visible
  // ("␣the", "↵", "<0xE2>"), or its name for special tokens ("<|endoftext|>").
  std::string label(int32_t id) const;
  // The token's vocabulary entry ("Ġthe", "▁the", "<0x0A>"); the label for the byte tokenizer.
  std::string piece(int32_t id) const;
  std::optional<int32_t> eos() const;
  bool is_bytes() const { return !hf_; }
  const HfTokenizer* hf() const { return hf_.get(); }
  // "tokenizer.json: byte-level BPE, 151.7K tokens (26 added), NFC" or "the lab's byte tokenizer".
  std::string describe() const;

 private:
  std::shared_ptr<const HfTokenizer> hf_;
};

// Parse "3,1,4,1" into token ids; errors name the flag.
std::vector<int32_t> parse_token_ids(const std::string& text, const std::string& where);

}  // namespace moelab
