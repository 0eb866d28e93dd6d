#pragma once
// The service configuration: the TOML keys of README "Configuration", merged with environment
// variables and command-line flags. Precedence: flag > environment > file > default.

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace etcd_sync {

/// Which way changes flow. `[sync] direction`.
enum class Direction { bidirectional, etcd_to_postgres, postgres_to_etcd };

/// Who wins when an etcd_wal row was based on a stale revision. `[sync] conflict_resolution`.
enum class ConflictResolution { etcd_wins, postgres_wins };

enum class LogFormat { json, text };

/// Log levels as the configuration spells them: trace|debug|info|warn|error.
enum class LogLevel { trace, debug, info, warn, error };

struct TlsConfig {
  std::string ca_file;    ///< PEM bundle that signs the server's certificate; empty = system roots
  std::string cert_file;  ///< client certificate (PEM) for mutual TLS; empty = none
  std::string key_file;   ///< client private key (PEM); required when cert_file is set
  std::string server_name;  ///< overrides the name checked in the server certificate
  bool operator==(const TlsConfig&) const = default;
};

struct PostgresConfig {
  /// libpq conninfo ("host=... dbname=...") or URI ("postgresql://..."). Built from the quickstart
  /// keys (host, port, database, username, password, ssl_mode) when `dsn` is absent. May be empty:
  /// libpq then uses PG* environment variables and ~/.pgpass.
  std::string conninfo;
  std::string schema = "public";  ///< where etcd, etcd_wal and our own tables live
  /// The deadline of every round trip to PostgreSQL (query, pipeline, COPY step, heartbeat);
  /// libpq's TCP keepalives and tcp_user_timeout are derived from it (keepalive_settings()).
  std::chrono::milliseconds request_timeout{10000};
  bool operator==(const PostgresConfig&) const = default;
};

struct EtcdConfig {
  std::vector<std::string> endpoints{"127.0.0.1:2379"};  ///< host:port each
  std::string prefix = "/";  ///< only keys under this prefix sync; "/" or "" = whole keyspace
  std::chrono::milliseconds dial_timeout{5000};
  std::chrono::milliseconds request_timeout{10000};
  std::string username;  ///< etcd auth user; empty = auth off
  std::string password;
  bool tls = false;  ///< true when [etcd.tls] is present or the DSN says tls=enabled
  TlsConfig tls_files;
  bool operator==(const EtcdConfig&) const = default;
};

struct RetryConfig {
  int max_attempts = 3;  ///< attempts per etcd_wal row before it becomes `failed` (>= 1)
  std::chrono::milliseconds initial_backoff{1000};
  std::chrono::milliseconds max_backoff{30000};
};

struct SyncConfig {
  Direction direction = Direction::bidirectional;
  ConflictResolution conflict_resolution = ConflictResolution::etcd_wins;
  int batch_size = 100;  ///< watch events per transaction (a backlog is copied in larger runs); etcd_wal rows per outbox claim (>= 1)
  std::chrono::milliseconds sync_interval{5000};  ///< safety sweep of etcd_wal
  RetryConfig retry;
};

struct LoggingConfig {
  LogLevel level = LogLevel::info;
  LogFormat format = LogFormat::json;
};

struct HaConfig {
  /// etcd keys of the election and of the outbox's barrier and receipts: never mirrored, never
  /// written from etcd_wal. Each group of instances (one schema and prefix) needs its own.
  std::string election_prefix = "/etcd-sync/election/";
  std::chrono::milliseconds ttl{10000};  ///< a leader that cannot renew its lease within ttl is replaced (>= 2s)
  std::string instance_id;               ///< unique per instance; empty: the host name
  bool operator==(const HaConfig&) const = default;
};

struct HistoryConfig {
  /// Rows older than this (by ts) are pruned; 0 = keep everything.
  std::chrono::milliseconds keep_for{0};
  /// At most this many rows per key; 0 = no limit.
  int keep_versions = 0;
  bool operator==(const HistoryConfig&) const = default;
};

struct MetricsConfig {
  std::string listen;  ///< "host:port" for /metrics, /healthz, /readyz; empty = off
};

struct Config {
  PostgresConfig postgresql;
  EtcdConfig etcd;
  SyncConfig sync;
  LoggingConfig logging;
  MetricsConfig metrics;
  HaConfig ha;
  HistoryConfig history;
  std::string source_file;  ///< the TOML file this came from; empty when defaults only
};

/// One problem found while loading configuration. `line` is 0 when the problem has no line
/// (environment, command line, a missing file).
struct ConfigError {
  std::string file;  ///< config file path, or "environment" / "command line"
  int line = 0;
  std::string key;  ///< dotted key, e.g. "sync.retry.max_backoff"
  std::string message;

  /// "FILE:LINE: KEY: MESSAGE" (the parts that are known).
  std::string to_string() const;
};

/// What the command line says; empty optionals leave the lower layers in force.
struct ConfigOverrides {
  std::optional<std::string> config_file;
  std::optional<std::string> postgres_dsn;
  std::optional<std::string> etcd_dsn;
  std::optional<std::string> log_level;
};

/// Something about the configuration an operator should fix that does not stop it from loading.
struct ConfigWarning {
  std::string file;     ///< the configuration file it concerns
  std::string message;  ///< what is wrong and how to fix it; names the file (and a mode as "0644")
};

struct ConfigLoad {
  Config config;
  std::vector<ConfigError> errors;  ///< empty when the configuration is usable
  std::vector<ConfigWarning> warnings;  ///< worth a log line at warn; never stop the load
  bool ok() const { return errors.empty(); }
};

/// Loads defaults, then the TOML file (when `overrides.config_file` is set), then the environment
/// (`env`, normally the process environment: ETCD_SYNC_POSTGRES_DSN, ETCD_SYNC_ETCD_DSN,
/// ETCD_SYNC_LOG_LEVEL, ETCDCTL_ENDPOINTS, ETCDCTL_USER (user[:password]), ETCDCTL_CACERT,
/// ETCDCTL_CERT, ETCDCTL_KEY), then the flags. Collects every error rather than stopping at the first:
/// unknown key, wrong type, bad duration, bad enum value, out-of-range number, unreadable file.
/// A file named *.yaml or *.yml is refused unread with one error that points to
/// conf/quickstart.toml (the quickstart's YAML keys in TOML). A file that loads gets the
/// config_file_warnings() for its mode. Never throws for bad input.
ConfigLoad load_config(const ConfigOverrides& overrides, const std::map<std::string, std::string>& env);

/// The process environment as a map, for load_config.
std::map<std::string, std::string> process_environment();

/// Parses a TOML document given as text (for tests and for SIGHUP). `file_name` labels errors.
ConfigLoad load_config_text(const std::string& text, const std::string& file_name);

/// True when `config` carries a password: a PostgreSQL password (the `password` key, or one in
/// `dsn`, keyword or URI form: whatever redact_conninfo() would hide) or `etcd.password`.
bool holds_password(const Config& config);

/// The warnings about a configuration file at `path` with permission bits `mode` (st_mode; only
/// the low 12 bits count) whose own settings, read from it alone, are `from_file`. One rule: a
/// file that holds_password() must not be readable by group or others (mode & 0044); the warning
/// names the file and its mode ("0644") and says `chmod 600`. Empty when nothing is wrong.
std::vector<ConfigWarning> config_file_warnings(const std::string& path, unsigned mode,
                                                const Config& from_file);

/// Returns the conninfo with any password replaced by "********" (both key=value and URI forms), for
/// logs and error messages.
std::string redact_conninfo(const std::string& conninfo);

/// Parses an etcd DSN (README "Configuration"):
/// etcd://[user[:password]@]host:port[,host:port]/[prefix][?tls=enabled&dial_timeout=5s&request_timeout=10s]
/// into `into`, replacing endpoints (and prefix/credentials/timeouts when present). The prefix is
/// the path after the first '/', with a leading '/' kept ("etcd://h:1/app" -> "/app"; "etcd://h:1/"
/// -> "/"). The user information ends at the last '@', so a password may hold any character; '@'
/// in the prefix, and '%' anywhere, must be percent-encoded. Query keys: tls (enabled|disabled),
/// dial_timeout, request_timeout (durations). Returns an error message (never containing the
/// password), or empty on success; `into` is untouched on error.
std::string apply_etcd_dsn(const std::string& dsn, EtcdConfig& into);

/// Returns the etcd DSN with the password in `user:password@` replaced by "********", for logs and
/// error messages. Malformed input is redacted too (everything between the first ':' after the
/// scheme and the last '@'), erring towards hiding more.
std::string redact_etcd_dsn(const std::string& dsn);

/// Checks an address of the form "host:port" (host a name, IPv4 or bracketed IPv6; port 1..65535).
/// Returns why it is not one, or empty when it is.
std::string check_host_port(std::string_view address);

/// The configuration's spellings ("bidirectional", "etcd_wins", "info", "json"). Each parse_* takes
/// exactly those spellings and returns nullopt for anything else.
std::string to_string(Direction d);
std::string to_string(ConflictResolution c);
std::string to_string(LogLevel l);
std::string to_string(LogFormat f);
std::optional<LogLevel> parse_log_level(const std::string& s);
std::optional<Direction> parse_direction(const std::string& s);
std::optional<ConflictResolution> parse_conflict_resolution(const std::string& s);
std::optional<LogFormat> parse_log_format(const std::string& s);

}  // namespace etcd_sync
