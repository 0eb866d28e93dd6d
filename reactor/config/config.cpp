// Loading the configuration (README "Configuration"): defaults, then the TOML file, then the
// environment, then the command-line flags. Every layer records its problems as ConfigErrors and
// carries on, so one run of `config validate` shows them all. No message echoes a password or a
// whole DSN.

#include "reactor/config/config.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cctype>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "reactor/config/durations.hpp"
#include "reactor/config/toml_compat.hpp"

extern char** environ;

namespace etcd_sync {
namespace {

using std::chrono::milliseconds;
using Errors = std::vector<ConfigError>;

// --- names of enum values ------------------------------------------------------------------------

template <class E>
struct Choice {
  std::string_view name;
  E value;
};

constexpr Choice<Direction> direction_choices[] = {
    {"bidirectional", Direction::bidirectional},
    {"etcd_to_postgres", Direction::etcd_to_postgres},
    {"postgres_to_etcd", Direction::postgres_to_etcd},
};
constexpr Choice<ConflictResolution> conflict_choices[] = {
    {"etcd_wins", ConflictResolution::etcd_wins},
    {"postgres_wins", ConflictResolution::postgres_wins},
};
constexpr Choice<LogLevel> level_choices[] = {
    {"trace", LogLevel::trace}, {"debug", LogLevel::debug}, {"info", LogLevel::info},
    {"warn", LogLevel::warn},   {"error", LogLevel::error},
};
constexpr Choice<LogFormat> format_choices[] = {{"json", LogFormat::json},
                                                {"text", LogFormat::text}};
// libpq's sslmode values; the quickstart's ssl_mode key passes one of them through.
constexpr Choice<std::string_view> ssl_mode_choices[] = {
    {"disable", "disable"}, {"allow", "allow"},         {"prefer", "prefer"},
    {"require", "require"}, {"verify-ca", "verify-ca"}, {"verify-full", "verify-full"},
};

template <class E, std::size_t N>
std::optional<E> parse_choice(const Choice<E> (&choices)[N], std::string_view text) {
  for (const auto& choice : choices) {
    if (choice.name == text) return choice.value;
  }
  return std::nullopt;
}

template <class E, std::size_t N>
std::string name_of(const Choice<E> (&choices)[N], E value) {
  for (const auto& choice : choices) {
    if (choice.value == value) return std::string(choice.name);
  }
  return "unknown";
}

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "" : ", ") + item;
  return out;
}

template <class E, std::size_t N>
std::string not_one_of(std::string_view got, const Choice<E> (&choices)[N]) {
  std::vector<std::string> names;
  for (const auto& choice : choices) names.emplace_back(choice.name);
  return "\"" + std::string(got) + "\" is not one of: " + join(names);
}

// --- the file layer ------------------------------------------------------------------------------

using toml_compat::line_of;
using toml_compat::text_of;

std::string type_name(const toml::value& v) {
  switch (v.type()) {
    case toml::value_t::boolean:
      return "a boolean";
    case toml::value_t::integer:
      return "an integer";
    case toml::value_t::floating:
      return "a float";
    case toml::value_t::string:
      return "a string";
    case toml::value_t::array:
      return "an array";
    case toml::value_t::table:
      return "a table";
    case toml::value_t::offset_datetime:
    case toml::value_t::local_datetime:
    case toml::value_t::local_date:
    case toml::value_t::local_time:
      return "a date or time";
    default:
      return "no value";
  }
}

std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

/// One TOML table of the file: hands out its keys by name, remembers every name asked for, and
/// finally reports every other key as unknown. A read_* leaves `out` untouched when the key is
/// absent, and records an error (still leaving `out` untouched) when the value is unusable; it
/// returns true only when it stored a value.
class Table {
 public:
  Table(const toml::value& table, std::string path, const std::string& file, Errors& errors)
      : table_(&table), path_(std::move(path)), file_(&file), errors_(&errors) {}

  /// The value under `key`, or nullptr. Asking makes `key` a known key of this table.
  const toml::value* find(std::string_view key) {
    if (std::find(known_.begin(), known_.end(), key) == known_.end()) known_.emplace_back(key);
    const auto& entries = table_->as_table();
    const auto it = entries.find(std::string(key));
    return it == entries.end() ? nullptr : &it->second;
  }

