// Our tokenizer.json implementation against the Hugging Face `tokenizers` library itself (Rust,
// through its Node binding; tests/reference/tokenize_reference.mjs writes its answers):
//   test_tokenizer_reference TOKENIZER.json STRINGS.json REFERENCE.json
// Every string must give the same ids (add_special_tokens=true) and our decode of those ids
// must equal the library's decode (skip_special_tokens=false). Prints the first differences.
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "error.hpp"
#include "files.hpp"
#include "hf_tokenizer.hpp"

using nlohmann::json;

namespace {
std::string ids_str(const std::vector<int32_t>& v, size_t at) {
  std::string s;
  const size_t a = at > 4 ? at - 4 : 0, b = std::min(v.size(), at + 5);
  for (size_t i = a; i < b; ++i) {
    if (i == at) s += '[';
    s += std::to_string(v[i]);
    s += i == at ? "] " : " ";
  }
  return s;
}
std::string esc(const std::string& s) { return json(s).dump(-1, ' ', true, json::error_handler_t::replace).substr(0, 160); }
}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: test_tokenizer_reference TOKENIZER.json STRINGS.json REFERENCE.json\n");
    return 2;
  }
  try {
    const auto t0 = std::chrono::steady_clock::now();
    auto tok = moelab::HfTokenizer::load(argv[1]);
    const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const json strings = moelab::read_json_file(argv[2], 64 << 20);
    const json ref = moelab::read_json_file(argv[3], 256 << 20);
    if (!strings.is_array() || !ref.contains("ids") || !ref.contains("decoded") || ref["ids"].size() != strings.size() ||
        ref["decoded"].size() != strings.size() || !ref.value("add_special_tokens", false)) {
      std::fprintf(stderr, "%s: the reference does not match the strings (rerun tokenize_reference.mjs)\n", argv[3]);
      return 1;
    }
    size_t id_bad = 0, dec_bad = 0, tokens = 0, roundtrip = 0, shown = 0;
    for (size_t i = 0; i < strings.size(); ++i) {
      const std::string s = strings[i].get<std::string>();
      const std::vector<int32_t> want = ref["ids"][i].get<std::vector<int32_t>>();
      const std::vector<int32_t> got = tok->encode(s, true);
      tokens += got.size();
      if (got != want) {
        ++id_bad;
        size_t at = 0;
        while (at < got.size() && at < want.size() && got[at] == want[at]) ++at;
        if (shown++ < 12)
          std::fprintf(stderr, "ids differ for string %zu %s\n  ours: %s\n  rust: %s\n", i, esc(s).c_str(),
                       ids_str(got, at).c_str(), ids_str(want, at).c_str());
      }
      const std::string dec = tok->decode(want, false);
      if (dec != ref["decoded"][i].get<std::string>()) {
        ++dec_bad;
        if (shown++ < 12)
          std::fprintf(stderr, "decode differs for string %zu\n  ours: %s\n  rust: %s\n", i, esc(dec).c_str(),
                       esc(ref["decoded"][i].get<std::string>()).c_str());
      }
      if (tok->decode(tok->encode(s, false), false) == s) ++roundtrip;
    }
    std::printf("%s: %zu strings, %zu tokens; ids identical for %zu, decode identical for %zu; "
                "decode(encode(s)) == s for %zu; loaded in %.2f s\n",
                argv[1], strings.size(), tokens, strings.size() - id_bad, strings.size() - dec_bad, roundtrip, load_s);
    return id_bad || dec_bad ? 1 : 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
}
