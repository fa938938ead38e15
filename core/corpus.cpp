#include "corpus.hpp"

#include <filesystem>
#include <fstream>

#include "config.hpp"
#include "error.hpp"
#include "files.hpp"
#include "tokenizer.hpp"

namespace moelab {

namespace {

// Four domains that share an alphabet where it matters (DNA is lowercase acgt like prose, code
// uses words and digits like prose and arithmetic), so a router must use context, not just the
// byte, to tell them apart.
const char* kDomainNames[] = {"arithmetic", "code", "prose", "dna"};

const char* kWords[] = {"the", "a", "river", "stone", "light", "small", "old", "quiet", "green", "house",
                        "carries", "finds", "sees", "under", "over", "and", "with", "to", "of", "sea",
                        "child", "walks", "slowly", "bright", "cold", "morning", "tree", "road", "bird", "sings"};
const char* kIdents[] = {"count", "total", "value", "index", "n", "x", "item", "size", "left", "right"};

template <size_t N>
const char* pick(const char* const (&arr)[N], Rng& r) {
  return arr[r.next_u64() % N];
}
int64_t num(Rng& r, int64_t lo, int64_t hi) { return lo + int64_t(r.next_u64() % uint64_t(hi - lo + 1)); }

std::string arithmetic_line(Rng& r) {
  const int64_t a = num(r, 0, 99), b = num(r, 0, 99);
  switch (r.next_u64() % 3) {
    case 0: return std::to_string(a) + "+" + std::to_string(b) + "=" + std::to_string(a + b) + "; ";
    case 1: return std::to_string(a) + "-" + std::to_string(b) + "=" + std::to_string(a - b) + "; ";
    default: {
      const int64_t c = num(r, 0, 12), d = num(r, 0, 12);
      return std::to_string(c) + "*" + std::to_string(d) + "=" + std::to_string(c * d) + "; ";
    }
  }
}

std::string code_line(Rng& r) {
  const std::string x = pick(kIdents, r), y = pick(kIdents, r);
  switch (r.next_u64() % 4) {
    case 0: return "if (" + x + " > " + std::to_string(num(r, 0, 50)) + ") { " + y + " = " + y + " + 1; }\n";
    case 1: return "for (i = 0; i < " + x + "; i++) { " + y + " += a[i]; }\n";
    case 2: return x + " = " + y + " * " + std::to_string(num(r, 2, 9)) + ";\n";
    default: return "return " + x + ";\n";
  }
}

std::string prose_sentence(Rng& r) {
  std::string s;
  const int64_t n = num(r, 5, 10);
  for (int64_t i = 0; i < n; ++i) s += std::string(i ? " " : "") + pick(kWords, r);
  return s + ". ";
}

std::string dna_chunk(Rng& r) {
  static const char kBases[] = {'a', 'c', 'g', 't'};
  std::string s;
  for (int i = 0; i < 24; ++i) s.push_back(kBases[r.next_u64() % 4]);
  return s + (r.next_u64() % 4 == 0 ? "\n" : "");
}

class BuiltinCorpus final : public Corpus {
 public:
  std::string name() const override { return "builtin:domains"; }
  std::vector<std::string> domains() const override { return {std::begin(kDomainNames), std::end(kDomainNames)}; }
  Batch sample(int64_t B, int64_t T, Rng& rng, bool validation) const override {
    Batch b;
    b.B = B;
    b.T = T;
    for (int64_t s = 0; s < B; ++s) {
      // Validation sequences come from their own stream (seeded by index), never from training's.
      Rng own = validation ? Rng(0x5eed0000ull + uint64_t(s)) : Rng(rng.next_u64());
      const int domain = int(s % 4);  // equal shares of every domain in each batch
      std::string text = builtin_domain_text(domain, T + 1 + 64, own);
      const int64_t off = int64_t(own.next_u64() % 64);
      for (int64_t t = 0; t < T; ++t) {
        b.inputs.push_back(int32_t(static_cast<unsigned char>(text[size_t(off + t)])));
        b.targets.push_back(int32_t(static_cast<unsigned char>(text[size_t(off + t + 1)])));
      }
      b.domains.push_back(domain);
    }
    return b;
  }
};

// Check that bytes are UTF-8 text: no NUL, valid multi-byte sequences. Returns the offset of the
// first bad byte, or -1.
int64_t first_non_utf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c == 0) return int64_t(i);
    int extra = c < 0x80 ? 0 : (c >> 5) == 6 ? 1 : (c >> 4) == 14 ? 2 : (c >> 3) == 30 ? 3 : -1;
    if (extra < 0 || i + size_t(extra) >= s.size() + (extra == 0 ? 1 : 0)) return int64_t(i);
    for (int k = 1; k <= extra; ++k)
      if ((static_cast<unsigned char>(s[i + size_t(k)]) >> 6) != 2) return int64_t(i);
    i += size_t(extra) + 1;
  }
  return -1;
}

class TextCorpus final : public Corpus {
 public:
  explicit TextCorpus(const std::string& path) : path_(path) {
    text_ = read_text_file(path, int64_t(1) << 30);
    if (text_.empty()) fail(path, "the corpus file is empty");
    const int64_t bad = first_non_utf8(text_);
    if (bad >= 0)
      fail(path, "not UTF-8 text (byte " + std::to_string(static_cast<unsigned char>(text_[size_t(bad)])) +
                     " at offset " + std::to_string(bad) + "); the lab trains on text files");
    split_ = int64_t(text_.size()) * 9 / 10;  // the last 10% is held out for validation
  }
  std::string name() const override { return path_; }
  std::vector<std::string> domains() const override { return {}; }
  Batch sample(int64_t B, int64_t T, Rng& rng, bool validation) const override {
    const int64_t begin = validation ? split_ : 0, end = validation ? int64_t(text_.size()) : split_;
    if (end - begin < T + 1)
      fail(path_, "too short: the " + std::string(validation ? "held-out" : "training") + " part has " +
                      std::to_string(end - begin) + " bytes, sequences need " + std::to_string(T + 1));
    Batch b;
    b.B = B;
    b.T = T;
    for (int64_t s = 0; s < B; ++s) {
      const uint64_t r = validation ? 0x9e3779b97f4a7c15ull * uint64_t(s + 1) : rng.next_u64();
      const int64_t off = begin + int64_t(r % uint64_t(end - begin - T));
      for (int64_t t = 0; t < T; ++t) {
        b.inputs.push_back(int32_t(static_cast<unsigned char>(text_[size_t(off + t)])));
        b.targets.push_back(int32_t(static_cast<unsigned char>(text_[size_t(off + t + 1)])));
      }
    }
    return b;
  }

 private:
  std::string path_, text_;
  int64_t split_ = 0;
};

}  // namespace

std::string builtin_domain_text(int domain, int64_t min_bytes, Rng& rng) {
  std::string s;
  while (int64_t(s.size()) < min_bytes) {
    switch (domain) {
      case 0: s += arithmetic_line(rng); break;
      case 1: s += code_line(rng); break;
      case 2: s += prose_sentence(rng); break;
      default: s += dna_chunk(rng); break;
    }
  }
  return s;
}

std::unique_ptr<Corpus> open_corpus(const std::string& spec) {
  if (spec.rfind("builtin:", 0) == 0) {
    if (spec != "builtin:domains") fail(spec, "unknown built-in corpus (known: builtin:domains)");
    return std::make_unique<BuiltinCorpus>();
  }
  return std::make_unique<TextCorpus>(spec);
}

}  // namespace moelab
