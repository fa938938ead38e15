// Training text: the built-in multi-domain generator (every sequence labelled with its domain,
// so specialisation is measurable) or any UTF-8 text file, both as byte tokens, with a held-out
// split for validation.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "random.hpp"

namespace moelab {

// B sequences of T tokens: inputs and next-token targets (-1 = no target), row-major [B,T].
struct Batch {
  int64_t B = 0, T = 0;
  std::vector<int32_t> inputs, targets;
  std::vector<int32_t> domains;  // [B] domain label of each sequence, or empty
};

class Corpus {
 public:
  virtual ~Corpus() = default;
  virtual std::string name() const = 0;
  // Domain names when sequences are labelled (the built-in corpus), else empty.
  virtual std::vector<std::string> domains() const = 0;
  // B sequences of T next-token pairs from the training or the held-out split.
  virtual Batch sample(int64_t B, int64_t T, Rng& rng, bool validation) const = 0;
};

// "builtin:domains" (arithmetic, code, prose, DNA) or a path to a UTF-8 text file.
std::unique_ptr<Corpus> open_corpus(const std::string& spec);

// The built-in generator's text for one domain (exposed for tests and the GUI's samples).
std::string builtin_domain_text(int domain, int64_t min_bytes, Rng& rng);

}  // namespace moelab