  std::string dotted(std::string_view key) const {
    return path_.empty() ? std::string(key) : path_ + "." + std::string(key);
  }

  void error(const toml::value& at, std::string_view key, std::string message) {
    errors_->push_back({*file_, line_of(at), dotted(key), std::move(message)});
  }

  bool read_string(std::string_view key, std::string& out) {
    const toml::value* v = find(key);
    if (v == nullptr) return false;
    if (!v->is_string()) {
      error(*v, key, "expected a string, got " + type_name(*v));
      return false;
    }
    out = text_of(*v);
    return true;
  }

  bool read_int(std::string_view key, int& out, std::int64_t min, std::int64_t max) {
    const toml::value* v = find(key);
    if (v == nullptr) return false;
    if (!v->is_integer()) {
      error(*v, key, "expected an integer, got " + type_name(*v));
      return false;
    }
    const std::int64_t n = v->as_integer();
    if (n < min || n > max) {
      const std::string range =
          max == INT_MAX ? "must be at least " + std::to_string(min)
                         : "must be from " + std::to_string(min) + " to " + std::to_string(max);
      error(*v, key, range + ", got " + std::to_string(n));
      return false;
    }
    out = static_cast<int>(n);
    return true;
  }

  bool read_duration(std::string_view key, milliseconds& out, bool allow_zero) {
    const toml::value* v = find(key);
    if (v == nullptr) return false;
    if (!v->is_string()) {
      error(*v, key, "expected a duration string such as \"5s\", got " + type_name(*v));
      return false;
    }
    const std::string& text = text_of(*v);
    const auto d = parse_duration(text);
    if (!d) {
      error(*v, key, "\"" + text + "\" is not a duration; write " + std::string(duration_form));
      return false;
    }
    if (!allow_zero && d->count() == 0) {
      error(*v, key, "must be longer than 0s");
      return false;
    }
    out = *d;
    return true;
  }

  template <class E, std::size_t N>
  bool read_choice(std::string_view key, E& out, const Choice<E> (&choices)[N]) {
    std::string text;
    if (!read_string(key, text)) return false;
    const auto value = parse_choice(choices, text);
    if (!value) {
      error(*find(key), key, not_one_of(text, choices));
      return false;
    }
    out = *value;
    return true;
  }

  /// The sub-table under `key` (e.g. [etcd.tls]), or nullopt when absent or not a table.
  std::optional<Table> sub_table(std::string_view key) {
    const toml::value* v = find(key);
    if (v == nullptr) return std::nullopt;
    if (!v->is_table()) {
      error(*v, key, "expected a table ([" + dotted(key) + "]), got " + type_name(*v));
      return std::nullopt;
    }
    return Table(*v, dotted(key), *file_, *errors_);
  }

  /// Reports every key that no find() asked for, suggesting a near known name when there is one.
  void report_unknown() {
    for (const auto& [key, value] : table_->as_table()) {
      if (std::find(known_.begin(), known_.end(), key) != known_.end()) continue;
      std::string message = "unknown key";
      const auto nearest =
          std::min_element(known_.begin(), known_.end(), [&](const auto& a, const auto& b) {
            return edit_distance(key, a) < edit_distance(key, b);
          });
      if (nearest != known_.end() && edit_distance(key, *nearest) <= 2) {
        message += "; did you mean \"" + *nearest + "\"?";
      } else if (path_.empty()) {
        message += "; the sections are " + join(known_);
      } else {
        message += "; [" + path_ + "] takes " + join(known_);
      }
      error(value, key, std::move(message));
    }
  }

 private:
  const toml::value* table_;
  std::string path_;
  const std::string* file_;
  Errors* errors_;
  std::vector<std::string> known_;
};

// A libpq conninfo value, always single-quoted so that spaces and quotes survive.
std::string conninfo_quote(const std::string& value) {
  std::string out = "'";
  for (char c : value) {
    if (c == '\'' || c == '\\') out += '\\';
    out += c;
  }
  return out + "'";
}

