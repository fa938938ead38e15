// tokenize: a text through a model's tokenizer (its tokenizer.json, or the lab's byte tokenizer),
// and bench --tokenizer: our encoder's speed beside the Hugging Face Rust library's.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <unistd.h>
#include <filesystem>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "bench.hpp"
#include "commands.hpp"
#include "common.hpp"
#include "config.hpp"
#include "error.hpp"
#include "files.hpp"
#include "hf_tokenizer.hpp"
#include "tokenizer.hpp"

namespace moelab::cli {
namespace {

using json = nlohmann::json;

struct TokenizeOptions {
  std::string model, tokenizer, text, file;
  bool json_out = false, no_special = false;
} t;

constexpr int64_t kMaxTextFile = 256LL << 20;

std::shared_ptr<const TextTokenizer> open_tokenizer() {
  if (!t.tokenizer.empty()) return TextTokenizer::hugging_face(HfTokenizer::load(t.tokenizer));
  const std::string dir = t.model == "builtin" ? builtin_model_dir() : t.model;
  std::error_code ec;
  if (t.model == "builtin" && !std::filesystem::exists(dir + "/config.json", ec)) return TextTokenizer::bytes();
  const ModelConfig c = load_config(dir);
  auto tok = TextTokenizer::for_model(std::filesystem::is_directory(dir, ec) ? dir : std::filesystem::path(dir).parent_path().string(), c);
  if (!tok)
    fail(dir, "this model has no tokenizer.json and is not a lab model with the byte tokenizer; "
              "put the model's tokenizer.json (and tokenizer_config.json) in its folder");
  return tok;
}

// s padded with spaces to `width` characters (not bytes: pieces are often not ASCII).
std::string padded(const std::string& s, size_t width) {
  size_t chars = 0;
  for (unsigned char c : s) chars += (c & 0xC0) != 0x80;
  return chars >= width ? s + " " : s + std::string(width - chars, ' ');
}

void run_tokenize() {
  auto tok = open_tokenizer();
  std::string text = t.text;
  const std::string where = t.file.empty() ? "--text" : t.file;
  if (!t.file.empty()) text = read_text_file(t.file, kMaxTextFile);
  if (auto bad = invalid_utf8_offset(text)) fail(where, "not valid UTF-8 at byte " + std::to_string(*bad));
  std::vector<int32_t> ids;
  if (tok->hf() && t.no_special) ids = tok->hf()->encode(text, false);
  else if (!tok->hf() && t.no_special) ids = encode_bytes(text, false);
  else ids = tok->encode_prompt(text);
  if (t.json_out) {
    json pieces = json::array();
    for (int32_t id : ids) pieces.push_back(tok->piece(id));
    std::printf("%s\n", json{{"ids", ids}, {"pieces", pieces}}.dump(-1, ' ', false, json::error_handler_t::replace).c_str());
    return;
  }
  std::printf("%s\n%zu tokens\n%8s  %s%s\n", tok->describe().c_str(), ids.size(), "id", padded("piece", 20).c_str(), "text");
  for (int32_t id : ids) std::printf("%8d  %s%s\n", id, padded(tok->piece(id), 20).c_str(), tok->label(id).c_str());
}

// A deterministic ~mb MB text: prose in several scripts, code, numbers, whitespace runs, emoji.
std::string bench_text(double mb) {
  static const char* kParts[] = {
      "The quick brown fox jumps over the lazy dog. It's 3.14159 and we've got 42 reasons; don't panic!\n",
      "Les \xC3\xA9l\xC3\xA8ves ont \xC3\xA9tudi\xC3\xA9 la th\xC3\xA9orie des graphes \xC3\xA0 l'universit\xC3\xA9 de Montr\xC3\xA9" "al en 2023.\n",
      "\xD0\xA1\xD1\x8A\xD0\xB5\xD1\x88\xD1\x8C \xD0\xB6\xD0\xB5 \xD0\xB5\xD1\x89\xD1\x91 \xD1\x8D\xD1\x82\xD0\xB8\xD1\x85 "
      "\xD0\xBC\xD1\x8F\xD0\xB3\xD0\xBA\xD0\xB8\xD1\x85 \xD0\xB1\xD1\x83\xD0\xBB\xD0\xBE\xD0\xBA, \xD0\xB4\xD0\xB0 "
      "\xD0\xB2\xD1\x8B\xD0\xBF\xD0\xB5\xD0\xB9 \xD1\x87\xD0\xB0\xD1\x8E.\n",
      "\xE6\x88\x91\xE8\x83\xBD\xE5\x90\x9E\xE4\xB8\x8B\xE7\x8E\xBB\xE7\x92\x83\xE8\x80\x8C\xE4\xB8\x8D\xE4\xBC\xA4"
      "\xE8\xBA\xAB\xE4\xBD\x93\xE3\x80\x82\xE6\x9D\xB1\xE4\xBA\xAC\xE3\x81\xAF\xE6\x97\xA5\xE6\x9C\xAC\xE3\x81\xAE"
      "\xE9\xA6\x96\xE9\x83\xBD\xE3\x81\xA7\xE3\x81\x99\xE3\x80\x82\n",
      "def mixture_of_experts(x, k=2):\n    scores = router(x)  # top-k\n    return sum(w * e(x) for w, e in topk(scores, k))\n",
      "    for (int i = 0; i < n; ++i) {\n\t\tsum += a[i] * b[i];\n    }\n",
      "1234567890 987654321 2024-06-01T12:34:56Z 0x7fffffff 1e-9\n",
      "Emoji \xF0\x9F\x98\x80\xF0\x9F\x91\x8D\xF0\x9F\x8F\xBD \xF0\x9F\x87\xA9\xF0\x9F\x87\xAA end.\n\n\n",
  };
  const size_t n = sizeof kParts / sizeof kParts[0];
  const size_t target = size_t(mb * 1024 * 1024);
  std::string s;
  s.reserve(target + 256);
  uint32_t x = 12345;
  while (s.size() < target) {
    x = (x * 1103515245u + 12345u) & 0x7fffffffu;
    s += kParts[x % n];
  }
  return s;
}

// Pieces of about `chunk` bytes cut after a newline (0: the whole text).
std::vector<std::string_view> chunks_of(const std::string& text, size_t chunk) {
  std::vector<std::string_view> out;
  if (chunk == 0) {
    out.emplace_back(text);
    return out;
  }
  size_t start = 0;
  while (start < text.size()) {
    size_t end = std::min(text.size(), start + chunk);
    const size_t nl = text.find('\n', end);
    end = nl == std::string::npos ? text.size() : nl + 1;
    out.emplace_back(std::string_view(text).substr(start, end - start));
    start = end;
  }
  return out;
}

json rust_bench(const std::string& tokenizer, const std::string& file, size_t chunk, int repeat) {
  const std::string script = std::string(MOELAB_SOURCE_DIR) + "/tests/reference/tokenize_reference.mjs";
  std::error_code ec;
  if (!std::filesystem::exists(std::string(MOELAB_SOURCE_DIR) + "/tests/reference/node_modules/@anush008/tokenizers", ec)) {
    std::fprintf(stderr, "bench: the Rust reference is not installed (cd tests/reference && npm ci); no comparison\n");
    return nullptr;
  }
  const std::string cmd = "RAYON_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false node '" + script + "' '" + tokenizer +
                          "' --bench '" + file + "' --repeat " + std::to_string(repeat) + " --chunk " +
                          std::to_string(chunk) + " 2>/dev/null";
  json r = first_json_line_of(cmd);
  if (r.is_null()) std::fprintf(stderr, "bench: the Rust reference did not run (is node installed?)\n");
  return r;
}

}  // namespace

void run_tokenizer_bench(const BenchOptions& o) {
  using Clock = std::chrono::steady_clock;
  const std::string file_json = tokenizer_json_of(o.tokenizer);
  if (file_json.empty()) fail(o.tokenizer, "no tokenizer.json here");
  const auto t0 = Clock::now();
  auto tok = HfTokenizer::load(file_json);
  const double load_s = std::chrono::duration<double>(Clock::now() - t0).count();
  const std::string text = bench_text(o.tokenizer_mb);
  const std::string text_file =
      (std::filesystem::temp_directory_path() / ("moelab-tokenizer-bench-" + std::to_string(::getpid()) + ".txt")).string();
  write_text_atomic(text_file, text);
  struct Row {
    const char* name;
    size_t chunk;
    double ours = 0, rust = 0;
    size_t tokens = 0, rust_tokens = 0;
  };
  Row rows[] = {{"whole text, one call", 0}, {"4 KB pieces, one call each", 4096}};
  json out = {{"tokenizer", file_json}, {"bytes", text.size()}, {"load_seconds", load_s}, {"runs", json::array()}};
  for (Row& r : rows) {
    const auto pieces = chunks_of(text, r.chunk);
    double best = 1e30;
    for (int rep = 0; rep < int(o.repeats < 1 ? 1 : std::min<int64_t>(o.repeats, 3)); ++rep) {
      const auto a = Clock::now();
      size_t n = 0;
      for (std::string_view p : pieces) n += tok->encode(p, false).size();
      best = std::min(best, std::chrono::duration<double>(Clock::now() - a).count());
      r.tokens = n;
    }
    r.ours = double(text.size()) / 1e6 / best;
    const json rust = o.no_peer ? json(nullptr) : rust_bench(file_json, text_file, r.chunk, 3);
    if (!rust.is_null()) {
      r.rust = rust.value("mb_per_s", 0.0);
      r.rust_tokens = rust.value("tokens", size_t(0));
    }
    out["runs"].push_back({{"mode", r.name}, {"chunk_bytes", r.chunk}, {"tokens", r.tokens}, {"mb_per_s", r.ours},
                           {"rust_mb_per_s", rust.is_null() ? json(nullptr) : json(r.rust)},
                           {"rust_tokens", rust.is_null() ? json(nullptr) : json(r.rust_tokens)},
                           {"ratio", r.rust > 0 ? json(r.ours / r.rust) : json(nullptr)}});
  }
  std::error_code ec;
  std::filesystem::remove(text_file, ec);
  if (o.json_out) {
    std::printf("%s\n", out.dump().c_str());
    return;
  }
  std::printf("tokenizer  %s (%s)\ntext       %.1f MB of mixed prose, code, numbers and emoji; one thread; best of 3\n"
              "loaded in  %.2f s\n",
              file_json.c_str(), tok->summary().c_str(), double(text.size()) / 1e6, load_s);
  std::printf("%-28s %10s %12s %8s %s\n", "", "MoE Lab", "Rust (HF)", "ratio", "tokens (ours / Rust)");
  for (const Row& r : rows) {
    if (r.rust > 0)
      std::printf("%-28s %7.2f MB/s %7.2f MB/s %7.2fx %zu / %zu%s\n", r.name, r.ours, r.rust, r.ours / r.rust, r.tokens,
                  r.rust_tokens, r.tokens == r.rust_tokens ? "" : "  (differ!)");
    else
      std::printf("%-28s %7.2f MB/s %12s %8s %zu\n", r.name, r.ours, "-", "-", r.tokens);
  }
  std::printf("target: at least 0.5x the Rust library's speed on one thread\n");
}

void add_tokenize_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("tokenize", "Split a text into a model's tokens: ids and pieces");
  auto* m = cmd->add_option("--model", t.model, "Model directory with a tokenizer.json, or 'builtin'");
  auto* f = cmd->add_option("--tokenizer", t.tokenizer, "A tokenizer.json file (or a folder holding one)");
  m->excludes(f);
  f->excludes(m);
  auto* tx = cmd->add_option("--text", t.text, "The text");
  auto* fi = cmd->add_option("--file", t.file, "Read the text from this UTF-8 file");
  tx->excludes(fi);
  fi->excludes(tx);
  cmd->add_flag("--json", t.json_out, "JSON on stdout: {\"ids\": [...], \"pieces\": [...]}");
  cmd->add_flag("--no-special", t.no_special, "No BOS or template tokens (add_special_tokens=false)");
  cmd->callback([tx, fi] {
    if (t.model.empty() && t.tokenizer.empty()) fail("tokenize", "give --model DIR or --tokenizer FILE");
    if (tx->count() + fi->count() == 0) fail("tokenize", "give --text TEXT or --file FILE");
    run_tokenize();
  });
}

}  // namespace moelab::cli
