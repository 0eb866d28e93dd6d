// The three places where toml11 3.x (Debian 12) and 4.x (Debian 13) differ for us: a value's line,
// a string value's text, and what a syntax error says. config.cpp reads the same on both; the
// version test lives only in toml_compat.cpp.
#pragma once

#include <string>
#include <toml.hpp>
#include <variant>

namespace etcd_sync::toml_compat {

/// The 1-based line of the configuration file where `v` was written; 0 when toml11 does not know
/// (a value it made up rather than read).
int line_of(const toml::value& v);

/// The text of a string value. Precondition: `v.is_string()`.
const std::string& text_of(const toml::value& v);

/// Why a document could not be parsed: the line toml11 names (0 when it names none) and its
/// reason on one line, without toml11's framing and without the quoted source line (which may
/// hold a password).
struct SyntaxError {
  int line = 0;
  std::string reason;
};

/// Parses TOML `text`; `file_name` only labels toml11's own messages. Returns the document, or the
/// syntax error. Other failures (out of memory, say) propagate as the std::exception they are.
std::variant<toml::value, SyntaxError> parse(const std::string& text, const std::string& file_name);

}  // namespace etcd_sync::toml_compat
