// tokenizer.json reading without the Node reference: BPE worked by hand on tiny vocabularies,
// UTF-8 refusal with the byte offset, and hostile files (each a one-line error naming the file
// and the problem, within seconds, never a crash, hang or giant allocation). The comparison with
// the Rust library on real tokenizers is test_tokenizer_<name> (label reference).
#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include <unistd.h>

#include "check.hpp"
#include "config.hpp"
#include "hf_tokenizer.hpp"
#include "tokenizer.hpp"

using moelab::HfTokenizer;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

fs::path tmp_dir() {
  static const fs::path d = [] {
    fs::path p = fs::temp_directory_path() / ("moelab-test-hf-tokenizer-" + std::to_string(::getpid()));
    fs::create_directories(p);
    return p;
  }();
  return d;
}

std::string write(const std::string& name, const std::string& text) {
  const fs::path p = tmp_dir() / name;
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << text;
  return p.string();
}

// A tiny BPE: characters a b c d, space as "_", and the merges worked out below by hand.
json tiny(json extra = json::object()) {
  json j = {{"version", "1.0"},
            {"truncation", nullptr},
            {"padding", nullptr},
            {"added_tokens", json::array()},
            {"normalizer", nullptr},
            {"pre_tokenizer", nullptr},
            {"post_processor", nullptr},
            {"decoder", nullptr},
            {"model",
             {{"type", "BPE"},
              {"dropout", nullptr},
              {"unk_token", nullptr},
              {"continuing_subword_prefix", nullptr},
              {"end_of_word_suffix", nullptr},
              {"fuse_unk", false},
              {"byte_fallback", false},
              {"vocab", {{"a", 0}, {"b", 1}, {"c", 2}, {"d", 3}, {"ab", 4}, {"bc", 5}, {"abc", 6}, {"cd", 7}, {"_", 8}}},
              {"merges", json::array({"b c", "a b", "ab c", "c d"})}}}};
  j.merge_patch(extra);
  return j;
}

std::shared_ptr<const HfTokenizer> load_json(const std::string& name, const json& j) {
  return HfTokenizer::load(write(name + "/tokenizer.json", j.dump()));
}

std::vector<int32_t> ids(std::initializer_list<int32_t> v) { return v; }

}  // namespace

TEST(bpe_merges_by_rank_worked_by_hand) {
  auto t = load_json("tiny", tiny());
  // "abc": pairs (a,b) rank 1 and (b,c) rank 0; b c merges first -> a bc; no "a bc" merge.
  CHECK(t->encode("abc") == ids({0, 5}));
  // "abcd": b c first (rank 0) -> a bc d; then nothing ("a bc", "bc d" are no merges).
  CHECK(t->encode("abcd") == ids({0, 5, 3}));
  // "abd": a b (rank 1) -> ab d.
  CHECK(t->encode("abd") == ids({4, 3}));
  // "cdab": c d (rank 3) and a b (rank 1): ab first, then cd -> cd ab.
  CHECK(t->encode("cdab") == ids({7, 4}));
  // A character outside the vocabulary, with no unk token and no byte fallback, is dropped (as
  // the Rust library does), so its neighbours meet and merge.
  CHECK(t->encode("axb") == ids({4}));
  CHECK(t->encode("").empty());
  CHECK_EQ(t->decode(ids({4, 3})), std::string("ab d"));  // no decoder: pieces joined by spaces
}

TEST(bpe_unknown_and_byte_fallback) {
  json vocab = {{"<unk>", 0}, {"a", 1}, {"b", 2}, {"<0x78>", 3}, {"<0x79>", 4}};
  auto unk = load_json("unk", tiny({{"model", {{"vocab", vocab}, {"merges", json::array()}, {"unk_token", "<unk>"}}}}));
  CHECK(unk->encode("axyb") == ids({1, 0, 0, 2}));
  auto fused = load_json("fused", tiny({{"model", {{"vocab", vocab}, {"merges", json::array()}, {"unk_token", "<unk>"}, {"fuse_unk", true}}}}));
  CHECK(fused->encode("axyb") == ids({1, 0, 2}));
  auto fallback = load_json("fallback", tiny({{"model", {{"vocab", vocab}, {"merges", json::array()}, {"unk_token", "<unk>"}, {"byte_fallback", true}}},
                                                {"decoder", {{"type", "ByteFallback"}}}}));
  // x and y are bytes 0x78 and 0x79; z has no byte token and becomes <unk>.
  CHECK(fallback->encode("axyzb") == ids({1, 3, 4, 0, 2}));
  CHECK_EQ(fallback->decode(ids({1, 3, 4, 2})), std::string("axyb"));
}

