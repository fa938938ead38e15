#include "tokenizer.hpp"

#include <cstdio>

#include "error.hpp"

namespace moelab {

std::vector<int32_t> encode_bytes(const std::string& text, bool add_bos) {
  std::vector<int32_t> ids;
  ids.reserve(text.size() + 1);
  if (add_bos) ids.push_back(kBosToken);
  for (unsigned char ch : text) ids.push_back(int32_t(ch));
  return ids;
}

std::string decode_bytes(const std::vector<int32_t>& ids) {
  std::string s;
  for (int32_t id : ids)
    if (id >= 0 && id < 256) s.push_back(char(id));
  return s;
}

std::string token_label(int32_t id) {
  switch (id) {
    case kBosToken: return "<bos>";
    case kEosToken: return "<eos>";
    case kPadToken: return "<pad>";
    case kSepToken: return "<sep>";
    case '\n': return "\\n";
    case '\t': return "\\t";
    default: break;
  }
  if (id >= 32 && id < 127) return std::string(1, char(id));
  char buf[16];
  std::snprintf(buf, sizeof buf, id >= 0 && id < 256 ? "<0x%02X>" : "<%d>", id);
  return buf;
}

std::vector<int32_t> parse_token_ids(const std::string& text, const std::string& where) {
  std::vector<int32_t> ids;
  size_t i = 0;
  while (i < text.size()) {
    size_t j = text.find(',', i);
    if (j == std::string::npos) j = text.size();
    const std::string part = text.substr(i, j - i);
    if (part.empty() || part.size() > 10 || part.find_first_not_of("0123456789") != std::string::npos)
      fail(where, "'" + part + "' is not a token id (expected comma-separated non-negative integers)");
    const long long v = std::stoll(part);
    if (v > 0x7fffffff) fail(where, "token id " + part + " is too large");
    ids.push_back(int32_t(v));
    i = j + 1;
  }
  if (ids.empty()) fail(where, "no token ids given");
  return ids;
}

}  // namespace moelab
