// The lab's byte-level tokenizer: one token per byte (0..255) plus a few specials. Any UTF-8
// text round-trips exactly; a student can see every token.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace moelab {

constexpr int32_t kBosToken = 256;  // <bos>: start of a sequence
constexpr int32_t kEosToken = 257;  // <eos>: end of a sequence
constexpr int32_t kPadToken = 258;  // <pad>
constexpr int32_t kSepToken = 259;  // <sep>: between documents
constexpr int32_t kByteVocab = 260;

std::vector<int32_t> encode_bytes(const std::string& text, bool add_bos = true);
std::string decode_bytes(const std::vector<int32_t>& ids);  // specials are skipped
// How a single token reads on screen: printable bytes as themselves, others escaped ("\n", "<0xE2>").
std::string token_label(int32_t id);

// Parse "3,1,4,1" into token ids; errors name the flag.
std::vector<int32_t> parse_token_ids(const std::string& text, const std::string& where);

}  // namespace moelab