TEST(added_tokens_are_cut_out_before_the_model) {
  json j = tiny({{"added_tokens", json::array({{{"id", 9}, {"content", "<s>"}, {"special", true}, {"normalized", false}},
                                                {{"id", 10}, {"content", "cd"}, {"special", false}, {"normalized", false},
                                                 {"lstrip", true}, {"rstrip", true}}})}});
  j["model"]["vocab"]["<s>"] = 9;
  j["model"]["vocab"].erase("cd");
  j["model"]["vocab"]["xx"] = 7;
  j["model"]["merges"] = json::array({"b c", "a b", "ab c"});
  auto t = load_json("added", j);
  // "<s>" matched whole; "cd" with lstrip/rstrip swallows the spaces around it.
  CHECK(t->encode("a<s>b") == ids({0, 9, 1}));
  CHECK(t->encode("ab  cd  ab") == ids({4, 10, 4}));
  CHECK(t->is_special(9));
  CHECK(!t->is_special(10));
  CHECK_EQ(t->piece(9), std::string("<s>"));
}

TEST(template_post_processor_adds_bos) {
  json pp = json::parse(R"({"type": "TemplateProcessing",
      "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
      "pair": null,
      "special_tokens": {"<s>": {"id": "<s>", "ids": [8], "tokens": ["<s>"]}}})");
  json j = tiny({{"post_processor", pp}});
  auto t = load_json("template", j);
  CHECK(t->encode("ab", true) == ids({8, 4}));
  CHECK(t->encode("ab", false) == ids({4}));
}

TEST(invalid_utf8_is_refused_with_its_byte_offset) {
  auto t = load_json("tiny2", tiny());
  CHECK_THROWS_WITH(t->encode(std::string("ab\xFF" "cd")), "not valid UTF-8 at byte 2");
  CHECK_THROWS_WITH(t->encode(std::string("a\xC0\x80")), "at byte 1");          // overlong
  CHECK_THROWS_WITH(t->encode(std::string("abc\xED\xA0\x80")), "at byte 3");    // a surrogate
  CHECK_THROWS_WITH(t->encode(std::string("ab\xF0\x9F\x98")), "at byte 2");     // cut short
  CHECK(!moelab::invalid_utf8_offset("h\xC3\xA9llo \xF0\x9F\x98\x80"));
  CHECK(moelab::invalid_utf8_offset(std::string("\xF4\x90\x80\x80")) == std::optional<size_t>(0));  // > U+10FFFF
}

TEST(visible_labels) {
  CHECK_EQ(moelab::visible_token_text(" the\n"), std::string("\xE2\x90\xA3the\xE2\x86\xB5"));
  CHECK_EQ(moelab::visible_token_text("\xE2\x96"), std::string("<0xE2><0x96>"));
  CHECK_EQ(moelab::visible_token_text("\t\x01"), std::string("\xE2\x87\xA5<0x01>"));
}

// ---- hostile files: one line naming the file and the problem, quickly

namespace {
std::string error_loading(const std::string& name, const std::string& text) {
  const std::string path = write(name + "/tokenizer.json", text);
  const auto t0 = std::chrono::steady_clock::now();
  std::string msg = check::error_of([&] { HfTokenizer::load(path); });
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (s > 5) msg += " [took " + std::to_string(s) + " s]";
  if (msg.find('\n') != std::string::npos) msg += " [more than one line]";
  if (msg.find(path) == std::string::npos) msg += " [does not name the file]";
  return msg;
}
}  // namespace

#define CHECK_REFUSED(name, text, needle)                                                                       \
  do {                                                                                                         \
    const std::string m_ = error_loading(name, text);                                                         \
    if (m_.find(needle) == std::string::npos || m_.find(" [") != std::string::npos)                          \
      check::report(__FILE__, __LINE__, std::string("expected a one-line error with '") + (needle) + "', got '" + m_ + "'"); \
  } while (0)

