// Hugging Face tokenizer.json: decoding, ids back to text (see hf_tokenizer.cpp for the whole
// pipeline). The decoder chain runs over the token strings in the order tokenizer.json lists the
// decoders, as the Rust `tokenizers` library does; then the optional clean-up of spaces before
// punctuation and contractions.
#include "hf_tokenizer_internal.hpp"

namespace moelab {

using namespace hf;

namespace {

// "<0x41>" → 0x41 (byte-fallback tokens).
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

}  // namespace moelab
