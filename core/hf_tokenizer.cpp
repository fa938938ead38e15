// Hugging Face tokenizer.json, the parts MoE models use; see hf_tokenizer.hpp. The pipeline and
// its order follow the Rust `tokenizers` library (0.22): added tokens are cut out of the raw text
// (non-normalized ones), each remaining piece is normalized and the normalized added tokens are
// cut out of it, the pre-tokenizers split the pieces into words, BPE turns each word into ids,
// and the post-processor adds the template's special tokens. Decoding runs the decoder chain
// over the token strings. Written from the library's documented behaviour and checked against
// it on thousands of strings (tests/test_hf_tokenizer.cpp); no code is taken from it.
#include "hf_tokenizer.hpp"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <utf8proc.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <filesystem>
#include <functional>
#include <memory>
#include <queue>
#include <unordered_map>
#include <unordered_set>

#include <nlohmann/json.hpp>

#include "error.hpp"
#include "files.hpp"

namespace moelab {

using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

constexpr int64_t kMaxTokenizerFile = 192LL << 20;   // gpt-oss's is 28 MB
constexpr size_t kMaxVocab = 4u << 20;               // 4M entries; real ones are <= 262k
constexpr size_t kMaxMerges = 8u << 20;
constexpr size_t kMaxAddedTokens = 1u << 20;
constexpr size_t kMaxAddedTokenBytes = 1024;
constexpr size_t kMaxCachedWord = 256;               // as the Rust library: longer words are not cached
constexpr size_t kMaxCacheEntries = 100000;

// ---------------------------------------------------------------------------------------------
// UTF-8

// Length of the valid UTF-8 sequence at s[i], or 0 if the bytes there are not one.
size_t utf8_len_at(std::string_view s, size_t i) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = b(i);
  if (c < 0x80) return 1;
  size_t n = 0;
  unsigned char lo = 0x80, hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF) n = 2;
  else if (c == 0xE0) { n = 3; lo = 0xA0; }
  else if (c >= 0xE1 && c <= 0xEC) n = 3;
  else if (c == 0xED) { n = 3; hi = 0x9F; }
  else if (c >= 0xEE && c <= 0xEF) n = 3;
  else if (c == 0xF0) { n = 4; lo = 0x90; }
  else if (c >= 0xF1 && c <= 0xF3) n = 4;
  else if (c == 0xF4) { n = 4; hi = 0x8F; }
  else return 0;
  if (i + n > s.size()) return 0;
  if (b(i + 1) < lo || b(i + 1) > hi) return 0;
  for (size_t k = 2; k < n; ++k)
    if (b(i + k) < 0x80 || b(i + k) > 0xBF) return 0;
  return n;
}

// How many bytes at s[i] form the longest prefix of some valid sequence (at least 1): the
// "maximal subpart" that one U+FFFD replaces, as Rust's String::from_utf8_lossy does.
size_t utf8_invalid_span(std::string_view s, size_t i) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = b(i);
  size_t n = 0;
  unsigned char lo = 0x80, hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF) n = 2;
  else if (c == 0xE0) { n = 3; lo = 0xA0; }
  else if (c >= 0xE1 && c <= 0xEC) n = 3;
  else if (c == 0xED) { n = 3; hi = 0x9F; }
  else if (c >= 0xEE && c <= 0xEF) n = 3;
  else if (c == 0xF0) { n = 4; lo = 0x90; }
  else if (c >= 0xF1 && c <= 0xF3) n = 4;
  else if (c == 0xF4) { n = 4; hi = 0x8F; }
  else return 1;
  size_t k = 1;
  if (i + k < s.size() && b(i + k) >= lo && b(i + k) <= hi) {
    ++k;
    while (k < n && i + k < s.size() && b(i + k) >= 0x80 && b(i + k) <= 0xBF) ++k;
  }
  return k;
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

// Unicode's White_Space property (what Rust's char::is_whitespace, its regex \s and
// Oniguruma's \s mean).
bool is_white_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}
// The same set as a PCRE2 class body.
constexpr const char* kWhiteSpaceClass =
    "\\x{09}-\\x{0D}\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}"
    "\\x{205F}\\x{3000}";

// Rust regex's \w: alphabetic, marks, decimal digits, connector punctuation (and the joiners).
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

// The code points of a valid UTF-8 string, with their byte offsets.
template <class F>
void for_each_cp(std::string_view s, F&& f) {
  size_t i = 0;
  while (i < s.size()) {
    size_t n = utf8_len_at(s, i);
    if (n == 0) n = 1;  // not reached for validated text
    f(i, n, decode_cp(s, i, n));
    i += n;
  }
}

bool is_ascii(std::string_view s) {
  for (unsigned char c : s)
    if (c >= 0x80) return false;
  return true;
}

// GPT-2's reversible map of the 256 byte values to printable characters.
struct ByteMap {
  char32_t to_char[256];
  std::string to_utf8[256];
  std::unordered_map<char32_t, uint8_t> to_byte;
  ByteMap() {
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      const bool keep = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      to_char[b] = keep ? char32_t(b) : char32_t(256 + n++);
      append_cp(to_utf8[b], to_char[b]);
      to_byte[to_char[b]] = uint8_t(b);
    }
  }
};
const ByteMap& byte_map() {
  static const ByteMap m;
  return m;
}

// ---------------------------------------------------------------------------------------------
// JSON helpers: every error names the file and the field.

struct Ctx {
  std::string file;
  [[noreturn]] void bad(const std::string& what) const { fail(file, what); }
};

std::string shown(const json& j) {
  if (j.is_array()) return "a list";      // never dumped: a deeply nested value would recurse
  if (j.is_object()) return "an object";
  std::string s = j.is_string() ? j.get<std::string>() : j.dump(-1, ' ', false, json::error_handler_t::replace);
  if (s.size() > 60) s = s.substr(0, 57) + "...";
  return s;
}

const json* field(const json& o, const char* key) {
  auto it = o.find(key);
  return it == o.end() || it->is_null() ? nullptr : &*it;
}
std::string str_field(const Ctx& c, const json& o, const std::string& where, const char* key,
                      const std::string& def = {}, bool required = false) {
  const json* v = field(o, key);
  if (!v) {
    if (required) c.bad(where + " has no '" + key + "'");
    return def;
  }
  if (!v->is_string()) c.bad(where + "." + key + " must be a string, got " + shown(*v));
  return v->get<std::string>();
}
bool bool_field(const Ctx& c, const json& o, const std::string& where, const char* key, bool def) {
  const json* v = field(o, key);
  if (!v) return def;
  if (!v->is_boolean()) c.bad(where + "." + key + " must be true or false, got " + shown(*v));
  return v->get<bool>();
}
int64_t int_field(const Ctx& c, const json& o, const std::string& where, const char* key, int64_t def,
                  int64_t lo, int64_t hi) {
  const json* v = field(o, key);
  if (!v) return def;
  if (!v->is_number_integer()) c.bad(where + "." + key + " must be an integer, got " + shown(*v));
  const int64_t x = v->get<int64_t>();
  if (x < lo || x > hi) c.bad(where + "." + key + " = " + std::to_string(x) + " is out of range");
  return x;
}
// Refuse keys this implementation does not know (a newer file may carry one that matters).
void only_keys(const Ctx& c, const json& o, const std::string& where, std::initializer_list<const char*> keys) {
  for (auto it = o.begin(); it != o.end(); ++it) {
    bool ok = false;
    for (const char* k : keys) ok = ok || it.key() == k;
    if (!ok && !it->is_null()) c.bad(where + " has the field '" + it.key() + "', which is not supported");
  }
}
const json& obj(const Ctx& c, const json& j, const std::string& where) {
  if (!j.is_object()) c.bad(where + " must be an object, got " + shown(j));
  return j;
}
std::string type_of(const Ctx& c, const json& o, const std::string& where) {
  return str_field(c, obj(c, o, where), where, "type", {}, true);
}

// ---------------------------------------------------------------------------------------------
// PCRE2 regexes, with the Rust library's (Oniguruma's) \s: Unicode White_Space.

struct Pcre2CodeDeleter {
  void operator()(pcre2_code* p) const { pcre2_code_free(p); }
};

