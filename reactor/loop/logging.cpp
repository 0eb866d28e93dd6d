#include "reactor/loop/logging.hpp"

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <ctime>

namespace etcd_sync {

namespace {

struct LogState {
  LogLevel level = LogLevel::info;
  LogFormat format = LogFormat::json;
  std::shared_ptr<spdlog::logger> out;
};

LogState& state() {
  static LogState s = [] {
    LogState init;
    init.out = std::make_shared<spdlog::logger>("etcd-sync", std::make_shared<spdlog::sinks::stdout_sink_mt>());
    init.out->set_pattern("%v");
    init.out->set_level(spdlog::level::trace);
    init.out->flush_on(spdlog::level::trace);  // a supervisor reads stdout line by line
    return init;
  }();
  return s;
}

std::string iso8601(std::chrono::system_clock::time_point when) {
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(when.time_since_epoch()).count();
  std::time_t seconds = ms / 1000;
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  char buffer[40];
  std::size_t n = std::strftime(buffer, sizeof buffer, "%Y-%m-%dT%H:%M:%S", &utc);
  std::snprintf(buffer + n, sizeof buffer - n, ".%03dZ", static_cast<int>(ms % 1000));
  return buffer;
}

}  // namespace

void configure_logging(LogLevel level, LogFormat format) {
  state().level = level;
  state().format = format;
  // Library messages that go through spdlog's default logger follow the same level.
  spdlog::set_level(level == LogLevel::trace ? spdlog::level::trace
                    : level == LogLevel::debug ? spdlog::level::debug
                                               : spdlog::level::warn);
}

bool log_enabled(LogLevel level) { return static_cast<int>(level) >= static_cast<int>(state().level); }

std::string format_log_line(LogFormat format, LogLevel level, std::string_view message, const LogFields& fields,
                            std::chrono::system_clock::time_point when) {
  if (format == LogFormat::json) {
    nlohmann::ordered_json line;
    line["ts"] = iso8601(when);
    line["level"] = to_string(level);
    line["msg"] = message;
    for (const auto& [name, value] : fields) line[name] = value;
    return line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }
  std::string level_name = to_string(level);
  level_name.resize(5, ' ');
  std::string line = iso8601(when) + " " + level_name + " ";
  line += message;
  for (const auto& [name, value] : fields) {
    line += ' ';
    line += name;
    line += '=';
    line += value.is_string() ? value.get<std::string>() : value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }
  return line;
}

void log(LogLevel level, std::string_view message, const LogFields& fields) {
  if (!log_enabled(level)) return;
  state().out->info(format_log_line(state().format, level, message, fields, std::chrono::system_clock::now()));
}

}  // namespace etcd_sync
