// Connection strings: the etcd:// DSN, host:port checks, and keeping passwords out of
// everything that gets printed (libpq conninfo in both of its forms, and etcd DSNs).

#include <algorithm>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "reactor/config/config.hpp"
#include "reactor/config/durations.hpp"

namespace etcd_sync {
namespace {

constexpr std::string_view redacted = "********";
constexpr std::string_view host_port_example = "expected host:port, e.g. \"127.0.0.1:2379\"";
constexpr auto npos = std::string_view::npos;

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}
bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool is_hex(char c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

int hex_value(char c) {
  if (is_digit(c)) return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return c - 'A' + 10;
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const auto lower = [](char c) {
      return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
    };
    if (lower(a[i]) != lower(b[i])) return false;
  }
  return true;
}

/// Decodes %XX escapes; nullopt when a '%' is not followed by two hex digits.
std::optional<std::string> percent_decode(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '%') {
      out += text[i];
      continue;
    }
    if (i + 2 >= text.size()) return std::nullopt;
    if (!is_hex(text[i + 1]) || !is_hex(text[i + 2])) return std::nullopt;
    out += static_cast<char>(hex_value(text[i + 1]) * 16 + hex_value(text[i + 2]));
    i += 2;
  }
  return out;
}

std::vector<std::string_view> split(std::string_view text, char separator) {
  std::vector<std::string_view> parts;
  for (;;) {
    const auto at = text.find(separator);
    parts.push_back(text.substr(0, at));
    if (at == npos) return parts;
    text.remove_prefix(at + 1);
  }
}

bool is_host_name_char(char c) {
  return is_alpha(c) || is_digit(c) || c == '-' || c == '.' || c == '_';
}

std::string in_quotes(std::string_view text) { return "\"" + std::string(text) + "\""; }

// libpq URIs: user information is hidden up to the LAST '@' (not libpq's first '@' before a '/'),
// so that a password holding an unencoded '/', '?' or '@' is still hidden; an '@' further right
// (in a query value) hides more than needed, which is the safe way to be wrong.
std::string redact_uri(std::string uri, std::size_t authority_start) {
  const auto at = uri.rfind('@');
  if (at != std::string::npos && at >= authority_start) {
    const auto colon = uri.find(':', authority_start);
    if (colon < at) uri.replace(colon + 1, at - colon - 1, redacted);
  }
  const auto query = uri.find('?', authority_start);
  if (query == std::string::npos) return uri;
  std::string out = uri.substr(0, query + 1);
  const auto params = split(std::string_view(uri).substr(query + 1), '&');
  for (std::size_t i = 0; i < params.size(); ++i) {
    if (i != 0) out += '&';
    const auto eq = params[i].find('=');
    if (eq != npos && iequals(params[i].substr(0, eq), "password")) {
      out += params[i].substr(0, eq + 1);
      out += redacted;
    } else {
      out += params[i];
    }
  }
  return out;
}

// libpq keyword/value form: `key = value` pairs separated by whitespace; a value is either
// single-quoted (backslash escapes ' and \) or runs to the next whitespace (backslash escapes
// too). Scanning never fails: malformed text is copied as it is, except that whatever follows a
// "password" keyword is hidden even when the '=' is missing.
std::string redact_keywords(std::string_view text) {
  std::string out;
  std::size_t i = 0;
  const auto copy_spaces = [&] {
    while (i < text.size() && is_space(text[i])) out += text[i++];
  };
  while (i < text.size()) {
    copy_spaces();
    if (i >= text.size()) break;
    const std::size_t keyword_start = i;
    while (i < text.size() && !is_space(text[i]) && text[i] != '=') ++i;
    const std::string_view keyword = text.substr(keyword_start, i - keyword_start);
    const bool is_password = iequals(keyword, "password");
    out += keyword;
    copy_spaces();
    if (i < text.size() && text[i] == '=') {
      out += text[i++];
      copy_spaces();
    } else if (!is_password) {
      continue;
    }
    const std::size_t value_start = i;
    if (i < text.size() && text[i] == '\'') {
      for (++i; i < text.size(); ++i) {
        if (text[i] == '\\') {
          ++i;
        } else if (text[i] == '\'') {
          ++i;
          break;
        }
      }
    } else {
      for (; i < text.size() && !is_space(text[i]); ++i) {
        if (text[i] == '\\') ++i;
      }
    }
    i = std::min(i, text.size());
    if (is_password) {
      out += redacted;
    } else {
      out += text.substr(value_start, i - value_start);
    }
  }
  return out;
}

}  // namespace

std::string check_host_port(std::string_view address) {
  if (address.empty()) return std::string(host_port_example) + ", got an empty string";
  std::string_view host;
  std::string_view port;
  if (address.front() == '[') {
    const auto close = address.find(']');
    if (close == npos || close + 1 >= address.size() || address[close + 1] != ':') {
      return "missing port after the bracketed IPv6 address; " + std::string(host_port_example);
    }
    host = address.substr(1, close - 1);
    port = address.substr(close + 2);
    if (host.empty()) return "missing host; " + std::string(host_port_example);
    for (char c : host) {
      // hex digits, ':' and '.' (IPv4-mapped); after '%' a zone such as eth0
      if (!is_hex(c) && c != ':' && c != '.' && c != '%' && !is_host_name_char(c)) {
        return in_quotes(host) + " is not an IPv6 address";
      }
    }
  } else {
    const auto colon = address.rfind(':');
    if (colon == npos) return "missing port; " + std::string(host_port_example);
    host = address.substr(0, colon);
    port = address.substr(colon + 1);
    if (host.find(':') != npos) {
      return "an IPv6 address must be in brackets, e.g. \"[::1]:2379\"";
    }
    if (host.empty()) return "missing host; " + std::string(host_port_example);
    for (char c : host) {
      if (!is_host_name_char(c)) return in_quotes(host) + " is not a host name or IP address";
    }
  }
  bool port_ok = !port.empty() && port.size() <= 5;
  int number = 0;
  for (char c : port) {
    if (!is_digit(c)) port_ok = false;
    if (port_ok) number = number * 10 + (c - '0');
  }
  if (!port_ok || number < 1 || number > 65535) {
    return "port must be a number from 1 to 65535, got " + in_quotes(port);
  }
  return {};
}

