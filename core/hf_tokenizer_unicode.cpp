// The text helpers of the tokenizer.json implementation (see hf_tokenizer_internal.hpp): UTF-8
// decoding and validation, the Unicode properties the Rust library's regexes and splitters use
// (utf8proc), Unicode normalization, GPT-2's byte alphabet, and PCRE2 regexes translated to the
// Rust library's (Oniguruma's) \s.
#include "hf_tokenizer_internal.hpp"

#include <utf8proc.h>

#include <cstdio>
#include <cstdlib>

namespace moelab {
namespace hf {

namespace {

// What a lead byte c >= 0x80 says: the length n of its sequence (0: c cannot start one) and the
// range [lo, hi] its second byte must fall in (narrower after E0, ED, F0 and F4, which rules out
// overlong forms, surrogates and code points past U+10FFFF); later bytes are 80..BF.
struct Utf8Lead {
  size_t n;
  unsigned char lo, hi;
};
Utf8Lead utf8_lead(unsigned char c) {
  if (c >= 0xC2 && c <= 0xDF) return {2, 0x80, 0xBF};
  if (c == 0xE0) return {3, 0xA0, 0xBF};
  if (c >= 0xE1 && c <= 0xEC) return {3, 0x80, 0xBF};
  if (c == 0xED) return {3, 0x80, 0x9F};
  if (c >= 0xEE && c <= 0xEF) return {3, 0x80, 0xBF};
  if (c == 0xF0) return {4, 0x90, 0xBF};
  if (c >= 0xF1 && c <= 0xF3) return {4, 0x80, 0xBF};
  if (c == 0xF4) return {4, 0x80, 0x8F};
  return {0, 0, 0};
}

// How many bytes at s[i] form the longest prefix of some valid sequence (at least 1): the
// "maximal subpart" that one U+FFFD replaces, as Rust's String::from_utf8_lossy does.
size_t utf8_invalid_span(std::string_view s, size_t i) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const auto [n, lo, hi] = utf8_lead(b(i));
  if (n == 0) return 1;
  size_t k = 1;
  if (i + k < s.size() && b(i + k) >= lo && b(i + k) <= hi) {
    ++k;
    while (k < n && i + k < s.size() && b(i + k) >= 0x80 && b(i + k) <= 0xBF) ++k;
  }
  return k;
}

void append_cp(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(char(cp));
  } else if (cp < 0x800) {
    out.push_back(char(0xC0 | (cp >> 6)));
    out.push_back(char(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(char(0xE0 | (cp >> 12)));
    out.push_back(char(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(char(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(char(0xF0 | (cp >> 18)));
    out.push_back(char(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(char(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(char(0x80 | (cp & 0x3F)));
  }
}

bool is_ascii(std::string_view s) {
  for (unsigned char c : s)
    if (c >= 0x80) return false;
  return true;
}

constexpr const char* kWhiteSpaceClass =
    "\\x{09}-\\x{0D}\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}"
    "\\x{205F}\\x{3000}";


}  // namespace

// ---------------------------------------------------------------------------------------------
// UTF-8

size_t utf8_len_at(std::string_view s, size_t i) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  if (b(i) < 0x80) return 1;
  const auto [n, lo, hi] = utf8_lead(b(i));
  if (n == 0 || i + n > s.size()) return 0;
  if (b(i + 1) < lo || b(i + 1) > hi) return 0;
  for (size_t k = 2; k < n; ++k)
    if (b(i + k) < 0x80 || b(i + k) > 0xBF) return 0;
  return n;
}

std::string utf8_lossy(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    const size_t n = utf8_len_at(s, i);
    if (n) {
      out.append(s.substr(i, n));
      i += n;
    } else {
      out += "\xEF\xBF\xBD";
      i += utf8_invalid_span(s, i);
    }
  }
  return out;
}

char32_t decode_cp(std::string_view s, size_t i, size_t n) {
  const auto b = [&](size_t k) { return char32_t(static_cast<unsigned char>(s[k])); };
  switch (n) {
    case 1: return b(i);
    case 2: return ((b(i) & 0x1F) << 6) | (b(i + 1) & 0x3F);
    case 3: return ((b(i) & 0x0F) << 12) | ((b(i + 1) & 0x3F) << 6) | (b(i + 2) & 0x3F);
    default: return ((b(i) & 0x07) << 18) | ((b(i + 1) & 0x3F) << 12) | ((b(i + 2) & 0x3F) << 6) | (b(i + 3) & 0x3F);
  }
}

bool is_white_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}

bool is_word_char(char32_t c) {
  if (c == 0x200C || c == 0x200D) return true;
  switch (utf8proc_category(utf8proc_int32_t(c))) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO: case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_MC: case UTF8PROC_CATEGORY_ME: case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL: case UTF8PROC_CATEGORY_PC:
      return true;
    default:
      return false;
  }
}

bool is_numeric_char(char32_t c) {
  const auto cat = utf8proc_category(utf8proc_int32_t(c));
  return cat == UTF8PROC_CATEGORY_ND || cat == UTF8PROC_CATEGORY_NL || cat == UTF8PROC_CATEGORY_NO;
}

std::string unicode_normalize(std::string_view s, Normalizer::Kind k, const std::string& file) {
  if (is_ascii(s)) return std::string(s);
  int opts = UTF8PROC_STABLE;
  if (k == Normalizer::NFC || k == Normalizer::NFKC) opts |= UTF8PROC_COMPOSE;
  else opts |= UTF8PROC_DECOMPOSE;
  if (k == Normalizer::NFKC || k == Normalizer::NFKD) opts |= UTF8PROC_COMPAT;
  utf8proc_uint8_t* out = nullptr;
  const utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(s.data()),
                                          utf8proc_ssize_t(s.size()), &out, utf8proc_option_t(opts));
  if (n < 0) fail(file, std::string("Unicode normalization failed: ") + utf8proc_errmsg(n));
  std::string r(reinterpret_cast<const char*>(out), size_t(n));
  std::free(out);
  return r;
}

ByteMap::ByteMap() {
  int n = 0;
  for (int b = 0; b < 256; ++b) {
    const bool keep = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    to_char[b] = keep ? char32_t(b) : char32_t(256 + n++);
    append_cp(to_utf8[b], to_char[b]);
    to_byte[to_char[b]] = uint8_t(b);
  }
}

const ByteMap& byte_map() {
  static const ByteMap m;
  return m;
}

// ---------------------------------------------------------------------------------------------
// PCRE2 regexes, with the Rust library's (Oniguruma's) \s: Unicode White_Space.

Regex::Regex(const Ctx& c, const std::string& where, const std::string& pattern) : where_(where) {
  const std::string translated = translate(c, where, pattern);
  int err = 0;
  PCRE2_SIZE off = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(),
                                   PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK, &err, &off, nullptr);
  if (!code) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof msg);
    c.bad(where + " regex does not compile at offset " + std::to_string(off) + ": " +
          reinterpret_cast<const char*>(msg));
  }
  code_.reset(code);
  jit_ = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
}

// \s and \S become explicit White_Space classes (PCRE2 10.42's \s leaves out U+0085, which
// Oniguruma's includes). \S inside a class cannot be written that way and is refused.
std::string Regex::translate(const Ctx& c, const std::string& where, const std::string& p) {
  std::string out;
  bool in_class = false;
  size_t class_start = 0;
  for (size_t i = 0; i < p.size(); ++i) {
    const char ch = p[i];
    if (ch == '\\' && i + 1 < p.size()) {
      const char e = p[i + 1];
      if (e == 's') {
        out += in_class ? std::string(kWhiteSpaceClass) : "[" + std::string(kWhiteSpaceClass) + "]";
      } else if (e == 'S') {
        if (in_class) c.bad(where + " regex uses \\S inside a character class, which is not supported");
        out += "[^" + std::string(kWhiteSpaceClass) + "]";
      } else {
        out += ch;
        out += e;
      }
      ++i;
      continue;
    }
    if (!in_class && ch == '[') {
      in_class = true;
      out += ch;
      if (i + 1 < p.size() && p[i + 1] == '^') out += p[++i];
      class_start = i + 1;
      if (i + 1 < p.size() && p[i + 1] == ']') out += p[++i];  // a leading ] is literal
      continue;
    }
    if (in_class && ch == '[' && i + 1 < p.size() && p[i + 1] == ':') {  // [:alpha:]
      const size_t end = p.find(":]", i + 2);
      if (end != std::string::npos) {
        out += p.substr(i, end + 2 - i);
        i = end + 1;
        continue;
      }
    }
    if (in_class && ch == ']' && i >= class_start) in_class = false;
    out += ch;
  }
  return out;
}

Matcher::Matcher() {
  mctx_ = pcre2_match_context_create(nullptr);
  pcre2_set_match_limit(mctx_, 20'000'000);
  pcre2_set_depth_limit(mctx_, 100'000);
  stack_ = pcre2_jit_stack_create(64 * 1024, 8 * 1024 * 1024, nullptr);
  if (stack_) pcre2_jit_stack_assign(mctx_, nullptr, stack_);
}

Matcher::~Matcher() {
  for (auto& [code, md] : data_) pcre2_match_data_free(md);
  if (stack_) pcre2_jit_stack_free(stack_);
  pcre2_match_context_free(mctx_);
}

void Matcher::find_all(const std::string& file, const Regex& re, std::string_view s,
                       std::vector<std::pair<size_t, size_t>>& out) {
  out.clear();
  pcre2_match_data*& md = data_[re.code()];
  if (!md) md = pcre2_match_data_create_from_pattern(re.code(), nullptr);
  size_t start = 0;
  while (start <= s.size()) {
    const int rc = re.jit()
        ? pcre2_jit_match(re.code(), reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), start, 0, md, mctx_)
        : pcre2_match(re.code(), reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), start, PCRE2_NO_UTF_CHECK, md, mctx_);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(rc, msg, sizeof msg);
      fail(file, re.where() + " regex failed on this text: " + reinterpret_cast<const char*>(msg));
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    const size_t a = ov[0], b = ov[1];
    if (b > a) {
      out.emplace_back(a, b);
      start = b;
    } else {  // an empty match: step over one character
      if (a >= s.size()) break;
      size_t n = utf8_len_at(s, a);
      start = a + (n ? n : 1);
    }
  }
}

void Pattern::find_all(Matcher& m, const std::string& file, std::string_view s,
                       std::vector<std::pair<size_t, size_t>>& out) const {
  if (regex) return m.find_all(file, *regex, s, out);
  out.clear();
  if (literal.empty()) return;
  size_t pos = 0;
  while ((pos = s.find(literal, pos)) != std::string_view::npos) {
    out.emplace_back(pos, pos + literal.size());
    pos += literal.size();
  }
}

void replace_all(const Pattern& pattern, const std::string& path, std::string& s, const std::string& with) {
  thread_local Matcher m;
  std::vector<std::pair<size_t, size_t>> hits;
  pattern.find_all(m, path, s, hits);
  if (hits.empty()) return;
  std::string r;
  size_t prev = 0;
  for (auto [a, b] : hits) {
    r.append(s, prev, a - prev);
    r += with;
    prev = b;
  }
  r.append(s, prev, std::string::npos);
  s.swap(r);
}

}  // namespace hf

