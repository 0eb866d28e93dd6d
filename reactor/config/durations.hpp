#pragma once
// Durations as configuration writes them: Go-style strings with a unit ("500ms", "5s", "1m30s"),
// the form the quickstart used (README, "Configuration").

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace etcd_sync {

/// The accepted form, worded for error messages.
inline constexpr std::string_view duration_form =
    "a number with a unit (ms, s, m or h), e.g. \"500ms\", \"5s\", \"1.5s\", \"1m30s\"";

/// Parses one or more `<number><unit>` parts ("1m30s", "1.5s", "0s"); units are ms, s, m and h.
/// Returns nullopt for an empty string, a number without a unit ("5"), a sign, spaces, an unknown
/// unit, a value that is not a whole number of milliseconds ("1.5ms"), or one too large for int64.
std::optional<std::chrono::milliseconds> parse_duration(std::string_view text);

/// Formats `d` in the same form, largest units first and zero parts left out: "500ms", "1.5s",
/// "2m", "1h30m", "0s". For d >= 0, parse_duration(format_duration(d)) == d.
std::string format_duration(std::chrono::milliseconds d);

}  // namespace etcd_sync