// The schema name is spliced into SQL; a plain lower-case identifier means the same thing quoted
// or unquoted, so no code path can end up in a different schema.
bool is_plain_identifier(const std::string& name) {
  if (name.empty() || name.size() > 63) return false;
  for (std::size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool ok = (c >= 'a' && c <= 'z') || c == '_' || (i > 0 && c >= '0' && c <= '9');
    if (!ok) return false;
  }
  return true;
}

void read_postgresql(Table& t, PostgresConfig& out) {
  std::string dsn;
  const bool has_dsn = t.read_string("dsn", dsn);
  const toml::value* dsn_value = t.find("dsn");

  std::string schema;
  if (t.read_string("schema", schema)) {
    if (is_plain_identifier(schema)) {
      out.schema = schema;
    } else {
      t.error(*t.find("schema"), "schema",
              "\"" + schema +
                  "\" is not a plain lower-case SQL identifier ([a-z_][a-z0-9_]*, at most 63 "
                  "characters)");
    }
  }

  // The quickstart's separate keys, as libpq keyword/value pairs. Empty strings are left out so
  // that libpq falls back to PG* variables and ~/.pgpass for them.
  std::vector<std::pair<std::string, std::string>> parts;
  const toml::value* first_alternative = nullptr;
  std::string first_alternative_key;
  const auto note = [&](std::string_view key) {
    if (const toml::value* v = t.find(key); v != nullptr && first_alternative == nullptr) {
      first_alternative = v;
      first_alternative_key = t.dotted(key);
    }
  };
  const auto add_string = [&](std::string_view key, const char* keyword) {
    note(key);
    std::string value;
    if (t.read_string(key, value) && !value.empty()) parts.emplace_back(keyword, value);
  };
  add_string("host", "host");
  note("port");
  if (int port = 0; t.read_int("port", port, 1, 65535))
    parts.emplace_back("port", std::to_string(port));
  add_string("database", "dbname");
  add_string("username", "user");
  add_string("password", "password");
  note("ssl_mode");
  if (std::string_view mode; t.read_choice("ssl_mode", mode, ssl_mode_choices)) {
    parts.emplace_back("sslmode", std::string(mode));
  }
  t.read_duration("request_timeout", out.request_timeout, false);
  // The quickstart's pool size. Accepted so its settings load unchanged; etcd-sync keeps a fixed,
  // small number of PostgreSQL sessions, so the value is not used.
  int max_connections = 0;
  t.read_int("max_connections", max_connections, 1, INT_MAX);
  t.report_unknown();

  if (dsn_value != nullptr && first_alternative != nullptr) {
    t.error(*dsn_value, "dsn",
            "give either dsn or host/port/database/username/password/ssl_mode, not both (" +
                first_alternative_key + " is on line " +
                std::to_string(line_of(*first_alternative)) + ")");
    return;
  }
  if (has_dsn) {
    out.conninfo = dsn;
  } else if (!parts.empty()) {
    std::string conninfo;
    for (const auto& [keyword, value] : parts) {
      conninfo += (conninfo.empty() ? "" : " ") + keyword + "=" + conninfo_quote(value);
    }
    out.conninfo = conninfo;
  }
}

// Echoes an endpoint the user wrote, hiding a password if one was (wrongly) put in it.
std::string shown_endpoint(const std::string& endpoint) {
  return "\"" + redact_etcd_dsn(endpoint) + "\"";
}

void read_etcd_tls(Table& t, EtcdConfig& out) {
  out.tls = true;
  t.read_string("ca_file", out.tls_files.ca_file);
  const bool has_cert = t.read_string("cert_file", out.tls_files.cert_file);
  const bool has_key = t.read_string("key_file", out.tls_files.key_file);
  t.read_string("server_name", out.tls_files.server_name);
  if (has_cert && !out.tls_files.cert_file.empty() && out.tls_files.key_file.empty()) {
    t.error(*t.find("cert_file"), "key_file", "is required when cert_file is set");
  }
  if (has_key && !out.tls_files.key_file.empty() && out.tls_files.cert_file.empty()) {
    t.error(*t.find("key_file"), "cert_file", "is required when key_file is set");
  }
  t.report_unknown();
}

