#include "reactor/keys/pg_text.hpp"

#include <cstdint>
#include <cstring>

namespace etcd_sync {
namespace {

// Eight bytes at a time. The byte test is the classic one: (v - n * 0x01..01) & ~v & 0x80..80 is
// nonzero exactly when some byte of v is below n (n <= 0x80; n = 1 finds a zero byte).
constexpr std::uint64_t kOnes = 0x0101010101010101ULL, kHighs = 0x8080808080808080ULL;

std::uint64_t word_at(std::string_view s, std::size_t i) {
  std::uint64_t v;
  std::memcpy(&v, s.data() + i, sizeof v);
  return v;
}

bool any_byte_below(std::uint64_t v, unsigned n) { return ((v - kOnes * n) & ~v & kHighs) != 0; }

// True when no byte has its high bit set and none is NUL.
bool plain_ascii_word(std::string_view s, std::size_t i) {
  const auto v = word_at(s, i);
  return (v & kHighs) == 0 && !any_byte_below(v, 1);
}

// True when no byte is one COPY's text format escapes ('\\', '\t', '\n', '\r'). A byte below 0x0e
// (which covers the last three) or equal to '\\' sends the word to the slow path.
bool nothing_to_escape_word(std::string_view s, std::size_t i) {
  const auto v = word_at(s, i);
  return !any_byte_below(v, 0x0e) && !any_byte_below(v ^ (kOnes * '\\'), 1);
}

}  // namespace

bool is_text(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    if (i + 8 <= s.size() && plain_ascii_word(s, i)) {
      i += 8;
      continue;
    }
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
  // Plain stretches are appended whole; only the four bytes COPY's text format escapes are not.
  std::size_t plain = 0;
  for (std::size_t i = 0; i < field.size(); ++i) {
    while (i + 8 <= field.size() && nothing_to_escape_word(field, i)) i += 8;
    if (i == field.size()) break;
    const char* escaped;
    switch (field[i]) {
      case '\\': escaped = "\\\\"; break;
      case '\t': escaped = "\\t"; break;
      case '\n': escaped = "\\n"; break;
      case '\r': escaped = "\\r"; break;
      default: continue;
    }
    line.append(field.data() + plain, i - plain);
    line += escaped;
    plain = i + 1;
  }
  line.append(field.data() + plain, field.size() - plain);
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
