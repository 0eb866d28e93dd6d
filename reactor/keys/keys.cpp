#include "reactor/keys/keys.hpp"

#include <algorithm>

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

bool is_text(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c == 0) return false;
    if (c < 0x80) {
      ++i;
      continue;
    }
    int extra;
    unsigned min;
    unsigned code;
    if ((c & 0xe0) == 0xc0) {
      extra = 1, min = 0x80, code = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      extra = 2, min = 0x800, code = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      extra = 3, min = 0x10000, code = c & 0x07;
    } else {
      return false;
    }
    if (i + extra >= s.size()) return false;  // truncated sequence
    for (int k = 1; k <= extra; ++k) {
      auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xc0) != 0x80) return false;
      code = (code << 6) | (cc & 0x3f);
    }
    if (code < min || code > 0x10ffff || (code >= 0xd800 && code <= 0xdfff)) return false;
    i += extra + 1;
  }
  return true;
}

void append_copy_text(std::string& line, std::string_view field) {
  for (char c : field) {
    switch (c) {
      case '\\': line += "\\\\"; break;
      case '\t': line += "\\t"; break;
      case '\n': line += "\\n"; break;
      case '\r': line += "\\r"; break;
      default: line += c;
    }
  }
}

std::int64_t next_range_page_limit(std::size_t previous_page_bytes, int previous_page_keys) {
  constexpr std::size_t page_bytes = 8 * 1024 * 1024;
  constexpr std::int64_t max_page_keys = 50000;
  if (previous_page_keys <= 0) return kRangeFirstPageKeys;
  auto key_bytes = std::max<std::size_t>(1, previous_page_bytes / static_cast<std::size_t>(previous_page_keys));
  return std::clamp<std::int64_t>(static_cast<std::int64_t>(page_bytes / key_bytes), 1, max_page_keys);
}

std::string bytea_hex(std::string_view bytes) {
  static const char* hex = "0123456789abcdef";
  std::string out;
  out.reserve(2 + 2 * bytes.size());
  out += "\\x";
  for (char c : bytes) {
    auto b = static_cast<unsigned char>(c);
    out += hex[b >> 4];
    out += hex[b & 0x0f];
  }
  return out;
}

void append_copy_bytea(std::string& line, std::string_view bytes) {
  line += '\\';  // COPY text format escapes the literal's backslash
  line += bytea_hex(bytes);
}

}  // namespace etcd_sync