void read_etcd(Table& t, EtcdConfig& out) {
  if (const toml::value* v = t.find("endpoints"); v != nullptr) {
    if (!v->is_array()) {
      t.error(*v, "endpoints", "expected an array of \"host:port\" strings, got " + type_name(*v));
    } else {
      std::vector<std::string> endpoints;
      bool all_good = true;
      for (const toml::value& e : v->as_array()) {
        if (!e.is_string()) {
          t.error(e, "endpoints", "expected \"host:port\" strings, got " + type_name(e));
          all_good = false;
        } else if (auto why = check_host_port(text_of(e)); !why.empty()) {
          t.error(e, "endpoints", shown_endpoint(text_of(e)) + ": " + why);
          all_good = false;
        } else {
          endpoints.push_back(text_of(e));
        }
      }
      if (all_good && endpoints.empty())
        t.error(*v, "endpoints", "must list at least one \"host:port\"");
      if (all_good && !endpoints.empty()) out.endpoints = std::move(endpoints);
    }
  }
  t.read_string("prefix", out.prefix);
  t.read_duration("dial_timeout", out.dial_timeout, false);
  t.read_duration("request_timeout", out.request_timeout, false);
  t.read_string("username", out.username);
  t.read_string("password", out.password);
  if (!out.password.empty() && out.username.empty()) {
    t.error(*t.find("password"), "password", "is set but etcd.username is not");
  }
  if (auto tls = t.sub_table("tls")) read_etcd_tls(*tls, out);
  t.report_unknown();
}

void read_retry(Table& t, RetryConfig& out) {
  t.read_int("max_attempts", out.max_attempts, 1, INT_MAX);
  const bool has_initial = t.read_duration("initial_backoff", out.initial_backoff, true);
  const bool has_max = t.read_duration("max_backoff", out.max_backoff, true);
  if (out.max_backoff < out.initial_backoff) {
    // Blame the key the file gave; the other one is then the default.
    if (has_max) {
      t.error(
          *t.find("max_backoff"), "max_backoff",
          "must not be less than initial_backoff (" + format_duration(out.initial_backoff) + ")");
    } else if (has_initial) {
      t.error(*t.find("initial_backoff"), "initial_backoff",
              "must not be more than max_backoff (" + format_duration(out.max_backoff) +
                  ", the default)");
    }
  }
  t.report_unknown();
}

void read_sync(Table& t, SyncConfig& out) {
  t.read_choice("direction", out.direction, direction_choices);
  t.read_choice("conflict_resolution", out.conflict_resolution, conflict_choices);
  t.read_int("batch_size", out.batch_size, 1, 100000);
  t.read_duration("sync_interval", out.sync_interval, false);
  if (auto retry = t.sub_table("retry")) read_retry(*retry, out.retry);
  t.report_unknown();
}

void read_logging(Table& t, LoggingConfig& out) {
  t.read_choice("level", out.level, level_choices);
  t.read_choice("format", out.format, format_choices);
  // The quickstart's `output: stdout`. Logs always go to stdout (the service manager collects
  // them), so any other value would silently not happen: refuse it instead.
  if (std::string output; t.read_string("output", output) && output != "stdout") {
    t.error(*t.find("output"), "output",
            "\"" + output + "\" is not supported: logs always go to stdout");
  }
  t.report_unknown();
}

void read_metrics(Table& t, MetricsConfig& out) {
  std::string listen;
  if (t.read_string("listen", listen)) {
    if (auto why = listen.empty() ? std::string() : check_host_port(listen); !why.empty()) {
      t.error(*t.find("listen"), "listen",
              "\"" + listen + "\": " + why + " (or \"\" for no metrics)");
    } else {
      out.listen = listen;
    }
  }
  t.report_unknown();
}