class Regex {
 public:
  Regex(const Ctx& c, const std::string& where, const std::string& pattern) : where_(where) {
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
  const std::string& where() const { return where_; }
  pcre2_code* code() const { return code_.get(); }
  bool jit() const { return jit_; }

 private:
  // \s and \S become explicit White_Space classes (PCRE2 10.42's \s leaves out U+0085, which
  // Oniguruma's includes). \S inside a class cannot be written that way and is refused.
  static std::string translate(const Ctx& c, const std::string& where, const std::string& p) {
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

  std::string where_;
  std::unique_ptr<pcre2_code, Pcre2CodeDeleter> code_;
  bool jit_ = false;
};

// Per-encode matching state (thread-safe: the compiled regexes are shared, this is not).
class Matcher {
 public:
  Matcher() {
    mctx_ = pcre2_match_context_create(nullptr);
    pcre2_set_match_limit(mctx_, 20'000'000);
    pcre2_set_depth_limit(mctx_, 100'000);
    stack_ = pcre2_jit_stack_create(64 * 1024, 8 * 1024 * 1024, nullptr);
    if (stack_) pcre2_jit_stack_assign(mctx_, nullptr, stack_);
  }
  ~Matcher() {
    for (auto& [code, md] : data_) pcre2_match_data_free(md);
    if (stack_) pcre2_jit_stack_free(stack_);
    pcre2_match_context_free(mctx_);
  }
  Matcher(const Matcher&) = delete;
  Matcher& operator=(const Matcher&) = delete;

  // All non-overlapping matches of re in s, left to right (empty matches are skipped).
  void find_all(const std::string& file, const Regex& re, std::string_view s,
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

 private:
  pcre2_match_context* mctx_ = nullptr;
  pcre2_jit_stack* stack_ = nullptr;
  std::unordered_map<const pcre2_code*, pcre2_match_data*> data_;
};

// ---------------------------------------------------------------------------------------------
// Pieces of text flowing through the pipeline.

struct Piece {
  std::string_view text;
  int32_t added_id = -1;   // >= 0: an added token, final
  bool at_start = false;   // begins at the start of the original text (Metaspace "first")
  bool byte_level = false; // text is raw bytes still to be mapped by the ByteLevel alphabet
};

// Storage for the strings pieces point into.
struct Arena {
  std::deque<std::string> strings;
  std::string_view keep(std::string s) {
    strings.push_back(std::move(s));
    return strings.back();
  }
};

struct SvHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};
using StrMap = std::unordered_map<std::string, int32_t, SvHash, std::equal_to<>>;

// ---------------------------------------------------------------------------------------------
// Pattern (Split, Replace): a literal string or a regex.

struct Pattern {
  std::string literal;
  std::unique_ptr<Regex> regex;
  void find_all(Matcher& m, const std::string& file, std::string_view s,
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
};

Pattern parse_pattern(const Ctx& c, const json& j, const std::string& where) {
  obj(c, j, where);
  Pattern p;
  if (const json* s = field(j, "String")) {
    if (!s->is_string()) c.bad(where + ".String must be a string");
    p.literal = s->get<std::string>();
    if (p.literal.empty()) c.bad(where + ".String is empty");
  } else if (const json* r = field(j, "Regex")) {
    if (!r->is_string()) c.bad(where + ".Regex must be a string");
    p.regex = std::make_unique<Regex>(c, where, r->get<std::string>());
  } else {
    c.bad(where + " must be {\"String\": ...} or {\"Regex\": ...}");
  }
  return p;
}

// ---------------------------------------------------------------------------------------------
// Normalizers: a string in, a string out.

struct Normalizer {
  enum Kind { NFC, NFD, NFKC, NFKD, Prepend, Replace, Strip } kind;
  std::string text;  // Prepend's prefix, Replace's content
  Pattern pattern;   // Replace
  bool left = false, right = false;  // Strip
};

constexpr int kMaxNesting = 8;

// A Sequence component ({"type": "Sequence", key: [items]}): checks its keys and its list, and calls
// each(item, "where.key[i]") for each item; nested Sequences deeper than kMaxNesting are refused by
// the caller's depth check.
template <typename Each>
void sequence_items(const Ctx& c, const json& j, const std::string& where, const char* key, size_t max_items, Each each) {
  only_keys(c, j, where, {"type", key});
  const json* list = field(j, key);
  if (!list || !list->is_array()) c.bad(where + "." + key + " must be a list");
  if (list->size() > max_items) {
    std::string m = where + "." + key + " has more than ";
    m += std::to_string(max_items);
    m += " entries";
    c.bad(m);
  }
  for (size_t i = 0; i < list->size(); ++i) {
    std::string w = where + "." + key + "[";
    w += std::to_string(i);
    w += "]";
    each((*list)[i], w);
  }
}

void parse_normalizer(const Ctx& c, const json& j, const std::string& where, std::vector<Normalizer>& out, int depth = 0) {
  if (depth > kMaxNesting) c.bad(where + ": Sequences nested more than 8 deep are not supported");
  const std::string t = type_of(c, j, where);
  Normalizer n{};
  if (t == "Sequence") {
    sequence_items(c, j, where, "normalizers", 64,
                   [&](const json& item, const std::string& w) { parse_normalizer(c, item, w, out, depth + 1); });
    return;
  }
  if (t == "NFC" || t == "NFD" || t == "NFKC" || t == "NFKD") {
    only_keys(c, j, where, {"type"});
    n.kind = t == "NFC" ? Normalizer::NFC : t == "NFD" ? Normalizer::NFD : t == "NFKC" ? Normalizer::NFKC : Normalizer::NFKD;
  } else if (t == "Prepend") {
    only_keys(c, j, where, {"type", "prepend"});
    n.kind = Normalizer::Prepend;
    n.text = str_field(c, j, where, "prepend", {}, true);
  } else if (t == "Replace") {
    only_keys(c, j, where, {"type", "pattern", "content"});
    n.kind = Normalizer::Replace;
    const json* p = field(j, "pattern");
    if (!p) c.bad(where + " has no 'pattern'");
    n.pattern = parse_pattern(c, *p, where + ".pattern");
    n.text = str_field(c, j, where, "content", {}, true);
  } else if (t == "Strip") {
    only_keys(c, j, where, {"type", "strip_left", "strip_right"});
    n.kind = Normalizer::Strip;
    n.left = bool_field(c, j, where, "strip_left", true);
    n.right = bool_field(c, j, where, "strip_right", true);
  } else {
    c.bad(where + ": normalizer type '" + t + "' is not supported (supported: Sequence, NFC, NFD, NFKC, NFKD, Prepend, Replace, Strip)");
  }
  out.push_back(std::move(n));
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

// ---------------------------------------------------------------------------------------------
// Pre-tokenizers: pieces in, smaller pieces out.

enum class SplitBehavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };

struct PreTokenizer {
  enum Kind { Split, ByteLevel, Metaspace, Digits } kind;
  Pattern pattern;  // Split
  SplitBehavior behavior = SplitBehavior::Isolated;
  bool invert = false;
  bool add_prefix_space = false, use_regex = true;  // ByteLevel
  std::string replacement;                          // Metaspace
  enum Prepend { Always, First, Never } prepend = Always;
  bool split = true;                                // Metaspace
  bool individual_digits = false;                   // Digits
};

constexpr const char* kGpt2Regex =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

SplitBehavior parse_behavior(const Ctx& c, const std::string& b, const std::string& where) {
  if (b == "Removed") return SplitBehavior::Removed;
  if (b == "Isolated") return SplitBehavior::Isolated;
  if (b == "MergedWithPrevious") return SplitBehavior::MergedWithPrevious;
  if (b == "MergedWithNext") return SplitBehavior::MergedWithNext;
  if (b == "Contiguous") return SplitBehavior::Contiguous;
  c.bad(where + ".behavior '" + b + "' is not a split behaviour");
}

void parse_pre_tokenizer(const Ctx& c, const json& j, const std::string& where, std::vector<PreTokenizer>& out, int depth = 0) {
  if (depth > kMaxNesting) c.bad(where + ": Sequences nested more than 8 deep are not supported");
  const std::string t = type_of(c, j, where);
  PreTokenizer p{};
  if (t == "Sequence") {
    sequence_items(c, j, where, "pretokenizers", 64,
                   [&](const json& item, const std::string& w) { parse_pre_tokenizer(c, item, w, out, depth + 1); });
    return;
  }
  if (t == "Split") {
    only_keys(c, j, where, {"type", "pattern", "behavior", "invert"});
    p.kind = PreTokenizer::Split;
    const json* pat = field(j, "pattern");
    if (!pat) c.bad(where + " has no 'pattern'");
    p.pattern = parse_pattern(c, *pat, where + ".pattern");
    p.behavior = parse_behavior(c, str_field(c, j, where, "behavior", {}, true), where);
    p.invert = bool_field(c, j, where, "invert", false);
  } else if (t == "ByteLevel") {
    only_keys(c, j, where, {"type", "add_prefix_space", "trim_offsets", "use_regex"});
    p.kind = PreTokenizer::ByteLevel;
    p.add_prefix_space = bool_field(c, j, where, "add_prefix_space", true);
    p.use_regex = bool_field(c, j, where, "use_regex", true);
    if (p.use_regex) p.pattern.regex = std::make_unique<Regex>(c, where, kGpt2Regex);
  } else if (t == "Metaspace") {
    only_keys(c, j, where, {"type", "replacement", "prepend_scheme", "split", "add_prefix_space", "str_rep"});
    p.kind = PreTokenizer::Metaspace;
    p.replacement = str_field(c, j, where, "replacement", "\xE2\x96\x81");
    if (p.replacement.empty() || utf8_len_at(p.replacement, 0) != p.replacement.size())
      c.bad(where + ".replacement must be one character");
    std::string scheme = str_field(c, j, where, "prepend_scheme", "");
    if (scheme.empty()) scheme = bool_field(c, j, where, "add_prefix_space", true) ? "always" : "never";
    if (scheme == "always") p.prepend = PreTokenizer::Always;
    else if (scheme == "first") p.prepend = PreTokenizer::First;
    else if (scheme == "never") p.prepend = PreTokenizer::Never;
    else c.bad(where + ".prepend_scheme '" + scheme + "' is not always, first or never");
    p.split = bool_field(c, j, where, "split", true);
  } else if (t == "Digits") {
    only_keys(c, j, where, {"type", "individual_digits"});
    p.kind = PreTokenizer::Digits;
    p.individual_digits = bool_field(c, j, where, "individual_digits", false);
  } else {
    c.bad(where + ": pre_tokenizer type '" + t + "' is not supported (supported: Sequence, Split, ByteLevel, Metaspace, Digits)");
  }
  out.push_back(std::move(p));
}

// Cut s at the matches (flagged true) following a split behaviour; spans are [a, b).
void apply_behavior(SplitBehavior beh, std::vector<std::tuple<size_t, size_t, bool>>& spans) {
  std::vector<std::tuple<size_t, size_t, bool>> out;
  switch (beh) {
    case SplitBehavior::Isolated:
      return;
    case SplitBehavior::Removed:
      for (auto& s : spans)
        if (!std::get<2>(s)) out.push_back(s);
      break;
    case SplitBehavior::MergedWithPrevious: {
      bool prev_match = false;
      for (auto& [a, b, m] : spans) {
        if (m && !prev_match && !out.empty()) std::get<1>(out.back()) = b;
        else out.emplace_back(a, b, false);
        prev_match = m;
      }
      break;
    }
    case SplitBehavior::MergedWithNext: {
      bool prev_match = false;
      for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
        auto& [a, b, m] = *it;
        if (m && !prev_match && !out.empty()) std::get<0>(out.back()) = a;
        else out.emplace_back(a, b, false);
        prev_match = m;
      }
      std::reverse(out.begin(), out.end());
      break;
    }
    case SplitBehavior::Contiguous: {
      bool prev_match = false;
      bool first = true;
      for (auto& [a, b, m] : spans) {
        if (!first && m == prev_match) std::get<1>(out.back()) = b;
        else out.emplace_back(a, b, false);
        prev_match = m;
        first = false;
      }
      break;
    }
  }
  spans.swap(out);
}

// ---------------------------------------------------------------------------------------------
// Decoders: token strings in, strings out.

struct Decoder {
  enum Kind { ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip } kind;
  Pattern pattern;
  std::string content;      // Replace's content, Strip's character, Metaspace's replacement
  int64_t start = 0, stop = 0;
  bool prepend_never = false;
};

void parse_decoder(const Ctx& c, const json& j, const std::string& where, std::vector<Decoder>& out, int depth = 0) {
  if (depth > kMaxNesting) c.bad(where + ": Sequences nested more than 8 deep are not supported");
  const std::string t = type_of(c, j, where);
  Decoder d{};
  if (t == "Sequence") {
    sequence_items(c, j, where, "decoders", 64,
                   [&](const json& item, const std::string& w) { parse_decoder(c, item, w, out, depth + 1); });
    return;
  }
  if (t == "ByteLevel") {
    only_keys(c, j, where, {"type", "add_prefix_space", "trim_offsets", "use_regex"});
    d.kind = Decoder::ByteLevel;
  } else if (t == "Metaspace") {
    only_keys(c, j, where, {"type", "replacement", "prepend_scheme", "split", "add_prefix_space", "str_rep"});
    d.kind = Decoder::Metaspace;
    d.content = str_field(c, j, where, "replacement", "\xE2\x96\x81");
    if (d.content.empty() || utf8_len_at(d.content, 0) != d.content.size())
      c.bad(where + ".replacement must be one character");
    std::string scheme = str_field(c, j, where, "prepend_scheme", "");
    if (scheme.empty()) scheme = bool_field(c, j, where, "add_prefix_space", true) ? "always" : "never";
    if (scheme != "always" && scheme != "first" && scheme != "never")
      c.bad(where + ".prepend_scheme '" + scheme + "' is not always, first or never");
    d.prepend_never = scheme == "never";
  } else if (t == "Replace") {
    only_keys(c, j, where, {"type", "pattern", "content"});
    d.kind = Decoder::Replace;
    const json* p = field(j, "pattern");
    if (!p) c.bad(where + " has no 'pattern'");
    d.pattern = parse_pattern(c, *p, where + ".pattern");
    d.content = str_field(c, j, where, "content", {}, true);
  } else if (t == "ByteFallback") {
    only_keys(c, j, where, {"type"});
    d.kind = Decoder::ByteFallback;
  } else if (t == "Fuse") {
    only_keys(c, j, where, {"type"});
    d.kind = Decoder::Fuse;
  } else if (t == "Strip") {
    only_keys(c, j, where, {"type", "content", "start", "stop"});
    d.kind = Decoder::Strip;
    d.content = str_field(c, j, where, "content", " ");
    if (d.content.empty() || utf8_len_at(d.content, 0) != d.content.size())
      c.bad(where + ".content must be one character");
    d.start = int_field(c, j, where, "start", 0, 0, 1 << 20);
    d.stop = int_field(c, j, where, "stop", 0, 0, 1 << 20);
  } else {
    c.bad(where + ": decoder type '" + t + "' is not supported (supported: Sequence, ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip)");
  }
  out.push_back(std::move(d));
}

bool byte_token(std::string_view t, uint8_t& byte) {
  if (t.size() != 6 || t.substr(0, 3) != "<0x" || t[5] != '>') return false;
  int v = 0;
  for (int k = 3; k < 5; ++k) {
    const char ch = t[size_t(k)];
    int d = ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10 : -1;
    if (d < 0) return false;
    v = v * 16 + d;
  }
  byte = uint8_t(v);
  return true;
}

}  // namespace

// ---------------------------------------------------------------------------------------------

struct AddedToken {
  int32_t id = 0;
  std::string content;
  std::string match;  // content as matched (normalized for normalized tokens)
  bool single_word = false, lstrip = false, rstrip = false, normalized = true, special = false;
};

// Leftmost-longest matching of a set of strings (what the Rust library's Aho-Corasick does).
struct TokenTrie {
  struct Node {
    std::vector<std::pair<uint8_t, int32_t>> next;  // sorted by byte
    int32_t token = -1;                             // index into the token list
  };
  std::vector<Node> nodes{1};
  bool first[256] = {};
  bool empty() const { return nodes.size() == 1; }
  void add(std::string_view s, int32_t token) {
    int32_t n = 0;
    for (unsigned char ch : s) {
      auto& nx = nodes[size_t(n)].next;
      auto it = std::lower_bound(nx.begin(), nx.end(), std::make_pair(ch, int32_t(-1)));
      if (it != nx.end() && it->first == ch) {
        n = it->second;
      } else {
        const int32_t m = int32_t(nodes.size());
        nx.insert(it, {ch, m});
        nodes.emplace_back();
        n = m;
      }
    }
    if (nodes[size_t(n)].token < 0) nodes[size_t(n)].token = token;
    first[static_cast<unsigned char>(s[0])] = true;
  }
  // The longest token starting at s[i]: (token, length) or (-1, 0).
  std::pair<int32_t, size_t> longest_at(std::string_view s, size_t i) const {
    int32_t n = 0, best = -1;
    size_t best_len = 0;
    for (size_t k = i; k < s.size(); ++k) {
      const auto& nx = nodes[size_t(n)].next;
      const unsigned char ch = static_cast<unsigned char>(s[k]);
      auto it = std::lower_bound(nx.begin(), nx.end(), std::make_pair(ch, int32_t(-1)));
      if (it == nx.end() || it->first != ch) break;
      n = it->second;
      if (nodes[size_t(n)].token >= 0) {
        best = nodes[size_t(n)].token;
        best_len = k + 1 - i;
      }
    }
    return {best, best_len};
  }
};

struct HfTokenizerImpl {
  std::string path;
  // model
  StrMap vocab;
  std::vector<std::string> id_piece;   // by id; "" where none
  std::vector<uint8_t> has_piece;
  std::unordered_map<uint64_t, uint64_t> merges;  // (left << 32 | right) -> (rank << 32 | new id)
  std::optional<int32_t> unk_id;
  std::string prefix, suffix;  // continuing_subword_prefix, end_of_word_suffix
  bool fuse_unk = false, byte_fallback = false, ignore_merges = false;
  int32_t byte_fallback_id[256];
  int32_t byte_level_id[256];  // the id of each byte's ByteLevel character, -1 if none
  // added tokens
  std::vector<AddedToken> added;
  std::unordered_map<int32_t, size_t> added_by_id;
  TokenTrie raw_trie, norm_trie;
  std::vector<int32_t> raw_ids, norm_ids;  // trie token index -> added index
  // pipeline
  std::vector<Normalizer> normalizers;
  std::vector<PreTokenizer> pre_tokenizers;
  std::vector<Decoder> decoders;
  bool has_decoder = false;
  std::vector<std::pair<bool, std::vector<int32_t>>> template_single;  // (is sequence, special ids)
  bool has_template = false;
  // tokenizer_config.json
  std::optional<int32_t> bos, eos;
  bool add_bos = false, add_eos = false, cleanup_spaces = false;
  int64_t max_id = -1;
  bool byte_level_model = false;

  std::string normalize(std::string_view s) const;
  void pre_tokenize(std::vector<Piece>& pieces, Arena& arena, Matcher& m) const;
  void bpe(std::string_view word, bool byte_level, std::vector<int32_t>& out,
           std::unordered_map<std::string, std::vector<int32_t>>& cache) const;
  void merge_word(std::vector<int32_t>& syms, std::vector<uint32_t>& lens) const;
  void split_added(std::string_view s, bool at_start, bool normalized_set, std::vector<Piece>& out) const;
  std::vector<std::string> decode_chain(std::vector<std::string> tokens, bool display) const;
};

// Every match of `pattern` in s replaced by `with` (the Replace normalizer and decoder).
static void replace_all(const Pattern& pattern, const std::string& path, std::string& s, const std::string& with) {
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

std::string HfTokenizerImpl::normalize(std::string_view s) const {
  std::string cur(s);
  for (const Normalizer& n : normalizers) {
    switch (n.kind) {
      case Normalizer::NFC: case Normalizer::NFD: case Normalizer::NFKC: case Normalizer::NFKD:
        cur = unicode_normalize(cur, n.kind, path);
        break;
      case Normalizer::Prepend:
        if (!cur.empty()) cur = n.text + cur;
        break;
      case Normalizer::Replace:
        replace_all(n.pattern, path, cur, n.text);
        break;
      case Normalizer::Strip: {
        size_t a = 0, b = cur.size();
        if (n.left) {
          while (a < b) {
            const size_t len = utf8_len_at(cur, a);
            if (!len || !is_white_space(decode_cp(cur, a, len))) break;
            a += len;
          }
        }
        if (n.right) {
          while (b > a) {
            size_t k = b - 1;
            while (k > a && (static_cast<unsigned char>(cur[k]) & 0xC0) == 0x80) --k;
            const size_t len = utf8_len_at(cur, k);
            if (!len || !is_white_space(decode_cp(cur, k, len))) break;
            b = k;
          }
        }
        cur = cur.substr(a, b - a);
        break;
      }
    }
  }
  return cur;
}

void HfTokenizerImpl::split_added(std::string_view s, bool at_start, bool normalized_set,
                                  std::vector<Piece>& out) const {
  const TokenTrie& trie = normalized_set ? norm_trie : raw_trie;
  const std::vector<int32_t>& ids = normalized_set ? norm_ids : raw_ids;
  if (trie.empty() || s.empty()) {
    out.push_back(Piece{s, -1, at_start, false});
    return;
  }
  size_t start_offset = 0, i = 0;
  while (i < s.size()) {
    if (!trie.first[static_cast<unsigned char>(s[i])]) {
      ++i;
      continue;
    }
    auto [tok, len] = trie.longest_at(s, i);
    if (tok < 0) {
      ++i;
      continue;
    }
    const AddedToken& at = added[size_t(ids[size_t(tok)])];
    size_t start = i, stop = i + len;
    i = stop;  // the next search starts after this match, kept or not
    if (at.single_word) {
      bool start_space = true, stop_space = true;
      if (start > 0) {
        size_t k = start - 1;
        while (k > 0 && (static_cast<unsigned char>(s[k]) & 0xC0) == 0x80) --k;
        const size_t n = utf8_len_at(s, k);
        start_space = !(n && is_word_char(decode_cp(s, k, n)));
      }
      if (stop < s.size()) {
        const size_t n = utf8_len_at(s, stop);
        stop_space = !(n && is_word_char(decode_cp(s, stop, n)));
      }
      if (!start_space || !stop_space) continue;
    }
    if (at.lstrip) {
      size_t ns = start;
      while (ns > 0) {
        size_t k = ns - 1;
        while (k > 0 && (static_cast<unsigned char>(s[k]) & 0xC0) == 0x80) --k;
        const size_t n = utf8_len_at(s, k);
        if (!n || !is_white_space(decode_cp(s, k, n))) break;
        ns = k;
      }
      start = std::max(ns, start_offset);
    }
    if (at.rstrip) {
      while (stop < s.size()) {
        const size_t n = utf8_len_at(s, stop);
        if (!n || !is_white_space(decode_cp(s, stop, n))) break;
        stop += n;
      }
      i = stop;
    }
    if (start_offset < start) out.push_back(Piece{s.substr(start_offset, start - start_offset), -1, at_start && start_offset == 0, false});
    out.push_back(Piece{s.substr(start, stop - start), at.id, false, false});
    start_offset = stop;
  }
  if (start_offset < s.size()) out.push_back(Piece{s.substr(start_offset), -1, at_start && start_offset == 0, false});
}

void HfTokenizerImpl::pre_tokenize(std::vector<Piece>& pieces, Arena& arena, Matcher& m) const {
  std::vector<Piece> next;
  std::vector<std::pair<size_t, size_t>> hits;
  std::vector<std::tuple<size_t, size_t, bool>> spans;
  for (const PreTokenizer& p : pre_tokenizers) {
    next.clear();
    for (const Piece& pc : pieces) {
      if (pc.added_id >= 0) {
        next.push_back(pc);
        continue;
      }
      if (pc.text.empty()) continue;  // the Rust library drops empty pieces at every split
      std::string_view s = pc.text;
      switch (p.kind) {
        case PreTokenizer::ByteLevel: {
          if (pc.byte_level) fail(path, "pre_tokenizer applies ByteLevel twice, which is not supported");
          if (p.add_prefix_space && s[0] != ' ') s = arena.keep(" " + std::string(s));
          if (p.use_regex) {
            p.pattern.find_all(m, path, s, hits);
            spans.clear();
            size_t prev = 0;
            for (auto [a, b] : hits) {
              if (prev < a) spans.emplace_back(prev, a, false);
              spans.emplace_back(a, b, true);
              prev = b;
            }
            if (prev < s.size()) spans.emplace_back(prev, s.size(), false);
            for (auto& [a, b, mm] : spans)
              if (b > a) next.push_back(Piece{s.substr(a, b - a), -1, pc.at_start && a == 0, true});
          } else if (!s.empty()) {
            next.push_back(Piece{s, -1, pc.at_start, true});
          }
          break;
        }
        case PreTokenizer::Split:
        case PreTokenizer::Digits: {
          if (pc.byte_level) fail(path, "pre_tokenizer splits after ByteLevel, which is not supported");
          if (p.kind == PreTokenizer::Split) {
            p.pattern.find_all(m, path, s, hits);
          } else {
            hits.clear();
            for_each_cp(s, [&](size_t i, size_t n, char32_t cp) {
              const auto cat = utf8proc_category(utf8proc_int32_t(cp));
              if (cat == UTF8PROC_CATEGORY_ND || cat == UTF8PROC_CATEGORY_NL || cat == UTF8PROC_CATEGORY_NO)
                hits.emplace_back(i, i + n);
            });
          }
          spans.clear();
          size_t prev = 0;
          for (auto [a, b] : hits) {
            if (prev < a) spans.emplace_back(prev, a, false);
            spans.emplace_back(a, b, true);
            prev = b;
          }
          if (prev < s.size()) spans.emplace_back(prev, s.size(), false);
          if (p.invert)
            for (auto& sp : spans) std::get<2>(sp) = !std::get<2>(sp);
          const SplitBehavior beh = p.kind == PreTokenizer::Split ? p.behavior
                                    : p.individual_digits         ? SplitBehavior::Isolated
                                                                  : SplitBehavior::Contiguous;
          apply_behavior(beh, spans);
          for (auto& [a, b, mm] : spans)
            if (b > a) next.push_back(Piece{s.substr(a, b - a), -1, pc.at_start && a == 0, false});
          break;
        }
        case PreTokenizer::Metaspace: {
          if (pc.byte_level) fail(path, "pre_tokenizer applies Metaspace after ByteLevel, which is not supported");
          std::string r;
          r.reserve(s.size() + 8);
          for (char ch : s) {
            if (ch == ' ') r += p.replacement;
            else r.push_back(ch);
          }
          const bool starts = r.compare(0, p.replacement.size(), p.replacement) == 0;
          if (!starts && (p.prepend == PreTokenizer::Always || (p.prepend == PreTokenizer::First && pc.at_start)))
            r = p.replacement + r;
          std::string_view v = arena.keep(std::move(r));
          if (!p.split) {
            if (!v.empty()) next.push_back(Piece{v, -1, pc.at_start, false});
            break;
          }
          // MergedWithNext on the replacement character: each piece starts at one.
          size_t a = 0;
          size_t pos = v.find(p.replacement, 1);
          while (pos != std::string_view::npos) {
            if (pos > a) next.push_back(Piece{v.substr(a, pos - a), -1, pc.at_start && a == 0, false});
            a = pos;
            pos = v.find(p.replacement, pos + p.replacement.size());
          }
          if (a < v.size()) next.push_back(Piece{v.substr(a), -1, pc.at_start && a == 0, false});
          break;
        }
      }
    }
    pieces.swap(next);
  }
}

void HfTokenizerImpl::merge_word(std::vector<int32_t>& syms, std::vector<uint32_t>& lens) const {
  const size_t n = syms.size();
  if (n < 2 || merges.empty()) return;
  struct Merge {
    uint32_t rank;
    uint32_t pos;
    int32_t new_id;
    bool operator<(const Merge& o) const {  // priority_queue pops the largest: invert
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  std::vector<int32_t> prev(n), next(n);
  for (size_t i = 0; i < n; ++i) {
    prev[i] = int32_t(i) - 1;
    next[i] = i + 1 < n ? int32_t(i + 1) : -1;
  }
  const auto lookup = [&](int32_t a, int32_t b) -> const uint64_t* {
    auto it = merges.find((uint64_t(uint32_t(a)) << 32) | uint32_t(b));
    return it == merges.end() ? nullptr : &it->second;
  };
  std::priority_queue<Merge> q;
  for (size_t i = 0; i + 1 < n; ++i)
    if (const uint64_t* m = lookup(syms[i], syms[i + 1])) q.push(Merge{uint32_t(*m >> 32), uint32_t(i), int32_t(uint32_t(*m))});
  while (!q.empty()) {
    const Merge top = q.top();
    q.pop();
    const size_t pos = top.pos;
    if (lens[pos] == 0 || next[pos] < 0) continue;
    const size_t right = size_t(next[pos]);
    const uint64_t* m = lookup(syms[pos], syms[right]);
    if (!m || int32_t(uint32_t(*m)) != top.new_id) continue;
    syms[pos] = top.new_id;
    lens[pos] += lens[right];
    lens[right] = 0;
    next[pos] = next[right];
    if (next[right] >= 0) prev[size_t(next[right])] = int32_t(pos);
    if (prev[pos] >= 0) {
      const size_t p = size_t(prev[pos]);
      if (const uint64_t* pm = lookup(syms[p], syms[pos])) q.push(Merge{uint32_t(*pm >> 32), uint32_t(p), int32_t(uint32_t(*pm))});
    }
    if (next[pos] >= 0) {
      if (const uint64_t* nm = lookup(syms[pos], syms[size_t(next[pos])]))
        q.push(Merge{uint32_t(*nm >> 32), uint32_t(pos), int32_t(uint32_t(*nm))});
    }
  }
  size_t k = 0;
  for (size_t i = 0; i < n; ++i)
    if (lens[i]) {
      syms[k] = syms[i];
      lens[k] = lens[i];
      ++k;
    }
  syms.resize(k);
  lens.resize(k);
}

void HfTokenizerImpl::bpe(std::string_view word, bool byte_level, std::vector<int32_t>& out,
                          std::unordered_map<std::string, std::vector<int32_t>>& cache) const {
  if (word.empty()) return;
  const bool fast = byte_level && prefix.empty() && suffix.empty();
  std::string mapped;
  std::string_view w = word;
  if (byte_level && (!fast || ignore_merges)) {
    const ByteMap& bm = byte_map();
    mapped.reserve(word.size() * 2);
    for (unsigned char ch : word) mapped += bm.to_utf8[ch];
    w = mapped;
  }
  if (ignore_merges) {
    if (auto it = vocab.find(w); it != vocab.end()) {
      out.push_back(it->second);
      return;
    }
  }
  const bool cacheable = word.size() < kMaxCachedWord;
  std::string key;
  if (cacheable) {
    key.assign(word);
    if (auto it = cache.find(key); it != cache.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> syms;
  std::vector<uint32_t> lens;
  if (fast) {
    syms.reserve(word.size());
    for (unsigned char ch : word) {
      const int32_t id = byte_level_id[ch];
      if (id >= 0) {  // a byte whose character is not in the vocabulary is dropped, as in Rust
        syms.push_back(id);
        lens.push_back(1);
      }
    }
  } else {
    std::optional<std::pair<int32_t, uint32_t>> unk;
    std::string sym;
    size_t i = 0;
    while (i < w.size()) {
      size_t n = utf8_len_at(w, i);
      if (!n) n = 1;
      const bool first = i == 0, last = i + n == w.size();
      sym.clear();
      if (!first) sym += prefix;
      sym.append(w.substr(i, n));
      if (last) sym += suffix;
      i += n;
      if (auto it = vocab.find(sym); it != vocab.end()) {
        if (unk) {
          syms.push_back(unk->first);
          lens.push_back(unk->second);
          unk.reset();
        }
        syms.push_back(it->second);
        lens.push_back(uint32_t(n));
        continue;
      }
      if (byte_fallback) {
        bool all = true;
        for (unsigned char ch : sym) all = all && byte_fallback_id[ch] >= 0;
        if (all) {
          // As in Rust, a pending unknown is not flushed first: it comes after these bytes.
          for (unsigned char ch : sym) {
            syms.push_back(byte_fallback_id[ch]);
            lens.push_back(1);
          }
          continue;
        }
      }
      if (unk_id) {
        if (unk && fuse_unk) {
          unk->second += uint32_t(n);
        } else {
          if (unk) {
            syms.push_back(unk->first);
            lens.push_back(unk->second);
          }
          unk = std::make_pair(*unk_id, uint32_t(n));
        }
      }
    }
    if (unk) {
      syms.push_back(unk->first);
      lens.push_back(unk->second);
    }
  }
  merge_word(syms, lens);
  out.insert(out.end(), syms.begin(), syms.end());
  if (cacheable && cache.size() < kMaxCacheEntries) cache.emplace(std::move(key), std::move(syms));
}

std::vector<std::string> HfTokenizerImpl::decode_chain(std::vector<std::string> tokens, bool display) const {
  for (const Decoder& d : decoders) {
    switch (d.kind) {
      case Decoder::ByteLevel: {
        const ByteMap& bm = byte_map();
        std::string bytes;
        for (const std::string& t : tokens) {
          std::string b;
          bool ok = true;
          for_each_cp(t, [&](size_t, size_t, char32_t cp) {
            if (!ok) return;
            auto it = bm.to_byte.find(cp);
            if (it == bm.to_byte.end()) ok = false;
            else b.push_back(char(it->second));
          });
          bytes += ok ? b : t;
        }
        tokens.assign(1, display ? bytes : utf8_lossy(bytes));
        break;
      }
      case Decoder::Metaspace:
        for (size_t i = 0; i < tokens.size(); ++i) {
          std::string r;
          const std::string& t = tokens[i];
          size_t pos = 0;
          while (pos < t.size()) {
            if (t.compare(pos, d.content.size(), d.content) == 0) {
              if (!(i == 0 && !d.prepend_never && !display)) r.push_back(' ');
              pos += d.content.size();
            } else {
              r.push_back(t[pos++]);
            }
          }
          tokens[i].swap(r);
        }
        break;
      case Decoder::Replace:
        for (std::string& t : tokens) replace_all(d.pattern, path, t, d.content);
        break;
      case Decoder::ByteFallback: {
        std::vector<std::string> out;
        std::string pending;
        size_t npending = 0;
        const auto flush = [&] {
          if (!npending) return;
          if (display || !invalid_utf8_offset(pending)) {
            out.push_back(pending);
          } else {
            for (size_t k = 0; k < npending; ++k) out.emplace_back("\xEF\xBF\xBD");
          }
          pending.clear();
          npending = 0;
        };
        for (std::string& t : tokens) {
          uint8_t b = 0;
          if (byte_token(t, b)) {
            pending.push_back(char(b));
            ++npending;
          } else {
            flush();
            out.push_back(std::move(t));
          }
        }
        flush();
        tokens.swap(out);
        break;
      }
      case Decoder::Fuse: {
        std::string all;
        for (const std::string& t : tokens) all += t;
        tokens.assign(1, all);
        break;
      }
      case Decoder::Strip: {
        if (display) break;
        for (std::string& t : tokens) {
          size_t a = 0, b = t.size();
          for (int64_t k = 0; k < d.start && a < b && t.compare(a, d.content.size(), d.content) == 0; ++k)
            a += d.content.size();
          for (int64_t k = 0; k < d.stop && b >= a + d.content.size() &&
                              t.compare(b - d.content.size(), d.content.size(), d.content) == 0; ++k)
            b -= d.content.size();
          t = t.substr(a, b - a);
        }
        break;
      }
    }
  }
  return tokens;
}

// ---------------------------------------------------------------------------------------------
// Loading.

namespace {

void parse_model(const Ctx& c, const json& j, HfTokenizerImpl& t) {
  const std::string where = "model";
  obj(c, j, where);
  const std::string type = str_field(c, j, where, "type", "BPE");
  if (type != "BPE")
    c.bad("model type '" + type + "' is not supported (only BPE; WordPiece, Unigram and WordLevel are not)");
  only_keys(c, j, where, {"type", "dropout", "unk_token", "continuing_subword_prefix", "end_of_word_suffix",
                          "fuse_unk", "byte_fallback", "ignore_merges", "vocab", "merges"});
  if (const json* d = field(j, "dropout")) {
    if (!d->is_number()) c.bad("model.dropout must be a number or null, got " + shown(*d));
    if (d->get<double>() != 0.0)
      c.bad("model.dropout = " + shown(*d) + " (BPE dropout is random; only null or 0 is supported)");
  }
  t.prefix = str_field(c, j, where, "continuing_subword_prefix", "");
  t.suffix = str_field(c, j, where, "end_of_word_suffix", "");
  t.fuse_unk = bool_field(c, j, where, "fuse_unk", false);
  t.byte_fallback = bool_field(c, j, where, "byte_fallback", false);
  t.ignore_merges = bool_field(c, j, where, "ignore_merges", false);

  const json* v = field(j, "vocab");
  if (!v || !v->is_object()) c.bad("model.vocab must be an object of token: id");
  if (v->size() > kMaxVocab) c.bad("model.vocab has " + std::to_string(v->size()) + " entries, more than the 4,194,304 supported");
  t.vocab.reserve(v->size());
  int64_t max_id = -1;
  for (auto it = v->begin(); it != v->end(); ++it) {
    if (!it->is_number_integer()) c.bad("model.vocab['" + shown(it.key()) + "'] must be an integer id, got " + shown(*it));
    const int64_t id = it->get<int64_t>();
    if (id < 0 || id > int64_t(2 * kMaxVocab))
      c.bad("model.vocab['" + shown(it.key()) + "'] = " + std::to_string(id) + " is not a plausible token id");
    if (invalid_utf8_offset(it.key())) c.bad("model.vocab has a token that is not valid UTF-8");
    t.vocab.emplace(it.key(), int32_t(id));
    max_id = std::max(max_id, id);
  }
  if (max_id >= int64_t(2 * v->size() + 65536))
    c.bad("model.vocab ids reach " + std::to_string(max_id) + " for " + std::to_string(v->size()) + " tokens (ids must be dense)");
  t.id_piece.assign(size_t(max_id + 1), std::string());
  t.has_piece.assign(size_t(max_id + 1), 0);
  for (const auto& [s, id] : t.vocab) {
    t.id_piece[size_t(id)] = s;
    t.has_piece[size_t(id)] = 1;
  }
  t.max_id = max_id;

  const std::string unk = str_field(c, j, where, "unk_token", "");
  if (!unk.empty()) {
    auto it = t.vocab.find(unk);
    if (it == t.vocab.end()) c.bad("model.unk_token '" + shown(unk) + "' is not in the vocabulary");
    t.unk_id = it->second;
  }
  for (int b = 0; b < 256; ++b) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "<0x%02X>", b);
    auto it = t.vocab.find(std::string_view(buf));
    t.byte_fallback_id[b] = it == t.vocab.end() ? -1 : it->second;
    auto jt = t.vocab.find(std::string_view(byte_map().to_utf8[b]));
    t.byte_level_id[b] = jt == t.vocab.end() ? -1 : jt->second;
  }

  const json* m = field(j, "merges");
  if (!m) return;
  if (!m->is_array()) c.bad("model.merges must be a list");
  if (m->size() > kMaxMerges) c.bad("model.merges has " + std::to_string(m->size()) + " entries, more than supported");
  t.merges.reserve(m->size());
  std::string merged;
  for (size_t i = 0; i < m->size(); ++i) {
    const json& e = (*m)[i];
    std::string a, b;
    if (e.is_string()) {
      const std::string& s = e.get_ref<const std::string&>();
      const size_t sp = s.find(' ');
      if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
        c.bad("model.merges[" + std::to_string(i) + "] '" + shown(s) + "' is not two tokens separated by one space");
      a = s.substr(0, sp);
      b = s.substr(sp + 1);
    } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {
      a = e[0].get<std::string>();
      b = e[1].get<std::string>();
    } else {
      c.bad("model.merges[" + std::to_string(i) + "] must be \"a b\" or [\"a\", \"b\"], got " + shown(e));
    }
    auto ia = t.vocab.find(a), ib = t.vocab.find(b);
    if (ia == t.vocab.end() || ib == t.vocab.end())
      c.bad("model.merges[" + std::to_string(i) + "] names '" + shown(ia == t.vocab.end() ? a : b) + "', which is not in the vocabulary");
    if (!t.prefix.empty()) {
      if (b.size() < t.prefix.size()) c.bad("model.merges[" + std::to_string(i) + "]: '" + shown(b) + "' is shorter than continuing_subword_prefix");
      merged = a + b.substr(t.prefix.size());
    } else {
      merged = a + b;
    }
    auto in = t.vocab.find(merged);
    if (in == t.vocab.end())
      c.bad("model.merges[" + std::to_string(i) + "] makes '" + shown(merged) + "', which is not in the vocabulary");
    t.merges[(uint64_t(uint32_t(ia->second)) << 32) | uint32_t(ib->second)] = (uint64_t(i) << 32) | uint32_t(in->second);
  }
}

void parse_added(const Ctx& c, const json& j, HfTokenizerImpl& t) {
  if (!j.is_array()) c.bad("added_tokens must be a list");
  if (j.size() > kMaxAddedTokens) c.bad("added_tokens has more than 1,048,576 entries");
  const int64_t model_size = int64_t(t.vocab.size());
  std::unordered_map<std::string, int32_t> by_content;
  int64_t max_added = -1;
  for (size_t i = 0; i < j.size(); ++i) {
    const std::string where = "added_tokens[" + std::to_string(i) + "]";
    const json& e = obj(c, j[i], where);
    only_keys(c, e, where, {"id", "content", "single_word", "lstrip", "rstrip", "normalized", "special"});
    AddedToken a;
    a.content = str_field(c, e, where, "content", {}, true);
    if (a.content.empty()) c.bad(where + " has empty content");
    if (a.content.size() > kMaxAddedTokenBytes)
      c.bad(where + " is " + std::to_string(a.content.size()) + " bytes long, more than the 1024 supported");
    if (invalid_utf8_offset(a.content)) c.bad(where + ".content is not valid UTF-8");
    a.special = bool_field(c, e, where, "special", false);
    a.single_word = bool_field(c, e, where, "single_word", false);
    a.lstrip = bool_field(c, e, where, "lstrip", false);
    a.rstrip = bool_field(c, e, where, "rstrip", false);
    a.normalized = bool_field(c, e, where, "normalized", !a.special);
    const int64_t file_id = int_field(c, e, where, "id", -1, 0, int64_t(4 * kMaxVocab));
    if (file_id < 0) c.bad(where + " has no 'id'");
    if (by_content.count(a.content)) continue;  // the Rust library keeps the first
    // The id the Rust library gives it: its vocabulary id, else the next one after the model's.
    int64_t id;
    if (auto it = t.vocab.find(a.content); it != t.vocab.end()) id = it->second;
    else id = max_added >= model_size || model_size == 0 ? max_added + 1 : model_size;
    if (id != file_id)
      c.bad(where + " '" + shown(a.content) + "' has id " + std::to_string(file_id) + " but would get id " +
            std::to_string(id) + " (ids out of order are not supported)");
    max_added = std::max(max_added, id);
    a.id = int32_t(id);
    by_content.emplace(a.content, a.id);
    t.added_by_id[a.id] = t.added.size();
    t.added.push_back(std::move(a));
    t.max_id = std::max(t.max_id, id);
  }
}

void parse_post_processor(const Ctx& c, const json& j, const std::string& where, HfTokenizerImpl& t, int depth = 0) {
  if (depth > kMaxNesting) c.bad(where + ": Sequences nested more than 8 deep are not supported");
  const std::string type = type_of(c, j, where);
  const auto special_of = [&](const json& pair, const std::string& w) -> int32_t {
    if (!pair.is_array() || pair.size() != 2 || !pair[0].is_string() || !pair[1].is_number_integer())
      c.bad(w + " must be [\"token\", id]");
    const int64_t id = pair[1].get<int64_t>();
    if (id < 0 || id > t.max_id) c.bad(w + " id " + std::to_string(id) + " is not a token id");
    return int32_t(id);
  };
  if (type == "Sequence") {
    sequence_items(c, j, where, "processors", 16,
                   [&](const json& item, const std::string& w) { parse_post_processor(c, item, w, t, depth + 1); });
  } else if (type == "ByteLevel") {
    only_keys(c, j, where, {"type", "add_prefix_space", "trim_offsets", "use_regex"});  // offsets only
  } else if (type == "TemplateProcessing") {
    only_keys(c, j, where, {"type", "single", "pair", "special_tokens"});
    if (t.has_template) c.bad(where + ": two templates in one post_processor are not supported");
    t.has_template = true;
    const json* single = field(j, "single");
    if (!single || !single->is_array()) c.bad(where + ".single must be a list");
    const json* specials = field(j, "special_tokens");
    if (specials && !specials->is_object()) c.bad(where + ".special_tokens must be an object");
    for (size_t i = 0; i < single->size(); ++i) {
      const std::string w = where + ".single[" + std::to_string(i) + "]";
      const json& item = obj(c, (*single)[i], w);
      if (const json* seq = field(item, "Sequence")) {
        if (str_field(c, obj(c, *seq, w), w + ".Sequence", "id", "A") != "A")
          c.bad(w + ": a single-sequence template can only hold sequence A");
        t.template_single.emplace_back(true, std::vector<int32_t>{});
      } else if (const json* sp = field(item, "SpecialToken")) {
        const std::string name = str_field(c, obj(c, *sp, w), w + ".SpecialToken", "id", {}, true);
        const json* entry = specials ? field(*specials, name.c_str()) : nullptr;
        if (!entry) c.bad(w + " names special token '" + shown(name) + "', which special_tokens does not define");
        const json* ids = field(obj(c, *entry, w), "ids");
        if (!ids || !ids->is_array() || ids->size() > 64) c.bad(where + ".special_tokens['" + shown(name) + "'].ids must be a list of ids");
        std::vector<int32_t> v;
        for (const json& x : *ids) {
          if (!x.is_number_integer() || x.get<int64_t>() < 0 || x.get<int64_t>() > t.max_id)
            c.bad(where + ".special_tokens['" + shown(name) + "'] has id " + shown(x) + ", which is not a token id");
          v.push_back(int32_t(x.get<int64_t>()));
        }
        t.template_single.emplace_back(false, std::move(v));
      } else {
        c.bad(w + " must be {\"Sequence\": ...} or {\"SpecialToken\": ...}");
      }
    }
  } else if (type == "BertProcessing" || type == "RobertaProcessing") {
    only_keys(c, j, where, {"type", "sep", "cls", "trim_offsets", "add_prefix_space"});
    if (t.has_template) c.bad(where + ": two templates in one post_processor are not supported");
    t.has_template = true;
    const json* sep = field(j, "sep");
    const json* cls = field(j, "cls");
    if (!sep || !cls) c.bad(where + " needs 'sep' and 'cls'");
    t.template_single.emplace_back(false, std::vector<int32_t>{special_of(*cls, where + ".cls")});
    t.template_single.emplace_back(true, std::vector<int32_t>{});
    t.template_single.emplace_back(false, std::vector<int32_t>{special_of(*sep, where + ".sep")});
  } else {
    c.bad(where + ": post_processor type '" + type + "' is not supported (supported: TemplateProcessing, ByteLevel, BertProcessing, RobertaProcessing, Sequence)");
  }
}

std::optional<std::string> config_token(const Ctx& c, const json& cfg, const char* key) {
  const json* v = field(cfg, key);
  if (!v) return std::nullopt;
  if (v->is_string()) return v->get<std::string>();
  if (v->is_object()) {
    const json* content = field(*v, "content");
    if (content && content->is_string()) return content->get<std::string>();
  }
  c.bad(std::string(key) + " must be a token string or {\"content\": ...}, got " + shown(*v));
}

}  // namespace

HfTokenizer::HfTokenizer() : impl_(std::make_unique<HfTokenizerImpl>()) {}
HfTokenizer::~HfTokenizer() = default;

std::string tokenizer_json_of(const std::string& path) {
  std::error_code ec;
  fs::path p(path);
  if (fs::is_directory(p, ec)) p /= "tokenizer.json";
  else if (p.filename() != "tokenizer.json") p = p.parent_path() / "tokenizer.json";
  return fs::is_regular_file(p, ec) ? p.string() : std::string();
}

std::shared_ptr<const HfTokenizer> HfTokenizer::load(const std::string& path_in) {
  std::error_code ec;
  std::string path = path_in;
  if (fs::is_directory(path, ec)) {
    path = (fs::path(path) / "tokenizer.json").string();
    if (!fs::exists(path, ec)) fail(path_in, "no tokenizer.json in this folder");
  }
  const Ctx c{path};
  const json j = read_json_file(path, kMaxTokenizerFile);
  if (!j.is_object()) c.bad("a tokenizer.json must hold a JSON object");
  std::shared_ptr<HfTokenizer> tok(new HfTokenizer());
  HfTokenizerImpl& t = *tok->impl_;
  t.path = path;
  only_keys(c, j, "tokenizer.json", {"version", "truncation", "padding", "added_tokens", "normalizer",
                                     "pre_tokenizer", "post_processor", "decoder", "model"});
  if (field(j, "truncation")) c.bad("truncation is set; truncating the encoding is not supported (set it to null)");
  if (field(j, "padding")) c.bad("padding is set; padding the encoding is not supported (set it to null)");
  const json* model = field(j, "model");
  if (!model) c.bad("no 'model'");
  parse_model(c, *model, t);
  if (const json* n = field(j, "normalizer")) parse_normalizer(c, *n, "normalizer", t.normalizers);
  if (const json* p = field(j, "pre_tokenizer")) parse_pre_tokenizer(c, *p, "pre_tokenizer", t.pre_tokenizers);
  if (const json* d = field(j, "decoder")) {
    parse_decoder(c, *d, "decoder", t.decoders);
    t.has_decoder = true;
  }
  for (const PreTokenizer& p : t.pre_tokenizers) t.byte_level_model = t.byte_level_model || p.kind == PreTokenizer::ByteLevel;
  if (const json* a = field(j, "added_tokens")) parse_added(c, *a, t);
  if (const json* p = field(j, "post_processor")) parse_post_processor(c, *p, "post_processor", t);
  // The tries: non-normalized tokens match the raw text, normalized ones the normalized text.
  // Special tokens come first, as in the Rust library (it only matters for equal strings).
  for (int pass = 0; pass < 2; ++pass)
    for (size_t i = 0; i < t.added.size(); ++i) {
      AddedToken& a = t.added[i];
      if (a.special != (pass == 0)) continue;
      if (a.normalized) {
        a.match = t.normalize(a.content);
        if (a.match.empty()) continue;
        t.norm_trie.add(a.match, int32_t(t.norm_ids.size()));
        t.norm_ids.push_back(int32_t(i));
      } else {
        a.match = a.content;
        t.raw_trie.add(a.match, int32_t(t.raw_ids.size()));
        t.raw_ids.push_back(int32_t(i));
      }
    }

  // tokenizer_config.json beside it: BOS/EOS and whether a prompt starts with BOS.
  const fs::path cfg_path = fs::path(path).parent_path() / "tokenizer_config.json";
  if (fs::is_regular_file(cfg_path, ec)) {
    const Ctx cc{cfg_path.string()};
    const json cfg = read_json_file(cfg_path.string(), 16 << 20);
    if (!cfg.is_object()) cc.bad("must hold a JSON object");
    const auto id_of = [&](const std::optional<std::string>& s, const char* key) -> std::optional<int32_t> {
      if (!s) return std::nullopt;
      if (auto id = tok->token_id(*s)) return id;
      cc.bad(std::string(key) + " '" + shown(*s) + "' is not a token of " + path);
    };
    t.bos = id_of(config_token(cc, cfg, "bos_token"), "bos_token");
    t.eos = id_of(config_token(cc, cfg, "eos_token"), "eos_token");
    const std::string cls = field(cfg, "tokenizer_class") && cfg["tokenizer_class"].is_string()
                                ? cfg["tokenizer_class"].get<std::string>() : "";
    const bool llama = cls == "LlamaTokenizer" || cls == "LlamaTokenizerFast" || cls == "CodeLlamaTokenizer" ||
                       cls == "CodeLlamaTokenizerFast";
    t.add_bos = bool_field(cc, cfg, "tokenizer_config.json", "add_bos_token", llama) && t.bos;
    t.add_eos = bool_field(cc, cfg, "tokenizer_config.json", "add_eos_token", false) && t.eos;
    t.cleanup_spaces = bool_field(cc, cfg, "tokenizer_config.json", "clean_up_tokenization_spaces", false);
  }
  return tok;
}

std::vector<int32_t> HfTokenizer::encode(std::string_view text, bool add_special_tokens) const {
  const HfTokenizerImpl& t = *impl_;
  if (auto bad = invalid_utf8_offset(text))
    fail("text", "not valid UTF-8 at byte " + std::to_string(*bad));
  Arena arena;
  Matcher m;
  std::vector<Piece> raw, pieces;
  t.split_added(text, true, false, raw);
  for (const Piece& p : raw) {
    if (p.added_id >= 0) {
      pieces.push_back(p);
      continue;
    }
    std::string_view norm = p.text;
    if (!t.normalizers.empty()) norm = arena.keep(t.normalize(p.text));
    t.split_added(norm, p.at_start, true, pieces);
  }
  t.pre_tokenize(pieces, arena, m);
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  std::unordered_map<std::string, std::vector<int32_t>> cache;
  for (const Piece& p : pieces) {
    if (p.added_id >= 0) ids.push_back(p.added_id);
    else t.bpe(p.text, p.byte_level, ids, cache);
  }
  if (add_special_tokens && t.has_template) {
    std::vector<int32_t> out;
    out.reserve(ids.size() + 4);
    for (const auto& [is_seq, special] : t.template_single) {
      if (is_seq) out.insert(out.end(), ids.begin(), ids.end());
      else out.insert(out.end(), special.begin(), special.end());
    }
    ids.swap(out);
  }
  return ids;
}

std::vector<int32_t> HfTokenizer::encode_prompt(std::string_view text) const {
  std::vector<int32_t> ids = encode(text, true);
  const HfTokenizerImpl& t = *impl_;
  if (t.add_bos && (ids.empty() || ids.front() != *t.bos)) ids.insert(ids.begin(), *t.bos);
  if (t.add_eos && (ids.empty() || ids.back() != *t.eos)) ids.push_back(*t.eos);
  return ids;
}

std::string HfTokenizer::decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
  const HfTokenizerImpl& t = *impl_;
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    if (!known(id)) continue;
    if (skip_special_tokens && is_special(id)) continue;
    tokens.push_back(piece(id));
  }
  std::string out;
  if (!t.has_decoder) {
    for (size_t i = 0; i < tokens.size(); ++i) out += (i ? " " : "") + tokens[i];
  } else {
    for (const std::string& s : t.decode_chain(std::move(tokens), false)) out += s;
  }
  if (t.cleanup_spaces) {
    static const std::pair<const char*, const char*> kCleanup[] = {
        {" .", "."}, {" ?", "?"}, {" !", "!"}, {" ,", ","}, {" ' ", "'"}, {" n't", "n't"},
        {" 'm", "'m"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}};
    for (auto [from, to] : kCleanup) {
      std::string r;
      const std::string_view f(from);
      size_t prev = 0, pos;
      while ((pos = out.find(f, prev)) != std::string::npos) {
        r.append(out, prev, pos - prev);
        r += to;
        prev = pos + f.size();
      }
      r.append(out, prev, std::string::npos);
      out.swap(r);
    }
  }
  return out;
}

bool HfTokenizer::known(int32_t id) const {
  const HfTokenizerImpl& t = *impl_;
  if (t.added_by_id.count(id)) return true;
  return id >= 0 && size_t(id) < t.has_piece.size() && t.has_piece[size_t(id)];
}

std::string HfTokenizer::piece(int32_t id) const {
  const HfTokenizerImpl& t = *impl_;
  if (auto it = t.added_by_id.find(id); it != t.added_by_id.end()) return t.added[it->second].content;
  if (id >= 0 && size_t(id) < t.has_piece.size() && t.has_piece[size_t(id)]) return t.id_piece[size_t(id)];
  return {};
}

std::string HfTokenizer::token_bytes(int32_t id) const {
  const HfTokenizerImpl& t = *impl_;
  if (!known(id)) return {};
  if (t.added_by_id.count(id)) return piece(id);
  std::vector<std::string> one{piece(id)};
  std::string out;
  for (const std::string& s : t.decode_chain(std::move(one), true)) out += s;
  return out;
}

bool HfTokenizer::is_special(int32_t id) const {
  auto it = impl_->added_by_id.find(id);
  return it != impl_->added_by_id.end() && impl_->added[it->second].special;
}

std::optional<int32_t> HfTokenizer::token_id(std::string_view s) const {
  for (const AddedToken& a : impl_->added)
    if (a.content == s) return a.id;
  if (auto it = impl_->vocab.find(s); it != impl_->vocab.end()) return it->second;
  return std::nullopt;
}

int64_t HfTokenizer::vocab_size() const { return impl_->max_id + 1; }
std::optional<int32_t> HfTokenizer::bos_id() const { return impl_->bos; }
std::optional<int32_t> HfTokenizer::eos_id() const { return impl_->eos; }
const std::string& HfTokenizer::path() const { return impl_->path; }

std::string HfTokenizer::summary() const {
  const HfTokenizerImpl& t = *impl_;
  std::string s = t.byte_level_model ? "byte-level BPE" : t.byte_fallback ? "BPE with byte fallback" : "BPE";
  s += ", " + human_count(double(vocab_size())) + " tokens (" + std::to_string(t.added.size()) + " added)";
  for (const Normalizer& n : t.normalizers)
    if (n.kind == Normalizer::NFC) s += ", NFC";
  return s;
}

std::optional<size_t> invalid_utf8_offset(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    const size_t n = utf8_len_at(s, i);
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
    const size_t n = utf8_len_at(bytes, i);
    if (!n) {
      std::snprintf(buf, sizeof buf, "<0x%02X>", static_cast<unsigned char>(bytes[i]));
      out += buf;
      ++i;
      continue;
    }
    const char32_t cp = decode_cp(bytes, i, n);
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
