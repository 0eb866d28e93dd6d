#pragma once
// Structured logs on stdout: one JSON object per line ({"ts":...,"level":...,"msg":...,fields...}) or
// one text line ("TS LEVEL msg key=value ..."). Operators read these; every field has a stable name.

#include "reactor/config/config.hpp"

#include <nlohmann/json.hpp>

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace etcd_sync {

/// Named values attached to a log line, e.g. {{"key", key}, {"revision", 42}}.
using LogFields = std::vector<std::pair<std::string, nlohmann::json>>;

/// Sets level and format; callable again at any time (SIGHUP).
void configure_logging(LogLevel level, LogFormat format);

/// Writes one line when `level` is enabled. Never pass a password in `fields`.
void log(LogLevel level, std::string_view message, const LogFields& fields = {});
inline void log_trace(std::string_view m, const LogFields& f = {}) { log(LogLevel::trace, m, f); }
inline void log_debug(std::string_view m, const LogFields& f = {}) { log(LogLevel::debug, m, f); }
inline void log_info(std::string_view m, const LogFields& f = {}) { log(LogLevel::info, m, f); }
inline void log_warn(std::string_view m, const LogFields& f = {}) { log(LogLevel::warn, m, f); }
inline void log_error(std::string_view m, const LogFields& f = {}) { log(LogLevel::error, m, f); }
bool log_enabled(LogLevel level);

/// Formats one line (no trailing newline); exposed for tests.
std::string format_log_line(LogFormat format, LogLevel level, std::string_view message, const LogFields& fields,
                            std::chrono::system_clock::time_point when);

}  // namespace etcd_sync
