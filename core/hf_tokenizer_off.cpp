// Built without PCRE2/utf8proc (the GPU machine's header-only build): a tokenizer.json is refused
// in one line, never approximated. The full implementation is hf_tokenizer.cpp.
#include <filesystem>

#include "error.hpp"
#include "hf_tokenizer.hpp"

namespace moelab {

struct HfTokenizerImpl {};

HfTokenizer::HfTokenizer() = default;
HfTokenizer::~HfTokenizer() = default;

std::shared_ptr<const HfTokenizer> HfTokenizer::load(const std::string& path) {
  fail(path, "this build has no tokenizer.json support (it needs libpcre2-dev and libutf8proc-dev)");
}

std::string tokenizer_json_of(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::path p(path);
  if (fs::is_directory(p, ec)) p /= "tokenizer.json";
  else if (p.filename() != "tokenizer.json") p = p.parent_path() / "tokenizer.json";
  return fs::is_regular_file(p, ec) ? p.string() : std::string();
}

std::vector<int32_t> HfTokenizer::encode(std::string_view, bool) const { return {}; }
std::vector<int32_t> HfTokenizer::encode_prompt(std::string_view) const { return {}; }
std::string HfTokenizer::decode(std::span<const int32_t>, bool) const { return {}; }
std::string HfTokenizer::piece(int32_t) const { return {}; }
std::string HfTokenizer::token_bytes(int32_t) const { return {}; }
bool HfTokenizer::known(int32_t) const { return false; }
bool HfTokenizer::is_special(int32_t) const { return false; }
std::optional<int32_t> HfTokenizer::token_id(std::string_view) const { return std::nullopt; }
int64_t HfTokenizer::vocab_size() const { return 0; }
std::optional<int32_t> HfTokenizer::bos_id() const { return std::nullopt; }
std::optional<int32_t> HfTokenizer::eos_id() const { return std::nullopt; }
const std::string& HfTokenizer::path() const {
  static const std::string none;
  return none;
}
std::string HfTokenizer::summary() const { return {}; }

std::optional<size_t> invalid_utf8_offset(std::string_view s) {
  // Structural check only (this build has no tokenizer to feed).
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    size_t n = c < 0x80 ? 1 : c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
    if (!n || i + n > s.size()) return i;
    for (size_t k = 1; k < n; ++k)
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return i;
    i += n;
  }
  return std::nullopt;
}

std::string visible_token_text(std::string_view bytes) { return std::string(bytes); }

}  // namespace moelab
