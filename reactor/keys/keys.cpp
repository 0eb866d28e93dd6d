#include "reactor/keys/keys.hpp"

#include <algorithm>
#include <cstdint>

namespace etcd_sync {

KeyRange prefix_range(std::string_view prefix) {
  if (prefix.empty() || prefix == "/") return {std::string(1, '\0'), std::string(1, '\0')};
  std::string end(prefix);
  while (!end.empty()) {
    auto last = static_cast<unsigned char>(end.back());
    if (last < 0xff) {
      end.back() = static_cast<char>(last + 1);
      return {std::string(prefix), end};
    }
    end.pop_back();
  }
  // Every byte is 0xff: no key sorts after the prefix, so range to the end of the keyspace.
  return {std::string(prefix), std::string(1, '\0')};
}

bool key_in_prefix(std::string_view key, std::string_view prefix) {
  if (prefix.empty() || prefix == "/") return true;
  return key.substr(0, prefix.size()) == prefix;
}

std::string effective_prefix(std::string_view prefix) {
  return prefix == "/" ? std::string() : std::string(prefix);
}

std::int64_t next_range_page_limit(std::size_t previous_page_bytes, int previous_page_keys) {
  constexpr std::size_t page_bytes = 8 * 1024 * 1024;
  constexpr std::int64_t max_page_keys = 50000;
  if (previous_page_keys <= 0) return kRangeFirstPageKeys;
  auto key_bytes = std::max<std::size_t>(1, previous_page_bytes / static_cast<std::size_t>(previous_page_keys));
  return std::clamp<std::int64_t>(static_cast<std::int64_t>(page_bytes / key_bytes), 1, max_page_keys);
}

}  // namespace etcd_sync
