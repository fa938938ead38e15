// What the three files of the tokenizer.json implementation share; not part of the public API
// (that is hf_tokenizer.hpp). hf_tokenizer_load.cpp parses a tokenizer.json into the component
// structs below, hf_tokenizer.cpp runs the encode/decode pipeline over them, and
// hf_tokenizer_unicode.cpp holds the UTF-8, Unicode (utf8proc) and regex (PCRE2) helpers both
// use. Built only with PCRE2 and utf8proc (core/CMakeLists.txt); hf_tokenizer_off.cpp stands in
// for all three without them.
#pragma once

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "error.hpp"
#include "hf_tokenizer.hpp"

namespace moelab {
namespace hf {

// ---------------------------------------------------------------------------------------------
// UTF-8 and Unicode (hf_tokenizer_unicode.cpp)

// Length of the valid UTF-8 sequence at s[i], or 0 if the bytes there are not one.
size_t utf8_len_at(std::string_view s, size_t i);
// s with each invalid sequence replaced by U+FFFD, as Rust's String::from_utf8_lossy does.
std::string utf8_lossy(std::string_view s);
// The code point of the n-byte sequence at s[i] (n from utf8_len_at).
char32_t decode_cp(std::string_view s, size_t i, size_t n);
// Unicode's White_Space property (what Rust's char::is_whitespace, its regex \s and
// Oniguruma's \s mean).
bool is_white_space(char32_t c);
// Rust regex's \w: alphabetic, marks, decimal digits, connector punctuation (and the joiners).
bool is_word_char(char32_t c);
// Unicode's numeric categories Nd, Nl, No (what the Digits pre-tokenizer splits on).
bool is_numeric_char(char32_t c);

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

// GPT-2's reversible map of the 256 byte values to printable characters.
struct ByteMap {
  char32_t to_char[256];
  std::string to_utf8[256];
  std::unordered_map<char32_t, uint8_t> to_byte;
  ByteMap();
};
const ByteMap& byte_map();

// Where errors go: every one names the file (and the field, in the message).
struct Ctx {
  std::string file;
  [[noreturn]] void bad(const std::string& what) const { fail(file, what); }
};

// ---------------------------------------------------------------------------------------------
// PCRE2 regexes, with the Rust library's (Oniguruma's) \s: Unicode White_Space
// (hf_tokenizer_unicode.cpp).

struct Pcre2CodeDeleter {
  void operator()(pcre2_code* p) const { pcre2_code_free(p); }
};

class Regex {
 public:
  Regex(const Ctx& c, const std::string& where, const std::string& pattern);
  const std::string& where() const { return where_; }
  pcre2_code* code() const { return code_.get(); }
  bool jit() const { return jit_; }

 private:
  static std::string translate(const Ctx& c, const std::string& where, const std::string& p);

  std::string where_;
  std::unique_ptr<pcre2_code, Pcre2CodeDeleter> code_;
  bool jit_ = false;
};

// Per-encode matching state (thread-safe: the compiled regexes are shared, this is not).
class Matcher {
 public:
  Matcher();
  ~Matcher();
  Matcher(const Matcher&) = delete;
  Matcher& operator=(const Matcher&) = delete;

  // All non-overlapping matches of re in s, left to right (empty matches are skipped).
  void find_all(const std::string& file, const Regex& re, std::string_view s,
                std::vector<std::pair<size_t, size_t>>& out);

 private:
  pcre2_match_context* mctx_ = nullptr;
  pcre2_jit_stack* stack_ = nullptr;
  std::unordered_map<const pcre2_code*, pcre2_match_data*> data_;
};

// Pattern (Split, Replace): a literal string or a regex.
struct Pattern {
  std::string literal;
  std::unique_ptr<Regex> regex;
  void find_all(Matcher& m, const std::string& file, std::string_view s,
                std::vector<std::pair<size_t, size_t>>& out) const;
};

// Every match of `pattern` in s replaced by `with` (the Replace normalizer and decoder).
void replace_all(const Pattern& pattern, const std::string& path, std::string& s, const std::string& with);

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
// The tokenizer.json components, as hf_tokenizer_load.cpp parses them.

// Normalizers: a string in, a string out.
struct Normalizer {
  enum Kind { NFC, NFD, NFKC, NFKD, Prepend, Replace, Strip } kind;
  std::string text;  // Prepend's prefix, Replace's content
  Pattern pattern;   // Replace
  bool left = false, right = false;  // Strip
};

// NFC, NFD, NFKC or NFKD of s (utf8proc); errors name `file`.
std::string unicode_normalize(std::string_view s, Normalizer::Kind k, const std::string& file);

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

// Decoders: token strings in, strings out.
struct Decoder {
  enum Kind { ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip } kind;
  Pattern pattern;
  std::string content;      // Replace's content, Strip's character, Metaspace's replacement
  int64_t start = 0, stop = 0;
  bool prepend_never = false;
};

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
  void add(std::string_view s, int32_t token);
  // The longest token starting at s[i]: (token, length) or (-1, 0).
  std::pair<int32_t, size_t> longest_at(std::string_view s, size_t i) const;
};

}  // namespace hf

// A loaded tokenizer: filled by HfTokenizer::load (hf_tokenizer_load.cpp), run by the pipeline
// methods (hf_tokenizer.cpp).
struct HfTokenizerImpl {
  std::string path;
  // model
  hf::StrMap vocab;
  std::vector<std::string> id_piece;   // by id; "" where none
  std::vector<uint8_t> has_piece;
  std::unordered_map<uint64_t, uint64_t> merges;  // (left << 32 | right) -> (rank << 32 | new id)
  std::optional<int32_t> unk_id;
  std::string prefix, suffix;  // continuing_subword_prefix, end_of_word_suffix
  bool fuse_unk = false, byte_fallback = false, ignore_merges = false;
  int32_t byte_fallback_id[256];
  int32_t byte_level_id[256];  // the id of each byte's ByteLevel character, -1 if none
  // added tokens
  std::vector<hf::AddedToken> added;
  std::unordered_map<int32_t, size_t> added_by_id;
  hf::TokenTrie raw_trie, norm_trie;
  std::vector<int32_t> raw_ids, norm_ids;  // trie token index -> added index
  // pipeline
  std::vector<hf::Normalizer> normalizers;
  std::vector<hf::PreTokenizer> pre_tokenizers;
  std::vector<hf::Decoder> decoders;
  bool has_decoder = false;
  std::vector<std::pair<bool, std::vector<int32_t>>> template_single;  // (is sequence, special ids)
  bool has_template = false;
  // tokenizer_config.json
  std::optional<int32_t> bos, eos;
  bool add_bos = false, add_eos = false, cleanup_spaces = false;
  int64_t max_id = -1;
  bool byte_level_model = false;

  std::string normalize(std::string_view s) const;
  void pre_tokenize(std::vector<hf::Piece>& pieces, hf::Arena& arena, hf::Matcher& m) const;
  void bpe(std::string_view word, bool byte_level, std::vector<int32_t>& out,
           std::unordered_map<std::string, std::vector<int32_t>>& cache) const;
  void merge_word(std::vector<int32_t>& syms, std::vector<uint32_t>& lens) const;
  void split_added(std::string_view s, bool at_start, bool normalized_set, std::vector<hf::Piece>& out) const;
  std::vector<std::string> decode_chain(std::vector<std::string> tokens, bool display) const;
};

}  // namespace moelab
