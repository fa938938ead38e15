// Hugging Face tokenizer.json, the parts MoE models use; see hf_tokenizer.hpp. The pipeline and
// its order follow the Rust `tokenizers` library (0.22): added tokens are cut out of the raw text
// (non-normalized ones), each remaining piece is normalized and the normalized added tokens are
// cut out of it, the pre-tokenizers split the pieces into words, BPE turns each word into ids,
// and the post-processor adds the template's special tokens. Decoding runs the decoder chain
// over the token strings. Written from the library's documented behaviour and checked against
// it on thousands of strings (tests/test_hf_tokenizer.cpp); no code is taken from it.
//
// This file is the encoding pipeline: added-token matching, normalization, pre-tokenization, BPE,
// and the public HfTokenizer queries. Decoding is hf_tokenizer_decode.cpp, loading
// hf_tokenizer_load.cpp, the UTF-8 and regex helpers hf_tokenizer_unicode.cpp;
// hf_tokenizer_internal.hpp is what they share.
#include <algorithm>
#include <cstdio>
#include <queue>
#include <tuple>
#include <unordered_map>

#include "hf_tokenizer_internal.hpp"

namespace moelab {

using namespace hf;

namespace {

constexpr size_t kMaxCachedWord = 256;               // as the Rust library: longer words are not cached
constexpr size_t kMaxCacheEntries = 100000;

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

}  // namespace

// ---------------------------------------------------------------------------------------------
// Added-token matching.

void hf::TokenTrie::add(std::string_view s, int32_t token) {
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

std::pair<int32_t, size_t> hf::TokenTrie::longest_at(std::string_view s, size_t i) const {
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

// ---------------------------------------------------------------------------------------------
// Normalization, pre-tokenization, BPE, decoding.

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
              if (is_numeric_char(cp)) hits.emplace_back(i, i + n);
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

// ---------------------------------------------------------------------------------------------
// The public API.

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

}  // namespace moelab