void read_ha(Table& t, HaConfig& out) {
  std::string prefix;
  if (t.read_string("election_prefix", prefix)) {
    if (prefix.empty()) {
      t.error(*t.find("election_prefix"), "election_prefix", "must not be empty (the default is \"/etcd-sync/election/\")");
    } else {
      out.election_prefix = prefix;
    }
  }
  std::chrono::milliseconds ttl{0};
  if (t.read_duration("ttl", ttl, false)) {
    if (ttl < std::chrono::seconds(2)) {
      t.error(*t.find("ttl"), "ttl", "must be at least 2s (etcd grants leases in whole seconds), got " + format_duration(ttl));
    } else {
      out.ttl = ttl;
    }
  }
  t.read_string("instance_id", out.instance_id);
  t.report_unknown();
}

void read_history(Table& t, HistoryConfig& out) {
  t.read_duration("keep_for", out.keep_for, true);
  t.read_int("keep_versions", out.keep_versions, 0, INT_MAX);
  t.report_unknown();
}

void read_document(const toml::value& doc, const std::string& file, Config& config,
                   Errors& errors) {
  Table root(doc, "", file, errors);
  if (auto t = root.sub_table("postgresql")) read_postgresql(*t, config.postgresql);
  if (auto t = root.sub_table("etcd")) read_etcd(*t, config.etcd);
  if (auto t = root.sub_table("sync")) read_sync(*t, config.sync);
  if (auto t = root.sub_table("logging")) read_logging(*t, config.logging);
  if (auto t = root.sub_table("metrics")) read_metrics(*t, config.metrics);
  if (auto t = root.sub_table("ha")) read_ha(*t, config.ha);
  if (auto t = root.sub_table("history")) read_history(*t, config.history);
  root.report_unknown();
}

// Reads a whole file; returns why not, or empty.
std::string read_whole_file(const std::string& path, std::string& text) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) return "is a directory, not a configuration file";
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::string("cannot open: ") + std::strerror(errno);
  std::ostringstream contents;
  contents << in.rdbuf();
  if (in.bad()) return std::string("cannot read: ") + std::strerror(errno);
  text = std::move(contents).str();
  return {};
}

// The quickstart guide's config.yaml holds the same sections and keys as our TOML; say where the TOML
// spelling of it is rather than failing on YAML syntax.
bool has_yaml_name(std::string_view path) {
  std::string lower(path.substr(path.size() > 5 ? path.size() - 5 : 0));
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return lower.ends_with(".yaml") || lower.ends_with(".yml");
}

constexpr std::string_view yaml_refusal =
    "YAML is not supported; the same sections and keys in TOML: conf/quickstart.toml "
    "(packaged as /usr/share/doc/etcd-sync/examples/quickstart.toml)";

// --- the environment and flag layers -------------------------------------------------------------

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// etcdctl's ETCDCTL_ENDPOINTS: "h:p,h:p", each optionally with http:// or https:// (which turns
// TLS on). One scheme for all: a gRPC channel is either TLS or not.
void apply_etcdctl_endpoints(const std::string& value, EtcdConfig& etcd, Errors& errors) {
  const auto fail = [&](std::string message) {
    errors.push_back({"environment", 0, "ETCDCTL_ENDPOINTS", std::move(message)});
  };
  std::vector<std::string> endpoints;
  bool saw_http = false;
  bool saw_https = false;
  bool all_good = true;
  std::string_view rest = value;
  for (;;) {
    const auto comma = rest.find(',');
    std::string_view endpoint = trim(rest.substr(0, comma));
    rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(comma + 1);
    const std::string original(endpoint);
    if (endpoint.starts_with("https://")) {
      saw_https = true;
      endpoint.remove_prefix(8);
    } else if (endpoint.starts_with("http://")) {
      saw_http = true;
      endpoint.remove_prefix(7);
    } else if (endpoint.find("://") != std::string_view::npos) {
      fail(shown_endpoint(original) + ": only http:// and https:// are supported");
      all_good = false;
      endpoint = {};
    }
    if (endpoint.ends_with('/')) endpoint.remove_suffix(1);
    if (!endpoint.empty()) {
      if (auto why = check_host_port(endpoint); !why.empty()) {
        fail(shown_endpoint(original) + ": " + why);
        all_good = false;
      } else {
        endpoints.emplace_back(endpoint);
      }
    }
    if (comma == std::string_view::npos) break;
  }
  if (saw_http && saw_https) {
    fail("mixes http:// and https:// endpoints; use one for all");
    all_good = false;
  }
  if (all_good && endpoints.empty()) {
    fail("lists no endpoint; expected host:port[,host:port]");
    all_good = false;
  }
  if (!all_good) return;
  etcd.endpoints = std::move(endpoints);
  if (saw_https) etcd.tls = true;
}

