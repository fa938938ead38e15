// Loading a tokenizer.json (and the tokenizer_config.json beside it) into HfTokenizerImpl: the
// normalizers, pre-tokenizers, BPE model, decoders, added tokens and post-processor, each checked
// field by field. Anything not implemented is refused in one line naming the file and the field.
// The structs it fills are in hf_tokenizer_internal.hpp; hf_tokenizer.cpp runs them.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "files.hpp"
#include "hf_tokenizer_internal.hpp"

namespace moelab {

using json = nlohmann::json;
namespace fs = std::filesystem;
using namespace hf;

namespace {

constexpr int64_t kMaxTokenizerFile = 192LL << 20;   // gpt-oss's is 28 MB
constexpr size_t kMaxVocab = 4u << 20;               // 4M entries; real ones are <= 262k
constexpr size_t kMaxMerges = 8u << 20;
constexpr size_t kMaxAddedTokens = 1u << 20;
constexpr size_t kMaxAddedTokenBytes = 1024;

// ---------------------------------------------------------------------------------------------
// JSON helpers: every error names the file and the field.

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
// Components.

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
// The required 'pattern' of a Split or Replace component.
Pattern pattern_field(const Ctx& c, const json& j, const std::string& where) {
  const json* p = field(j, "pattern");
  if (!p) c.bad(where + " has no 'pattern'");
  return parse_pattern(c, *p, where + ".pattern");
}

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
    n.pattern = pattern_field(c, j, where);
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

// A Metaspace pre-tokenizer's or decoder's keys, its one-character replacement (default ▁) and its
// prepend scheme (older files say add_prefix_space instead).
void metaspace_fields(const Ctx& c, const json& j, const std::string& where, std::string& replacement,
                      PreTokenizer::Prepend& prepend) {
  only_keys(c, j, where, {"type", "replacement", "prepend_scheme", "split", "add_prefix_space", "str_rep"});
  replacement = str_field(c, j, where, "replacement", "\xE2\x96\x81");
  if (replacement.empty() || utf8_len_at(replacement, 0) != replacement.size())
    c.bad(where + ".replacement must be one character");
  std::string scheme = str_field(c, j, where, "prepend_scheme", "");
  if (scheme.empty()) scheme = bool_field(c, j, where, "add_prefix_space", true) ? "always" : "never";
  if (scheme == "always") prepend = PreTokenizer::Always;
  else if (scheme == "first") prepend = PreTokenizer::First;
  else if (scheme == "never") prepend = PreTokenizer::Never;
  else c.bad(where + ".prepend_scheme '" + scheme + "' is not always, first or never");
}

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
    p.pattern = pattern_field(c, j, where);
    p.behavior = parse_behavior(c, str_field(c, j, where, "behavior", {}, true), where);
    p.invert = bool_field(c, j, where, "invert", false);
  } else if (t == "ByteLevel") {
    only_keys(c, j, where, {"type", "add_prefix_space", "trim_offsets", "use_regex"});
    p.kind = PreTokenizer::ByteLevel;
    p.add_prefix_space = bool_field(c, j, where, "add_prefix_space", true);
    p.use_regex = bool_field(c, j, where, "use_regex", true);
    if (p.use_regex) p.pattern.regex = std::make_unique<Regex>(c, where, kGpt2Regex);
  } else if (t == "Metaspace") {
    p.kind = PreTokenizer::Metaspace;
    metaspace_fields(c, j, where, p.replacement, p.prepend);
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
    d.kind = Decoder::Metaspace;
    PreTokenizer::Prepend prepend = PreTokenizer::Always;
    metaspace_fields(c, j, where, d.content, prepend);
    d.prepend_never = prepend == PreTokenizer::Never;
  } else if (t == "Replace") {
    only_keys(c, j, where, {"type", "pattern", "content"});
    d.kind = Decoder::Replace;
    d.pattern = pattern_field(c, j, where);
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

// ---------------------------------------------------------------------------------------------
// Loading.

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

}  // namespace moelab
