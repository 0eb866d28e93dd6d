#include "reactor/config/toml_compat.hpp"

#include <sstream>
#include <string_view>

namespace etcd_sync::toml_compat {
namespace {

// The first line of a toml11 message without its "[error] toml::function: " prefix. The rest of
// the message quotes the offending source line, which may hold a password, so it is dropped.
std::string first_line_of(std::string_view what) {
  what = what.substr(0, what.find('\n'));
  if (what.starts_with("[error] ")) what.remove_prefix(8);
  if (what.starts_with("toml::")) {
    if (const auto colon = what.find(": "); colon != std::string_view::npos) what.remove_prefix(colon + 2);
  }
  return std::string(what);
}

}  // namespace

#if TOML11_VERSION_MAJOR >= 4

int line_of(const toml::value& v) { return static_cast<int>(v.location().first_line_number()); }

const std::string& text_of(const toml::value& v) { return v.as_string(); }

std::variant<toml::value, SyntaxError> parse(const std::string& text, const std::string& file_name) {
  std::istringstream in(text);
  try {
    return toml::parse(in, file_name);
  } catch (const toml::syntax_error& e) {
    // toml11 4 lists every error it found; the first is the one to fix first.
    if (e.errors().empty()) return SyntaxError{0, first_line_of(e.what())};
    const toml::error_info& first = e.errors().front();
    const int line =
        first.locations().empty() ? 0 : static_cast<int>(first.locations().front().first.first_line_number());
    std::string reason = first_line_of(first.title());
    if (!first.locations().empty() && !first.locations().front().second.empty()) {
      reason += ": " + first_line_of(first.locations().front().second);
    }
    return SyntaxError{line, std::move(reason)};
  }
}

#else  // toml11 3.x

int line_of(const toml::value& v) { return static_cast<int>(v.location().line()); }

const std::string& text_of(const toml::value& v) { return v.as_string().str; }

std::variant<toml::value, SyntaxError> parse(const std::string& text, const std::string& file_name) {
  std::istringstream in(text);
  try {
    return toml::parse(in, file_name);
  } catch (const toml::exception& e) {
    return SyntaxError{static_cast<int>(e.location().line()), first_line_of(e.what())};
  }
}

#endif

}  // namespace etcd_sync::toml_compat