// ---------------------------------------------------------------------------------------------
// The public UTF-8 helpers (hf_tokenizer.hpp).

std::optional<size_t> invalid_utf8_offset(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    const size_t n = hf::utf8_len_at(s, i);
    if (!n) return i;
    i += n;
  }
  return std::nullopt;
}

std::string visible_token_text(std::string_view bytes) {
  std::string out;
  size_t i = 0;
  char buf[8];
  while (i < bytes.size()) {
    const size_t n = hf::utf8_len_at(bytes, i);
    if (!n) {
      std::snprintf(buf, sizeof buf, "<0x%02X>", static_cast<unsigned char>(bytes[i]));
      out += buf;
      ++i;
      continue;
    }
    const char32_t cp = hf::decode_cp(bytes, i, n);
    if (cp == ' ') out += "\xE2\x90\xA3";        // ␣
    else if (cp == '\n') out += "\xE2\x86\xB5";  // ↵
    else if (cp == '\t') out += "\xE2\x87\xA5";  // ⇥
    else if (cp < 0x20 || cp == 0x7F) {
      std::snprintf(buf, sizeof buf, "<0x%02X>", unsigned(cp));
      out += buf;
    } else {
      out.append(bytes.substr(i, n));
    }
    i += n;
  }
  return out;
}

}  // namespace moelab