void apply_environment(const std::map<std::string, std::string>& env, Config& config,
                       Errors& errors) {
  // An empty variable counts as unset, as in most shells' `VAR= command` idiom.
  const auto get = [&](const char* name) -> const std::string* {
    const auto it = env.find(name);
    return it == env.end() || it->second.empty() ? nullptr : &it->second;
  };
  const auto fail = [&](const char* name, std::string message) {
    errors.push_back({"environment", 0, name, std::move(message)});
  };
  EtcdConfig& etcd = config.etcd;

  if (const auto* v = get("ETCD_SYNC_POSTGRES_DSN")) config.postgresql.conninfo = *v;

  // etcdctl's variables first, then ETCD_SYNC_ETCD_DSN, the more specific of the two.
  if (const auto* v = get("ETCDCTL_ENDPOINTS")) apply_etcdctl_endpoints(*v, etcd, errors);
  if (const auto* v = get("ETCDCTL_USER")) {
    // "user" alone means a user without a password: etcdctl would prompt, a daemon cannot.
    const auto colon = v->find(':');
    if (colon == 0) {
      fail("ETCDCTL_USER", "the user name is empty; expected user or user:password");
    } else {
      etcd.username = v->substr(0, colon);
      etcd.password = colon == std::string::npos ? std::string() : v->substr(colon + 1);
    }
  }
  if (const auto* v = get("ETCDCTL_CACERT")) {
    etcd.tls_files.ca_file = *v;
    etcd.tls = true;
  }
  if (const auto* v = get("ETCDCTL_CERT")) {
    etcd.tls_files.cert_file = *v;
    etcd.tls = true;
    if (etcd.tls_files.key_file.empty() && get("ETCDCTL_KEY") == nullptr) {
      fail("ETCDCTL_KEY", "is required when ETCDCTL_CERT is set");
    }
  }
  if (const auto* v = get("ETCDCTL_KEY")) {
    etcd.tls_files.key_file = *v;
    etcd.tls = true;
    if (etcd.tls_files.cert_file.empty())
      fail("ETCDCTL_CERT", "is required when ETCDCTL_KEY is set");
  }
  if (const auto* v = get("ETCD_SYNC_ETCD_DSN")) {
    if (auto why = apply_etcd_dsn(*v, etcd); !why.empty()) fail("ETCD_SYNC_ETCD_DSN", why);
  }
  if (const auto* v = get("ETCD_SYNC_LOG_LEVEL")) {
    if (auto level = parse_log_level(*v)) {
      config.logging.level = *level;
    } else {
      fail("ETCD_SYNC_LOG_LEVEL", not_one_of(*v, level_choices));
    }
  }
}

void apply_overrides(const ConfigOverrides& flags, Config& config, Errors& errors) {
  const auto fail = [&](const char* flag, std::string message) {
    errors.push_back({"command line", 0, flag, std::move(message)});
  };
  // Given on the command line, even an empty value counts: --postgres-dsn "" means "PG* only".
  if (flags.postgres_dsn) config.postgresql.conninfo = *flags.postgres_dsn;
  if (flags.etcd_dsn) {
    if (auto why = apply_etcd_dsn(*flags.etcd_dsn, config.etcd); !why.empty())
      fail("--etcd-dsn", why);
  }
  if (flags.log_level) {
    if (auto level = parse_log_level(*flags.log_level)) {
      config.logging.level = *level;
    } else {
      fail("--log-level", not_one_of(*flags.log_level, level_choices));
    }
  }
}

}  // namespace

