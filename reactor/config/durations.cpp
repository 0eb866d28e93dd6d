#include "reactor/config/durations.hpp"

#include <cstdint>
#include <limits>

namespace etcd_sync {
namespace {

struct Unit {
  std::string_view name;
  std::int64_t ms;
};

// "ms" comes before "m" so that "500ms" is not read as 500 minutes followed by a stray "s".
constexpr Unit units[] = {{"ms", 1}, {"s", 1'000}, {"m", 60'000}, {"h", 3'600'000}};

constexpr std::int64_t max_ms = std::numeric_limits<std::int64_t>::max();

bool is_digit(char c) { return c >= '0' && c <= '9'; }

}  // namespace

std::optional<std::chrono::milliseconds> parse_duration(std::string_view text) {
  if (text.empty()) return std::nullopt;
  std::int64_t total = 0;
  std::size_t i = 0;
  while (i < text.size()) {
    // <whole>[.<fraction>] with at least one digit somewhere.
    std::int64_t whole = 0;
    bool any_digit = false;
    for (; i < text.size() && is_digit(text[i]); ++i) {
      const int digit = text[i] - '0';
      if (whole > (max_ms - digit) / 10) return std::nullopt;
      whole = whole * 10 + digit;
      any_digit = true;
    }
    std::string_view fraction;
    if (i < text.size() && text[i] == '.') {
      const std::size_t start = ++i;
      while (i < text.size() && is_digit(text[i])) ++i;
      fraction = text.substr(start, i - start);
      any_digit = any_digit || !fraction.empty();
    }
    if (!any_digit) return std::nullopt;

    const Unit* unit = nullptr;
    for (const Unit& u : units) {
      if (text.substr(i).starts_with(u.name)) {
        unit = &u;
        break;
      }
    }
    if (unit == nullptr) return std::nullopt;  // no unit, or one we do not take (ns, us, d, ...)
    i += unit->name.size();

    // Trailing zeros carry no value; what remains must come to whole milliseconds. Nine
    // significant digits are more than any unit up to an hour can turn into whole milliseconds.
    while (!fraction.empty() && fraction.back() == '0') fraction.remove_suffix(1);
    if (fraction.size() > 9) return std::nullopt;
    std::int64_t numerator = 0;
    std::int64_t scale = 1;
    for (char c : fraction) {
      numerator = numerator * 10 + (c - '0');
      scale *= 10;
    }
    if (numerator * unit->ms % scale != 0) return std::nullopt;

    if (whole > (max_ms - total) / unit->ms) return std::nullopt;
    total += whole * unit->ms;
    const std::int64_t fraction_ms = numerator * unit->ms / scale;
    if (fraction_ms > max_ms - total) return std::nullopt;
    total += fraction_ms;
  }
  return std::chrono::milliseconds{total};
}

std::string format_duration(std::chrono::milliseconds d) {
  if (d.count() == 0) return "0s";
  // Work on the magnitude as unsigned so that the most negative value has one too.
  const bool negative = d.count() < 0;
  const std::uint64_t ms =
      negative ? 0 - static_cast<std::uint64_t>(d.count()) : static_cast<std::uint64_t>(d.count());
  std::string out = negative ? "-" : "";
  if (ms < 1'000) return out + std::to_string(ms) + "ms";

  const std::uint64_t hours = ms / 3'600'000;
  const std::uint64_t minutes = ms / 60'000 % 60;
  const std::uint64_t seconds = ms / 1'000 % 60;
  const std::uint64_t millis = ms % 1'000;
  if (hours != 0) out += std::to_string(hours) + "h";
  if (minutes != 0) out += std::to_string(minutes) + "m";
  if (seconds != 0 || millis != 0) {
    out += std::to_string(seconds);
    if (millis != 0) {
      std::string fraction = std::to_string(millis);
      fraction.insert(0, 3 - fraction.size(), '0');
      while (fraction.back() == '0') fraction.pop_back();
      out += "." + fraction;
    }
    out += "s";
  }
  return out;
}

}  // namespace etcd_sync