TEST(hostile_tokenizer_json) {
  const std::string good = tiny().dump();
  CHECK_REFUSED("truncated", good.substr(0, good.size() / 2), "malformed JSON");
  CHECK_REFUSED("empty", "", "malformed JSON");
  CHECK_REFUSED("binary", std::string("\x00\xFF\xFE garbage\x01", 12), "malformed JSON");
  CHECK_REFUSED("nested", std::string(200000, '[') + std::string(200000, ']'), "tokenizer.json");
  CHECK_REFUSED("not_object", "[1, 2, 3]", "must hold a JSON object");
  // A huge vocabulary: an id that would need gigabytes, and a vocabulary of sparse ids.
  {
    json j = tiny();
    j["model"]["vocab"]["zz"] = 2000000000;
    CHECK_REFUSED("huge_id", j.dump(), "not a plausible token id");
    j["model"]["vocab"]["zz"] = 4000000;
    CHECK_REFUSED("sparse_ids", j.dump(), "ids must be dense");
  }
  {
    json j = tiny();
    j["model"]["merges"].push_back("a zz");
    CHECK_REFUSED("merge_unknown", j.dump(), "merges[4] names 'zz', which is not in the vocabulary");
    j["model"]["merges"] = json::array({"a d"});
    CHECK_REFUSED("merge_result_unknown", j.dump(), "makes 'ad', which is not in the vocabulary");
    j["model"]["merges"] = json::array({"a b c"});
    CHECK_REFUSED("merge_three", j.dump(), "not two tokens");
  }
  {
    json j = tiny({{"added_tokens", json::array({{{"id", 9}, {"content", ""}, {"special", true}}})}});
    CHECK_REFUSED("added_empty", j.dump(), "has empty content");
    j["added_tokens"][0]["content"] = std::string(5000, 'x');
    CHECK_REFUSED("added_enormous", j.dump(), "5000 bytes long");
    j["added_tokens"][0]["content"] = "<x>";
    j["added_tokens"][0]["id"] = 12345;
    CHECK_REFUSED("added_wrong_id", j.dump(), "has id 12345 but would get id 9");
  }
  CHECK_REFUSED("normalizer", tiny({{"normalizer", {{"type", "Lowercase"}}}}).dump(), "normalizer type 'Lowercase' is not supported");
  CHECK_REFUSED("pretok", tiny({{"pre_tokenizer", {{"type", "Whitespace"}}}}).dump(), "pre_tokenizer type 'Whitespace' is not supported");
  CHECK_REFUSED("decoder", tiny({{"decoder", {{"type", "WordPiece"}}}}).dump(), "decoder type 'WordPiece' is not supported");
  CHECK_REFUSED("model_type", tiny({{"model", {{"type", "Unigram"}}}}).dump(), "model type 'Unigram' is not supported");
  CHECK_REFUSED("dropout", tiny({{"model", {{"dropout", 0.1}}}}).dump(), "model.dropout = 0.1");
  CHECK_REFUSED("unknown_field", tiny({{"model", {{"fancy_new_option", true}}}}).dump(), "has the field 'fancy_new_option'");
  CHECK_REFUSED("truncation", tiny({{"truncation", {{"max_length", 512}}}}).dump(), "truncation is set");
  CHECK_REFUSED("bad_regex", tiny({{"pre_tokenizer", json::parse(R"({"type": "Split", "pattern": {"Regex": "(unclosed"}, "behavior": "Isolated"})")}}).dump(),
                "regex does not compile");
  {
    json n = {{"type", "NFC"}};
    for (int i = 0; i < 100; ++i) n = {{"type", "Sequence"}, {"normalizers", json::array({n})}};
    CHECK_REFUSED("deep_sequence", tiny({{"normalizer", n}}).dump(), "nested more than 8 deep");
  }
  CHECK(error_loading("missing_dir/none", "x").find("malformed") != std::string::npos);
  CHECK_THROWS_WITH(HfTokenizer::load((tmp_dir() / "no-such-folder").string()), "no-such-folder");
}

TEST(catastrophic_regex_fails_fast) {
  // (a+)+$ against "aaaa...!" backtracks exponentially without a match limit.
  json j = tiny({{"pre_tokenizer", json::parse(R"({"type": "Split", "pattern": {"Regex": "(a+)+$"}, "behavior": "Isolated", "invert": false})")}});
  auto t = load_json("catastrophic", j);
  const auto t0 = std::chrono::steady_clock::now();
  const std::string msg = check::error_of([&] { t->encode(std::string(40, 'a') + "!"); });
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  CHECK(msg.find("regex failed on this text") != std::string::npos);
  CHECK(msg.find("catastrophic/tokenizer.json") != std::string::npos);
  CHECK(s < 5.0);
  // and an ordinary text still works with the same file
  CHECK(t->encode("ab") == ids({4}));
}

TEST(text_tokenizer_for_models) {
  moelab::ModelConfig c;
  c.tokenizer = "bytes";
  auto bytes = moelab::TextTokenizer::for_model((tmp_dir() / "no-tokenizer-here").string(), c);
  CHECK(bytes && bytes->is_bytes());
  c.tokenizer = "";
  CHECK(!moelab::TextTokenizer::for_model((tmp_dir() / "no-tokenizer-here").string(), c));
  load_json("model_with_tokenizer", tiny());
  auto hf = moelab::TextTokenizer::for_model((tmp_dir() / "model_with_tokenizer").string(), c);
  CHECK(hf && !hf->is_bytes());
  CHECK(hf->encode_prompt("abd") == ids({4, 3}));
  CHECK_EQ(hf->label(8), std::string("_"));
}

CHECK_MAIN()