std::string ConfigError::to_string() const {
  std::string out = file;
  if (line > 0) out += ":" + std::to_string(line);
  if (!key.empty()) out += (out.empty() ? "" : ": ") + key;
  out += (out.empty() ? "" : ": ") + message;
  return out;
}

ConfigLoad load_config_text(const std::string& text, const std::string& file_name) {
  ConfigLoad load;
  load.config.source_file = file_name;
  try {
    auto parsed = toml_compat::parse(text, file_name);
    if (const auto* syntax = std::get_if<toml_compat::SyntaxError>(&parsed)) {
      load.errors.push_back({file_name, syntax->line, "", "TOML syntax error: " + syntax->reason});
    } else {
      read_document(std::get<toml::value>(parsed), file_name, load.config, load.errors);
    }
  } catch (const std::exception& e) {
    // The first line only: a longer message might quote the file, which may hold a password.
    const std::string_view what = e.what();
    load.errors.push_back(
        {file_name, 0, "", "cannot parse: " + std::string(what.substr(0, what.find('\n')))});
  }
  // Tables are hash maps, so problems are found in no particular order; report them as they
  // appear in the file.
  std::stable_sort(load.errors.begin(), load.errors.end(),
                   [](const ConfigError& a, const ConfigError& b) { return a.line < b.line; });
  return load;
}

ConfigLoad load_config(const ConfigOverrides& overrides,
                       const std::map<std::string, std::string>& env) {
  ConfigLoad load;
  if (overrides.config_file) {
    const std::string& path = *overrides.config_file;
    std::string text;
    if (has_yaml_name(path)) {
      load.config.source_file = path;
      load.errors.push_back({path, 0, "", std::string(yaml_refusal)});
    } else if (auto why = read_whole_file(path, text); !why.empty()) {
      load.config.source_file = path;
      load.errors.push_back({path, 0, "", why});
    } else {
      load = load_config_text(text, path);
      // Judged on the file's own settings, before the environment and flags add theirs.
      struct stat file_status {};
      if (::stat(path.c_str(), &file_status) == 0)
        load.warnings = config_file_warnings(path, file_status.st_mode, load.config);
    }
  }
  apply_environment(env, load.config, load.errors);
  apply_overrides(overrides, load.config, load.errors);
  return load;
}

bool holds_password(const Config& config) {
  const std::string& conninfo = config.postgresql.conninfo;
  return redact_conninfo(conninfo) != conninfo || !config.etcd.password.empty();
}

std::vector<ConfigWarning> config_file_warnings(const std::string& path, unsigned mode,
                                                const Config& from_file) {
  std::vector<ConfigWarning> warnings;
  if ((mode & 0044) != 0 && holds_password(from_file)) {
    char octal[8];
    std::snprintf(octal, sizeof octal, "%04o", mode & 07777);
    warnings.push_back({path, path + " holds a password but is readable by group or others (mode " +
                                  octal + "): chmod 600 " + path});
  }
  return warnings;
}

std::map<std::string, std::string> process_environment() {
  std::map<std::string, std::string> env;
  for (char** entry = environ; entry != nullptr && *entry != nullptr; ++entry) {
    const std::string_view text(*entry);
    const auto eq = text.find('=');
    if (eq == std::string_view::npos) continue;
    env.emplace(text.substr(0, eq), text.substr(eq + 1));
  }
  return env;
}

std::string to_string(Direction d) { return name_of(direction_choices, d); }
std::string to_string(ConflictResolution c) { return name_of(conflict_choices, c); }
std::string to_string(LogLevel l) { return name_of(level_choices, l); }
std::string to_string(LogFormat f) { return name_of(format_choices, f); }

std::optional<LogLevel> parse_log_level(const std::string& s) {
  return parse_choice(level_choices, s);
}
std::optional<Direction> parse_direction(const std::string& s) {
  return parse_choice(direction_choices, s);
}
std::optional<ConflictResolution> parse_conflict_resolution(const std::string& s) {
  return parse_choice(conflict_choices, s);
}
std::optional<LogFormat> parse_log_format(const std::string& s) {
  return parse_choice(format_choices, s);
}

}  // namespace etcd_sync
