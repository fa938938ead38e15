// Hugging Face tokenizers read from a model's tokenizer.json (+ tokenizer_config.json beside it):
// byte-level BPE (GPT-2 / Qwen / DeepSeek / gpt-oss: Split and ByteLevel pre-tokenizers, their
// regexes run by PCRE2) and SentencePiece-style BPE (Llama / Mistral / Mixtral: Metaspace or
// Prepend+Replace, byte fallback). Added and special tokens are matched before the model splits
// the text. Everything a tokenizer.json asks for that is not implemented here is refused at load
// with one line naming the field; docs/tokenizers.md lists what is honoured.
//
// Checked against the Hugging Face `tokenizers` library itself (Rust, through its Node binding):
// tests/test_hf_tokenizer.cpp and tests/reference/tokenize_reference.mjs.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace moelab {

struct HfTokenizerImpl;

class HfTokenizer {
 public:
  // PATH: a tokenizer.json file, or a model folder that holds one. Errors name the file and the
  // field: "tokenizer.json: pre_tokenizer type 'Whitespace' is not supported".
  static std::shared_ptr<const HfTokenizer> load(const std::string& path);
  ~HfTokenizer();

  // The ids the Rust library gives for Tokenizer.encode(text, add_special_tokens). Text that is
  // not valid UTF-8 is refused with its byte offset.
  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens = true) const;
  // What a model is fed for a prompt, as transformers' tokenizer(text) does: encode() plus the
  // BOS (or EOS) that tokenizer_config.json's add_bos_token / add_eos_token ask for when the
  // tokenizer.json post-processor does not add it already.
  std::vector<int32_t> encode_prompt(std::string_view text) const;
  // Tokenizer.decode(ids, skip_special_tokens); ids the tokenizer does not know are skipped.
  std::string decode(std::span<const int32_t> ids, bool skip_special_tokens = false) const;

  // The vocabulary string of a token ("Ġthe", "▁the", "<0x0A>", "<|endoftext|>"), "" if unknown.
  std::string piece(int32_t id) const;
  // The bytes a token stands for in text (byte-level pieces mapped back, ▁ as a space, <0xNN>
  // as its byte); added tokens as their content. May be part of a UTF-8 character.
  std::string token_bytes(int32_t id) const;
  bool known(int32_t id) const;
  bool is_special(int32_t id) const;
  std::optional<int32_t> token_id(std::string_view piece) const;
  int64_t vocab_size() const;  // largest id + 1
  std::optional<int32_t> bos_id() const;
  std::optional<int32_t> eos_id() const;
  const std::string& path() const;
  // One line for people: "byte-level BPE, 151,669 tokens (26 added), NFC".
  std::string summary() const;

 private:
  HfTokenizer();
  std::unique_ptr<HfTokenizerImpl> impl_;
};

// The folder's tokenizer.json path if it has one ("" otherwise); PATH may be the folder, its
// config.json or the tokenizer.json itself.
std::string tokenizer_json_of(const std::string& path);

// Where a string stops being valid UTF-8 (the byte offset), or nullopt when it is valid.
std::optional<size_t> invalid_utf8_offset(std::string_view s);

// A token's bytes as a person can read them in a chart or a table: a space as "␣", a newline as
// "↵", a tab as "⇥", other control bytes and bytes that are not a whole UTF-8 character as
// "<0xE2>"; text otherwise as itself.
std::string visible_token_text(std::string_view bytes);

}  // namespace moelab
