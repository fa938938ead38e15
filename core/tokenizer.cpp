#include "tokenizer.hpp"

#include <cstdio>

#include "config.hpp"
#include "error.hpp"
#include "hf_tokenizer.hpp"

namespace moelab {

std::vector<int32_t> encode_bytes(const std::string& text, bool add_bos) {
  std::vector<int32_t> ids;
  ids.reserve(text.size() + 1);
  if (add_bos) ids.push_back(kBosToken);
  for (unsigned char ch : text) ids.push_back(int32_t(ch));
  return ids;
}

std::string decode_bytes(const std::vector<int32_t>& ids) {
  std::string s;
  for (int32_t id : ids)
    if (id >= 0 && id < 256) s.push_back(char(id));
  return s;
}

std::string token_label(int32_t id) {
  switch (id) {
    case kBosToken: return "<bos>";
    case kEosToken: return "<eos>";
    case kPadToken: return "<pad>";
    case kSepToken: return "<sep>";
    case '\n': return "\\n";
    case '\t': return "\\t";
    default: break;
  }
  if (id >= 32 && id < 127) return std::string(1, char(id));
  char buf[16];
  std::snprintf(buf, sizeof buf, id >= 0 && id < 256 ? "<0x%02X>" : "<%d>", id);
  return buf;
}

std::vector<int32_t> parse_token_ids(const std::string& text, const std::string& where) {
  std::vector<int32_t> ids;
  size_t i = 0;
  while (i < text.size()) {
    size_t j = text.find(',', i);
    if (j == std::string::npos) j = text.size();
    const std::string part = text.substr(i, j - i);
    if (part.empty() || part.size() > 10 || part.find_first_not_of("0123456789") != std::string::npos)
      fail(where, "'" + part + "' is not a token id (expected comma-separated non-negative integers)");
    const long long v = std::stoll(part);
    if (v > 0x7fffffff) fail(where, "token id " + part + " is too large");
    ids.push_back(int32_t(v));
    i = j + 1;
  }
  if (ids.empty()) fail(where, "no token ids given");
  return ids;
}

namespace {
std::string unknown_label(int32_t id) {
  std::string s = "<";
  s += std::to_string(id);
  s += '>';
  return s;
}
}  // namespace

std::shared_ptr<const TextTokenizer> TextTokenizer::bytes() {
  static const auto t = std::make_shared<const TextTokenizer>();
  return t;
}

std::shared_ptr<const TextTokenizer> TextTokenizer::hugging_face(std::shared_ptr<const HfTokenizer> tok) {
  auto t = std::make_shared<TextTokenizer>();
  t->hf_ = std::move(tok);
  return t;
}

std::shared_ptr<const TextTokenizer> TextTokenizer::for_model(const std::string& dir, const ModelConfig& config) {
  if (!dir.empty()) {
    const std::string file = tokenizer_json_of(dir);
    if (!file.empty()) return hugging_face(HfTokenizer::load(file));
  }
  if (config.tokenizer == "bytes") return bytes();
  return nullptr;
}

std::vector<int32_t> TextTokenizer::encode_prompt(const std::string& text) const {
  if (hf_) return hf_->encode_prompt(text);
  return encode_bytes(text, true);
}

std::string TextTokenizer::decode(const std::vector<int32_t>& ids) const {
  if (hf_) return hf_->decode(ids, false);
  return decode_bytes(ids);
}

std::string TextTokenizer::label(int32_t id) const {
  if (!hf_) return token_label(id);
  if (!hf_->known(id)) return unknown_label(id);
  if (hf_->is_special(id)) return hf_->piece(id);
  return visible_token_text(hf_->token_bytes(id));
}

std::string TextTokenizer::piece(int32_t id) const {
  if (!hf_) return token_label(id);
  return hf_->known(id) ? hf_->piece(id) : unknown_label(id);
}

std::optional<int32_t> TextTokenizer::eos() const {
  if (hf_) return hf_->eos_id();
  return kEosToken;
}

std::string TextTokenizer::describe() const {
  if (!hf_) return "the lab's byte tokenizer";
  return hf_->path() + ": " + hf_->summary();
}

}  // namespace moelab