std::string apply_etcd_dsn(const std::string& dsn, EtcdConfig& into) {
  constexpr std::string_view scheme = "etcd://";
  constexpr std::string_view form =
      "etcd://[user[:password]@]host:port[,host:port]/[prefix]"
      "[?tls=enabled&dial_timeout=5s&request_timeout=10s]";
  std::string_view rest = dsn;
  if (!rest.starts_with(scheme)) return "must have the form " + std::string(form);
  rest.remove_prefix(scheme.size());
  EtcdConfig result = into;

  // Everything up to the last '@' is user information: nothing in the rest of the DSN may hold an
  // '@', so the password is never mistaken for a host, a prefix or a parameter (and so never
  // echoed in an error message below).
  if (const auto at = rest.rfind('@'); at != npos) {
    const std::string_view userinfo = rest.substr(0, at);
    rest.remove_prefix(at + 1);
    const auto colon = userinfo.find(':');
    const auto user = percent_decode(userinfo.substr(0, colon));
    if (!user) return "bad percent-escape in the user name";
    if (user->empty()) return "the user name before '@' is empty";
    std::string password;
    if (colon != npos) {
      auto decoded = percent_decode(userinfo.substr(colon + 1));
      if (!decoded) return "bad percent-escape in the password";
      password = std::move(*decoded);
    }
    result.username = *user;
    result.password = std::move(password);
  }
  if (rest.find('#') != npos) return "'#' is not allowed (write %23 in a prefix)";

  const auto authority_end = rest.find_first_of("/?");
  const std::string_view authority = rest.substr(0, authority_end);
  rest = authority_end == npos ? std::string_view{} : rest.substr(authority_end);
  if (authority.empty())
    return "no host:port after etcd://; must have the form " + std::string(form);
  result.endpoints.clear();
  for (const std::string_view endpoint : split(authority, ',')) {
    if (auto why = check_host_port(endpoint); !why.empty()) {
      return "endpoint " + in_quotes(endpoint) + ": " + why;
    }
    result.endpoints.emplace_back(endpoint);
  }

  if (rest.starts_with('/')) {
    const auto query = rest.find('?');
    const auto prefix = percent_decode(rest.substr(0, query));
    if (!prefix) return "bad percent-escape in the prefix";
    result.prefix = *prefix;
    rest = query == npos ? std::string_view{} : rest.substr(query);
  }

  if (rest.starts_with('?')) {
    rest.remove_prefix(1);
    for (const std::string_view param : split(rest, '&')) {
      if (param.empty()) continue;
      const auto eq = param.find('=');
      const std::string_view name = param.substr(0, eq);
      if (eq == npos) return "query parameter " + in_quotes(name) + " has no value";
      const auto value = percent_decode(param.substr(eq + 1));
      if (!value) return "bad percent-escape in query parameter " + in_quotes(name);
      if (name == "tls") {
        if (*value == "enabled" || *value == "true") {
          result.tls = true;
        } else if (*value == "disabled" || *value == "false") {
          result.tls = false;
        } else {
          return "tls must be enabled or disabled, got " + in_quotes(*value);
        }
      } else if (name == "dial_timeout" || name == "request_timeout") {
        const auto duration = parse_duration(*value);
        if (!duration || duration->count() <= 0) {
          return std::string(name) + ": " + in_quotes(*value) + " is not a positive duration; write " +
                 std::string(duration_form);
        }
        (name == "dial_timeout" ? result.dial_timeout : result.request_timeout) = *duration;
      } else {
        return "unknown query parameter " + in_quotes(name) +
               " (known: tls, dial_timeout, request_timeout)";
      }
    }
  }

  into = std::move(result);
  return {};
}

std::string redact_etcd_dsn(const std::string& dsn) {
  // A scheme counts only when it is a plain word at the very start; otherwise a "://" inside a
  // password would move the start past the password's ':' and leave it visible.
  std::size_t start = 0;
  if (const auto scheme_end = dsn.find("://"); scheme_end != std::string::npos && scheme_end > 0) {
    bool plain = true;
    for (std::size_t i = 0; i < scheme_end; ++i) {
      const char c = dsn[i];
      plain = plain && (is_alpha(c) || is_digit(c) || c == '+' || c == '-' || c == '.');
    }
    if (plain) start = scheme_end + 3;
  }
  const auto at = dsn.rfind('@');
  if (at == std::string::npos || at < start) return dsn;
  const auto colon = dsn.find(':', start);
  if (colon == std::string::npos || colon > at) return dsn;  // a user without a password
  return dsn.substr(0, colon + 1) + std::string(redacted) + dsn.substr(at);
}

std::string redact_conninfo(const std::string& conninfo) {
  std::size_t lead = 0;
  while (lead < conninfo.size() && is_space(conninfo[lead])) ++lead;
  const std::string_view body = std::string_view(conninfo).substr(lead);
  for (const std::string_view scheme :
       {std::string_view("postgresql://"), std::string_view("postgres://")}) {
    if (body.starts_with(scheme)) return redact_uri(conninfo, lead + scheme.size());
  }
  return redact_keywords(conninfo);
}

}  // namespace etcd_sync
