// Configuration loading (README "Configuration"): the example files, errors that name file, line
// and key, the environment and flag layers, and precedence flag > environment > file > default.

#include "reactor/config/config.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace etcd_sync {
namespace {

using namespace std::chrono_literals;
using Endpoints = std::vector<std::string>;
using Env = std::map<std::string, std::string>;
namespace fs = std::filesystem;

const fs::path conf_dir = fs::path(ETCD_SYNC_SOURCE_DIR) / "conf";

std::string describe(const std::vector<ConfigError>& errors) {
  std::string out;
  for (const auto& e : errors) out += "\n  " + e.to_string();
  return out;
}

ConfigLoad load_text(const std::string& text) { return load_config_text(text, "test.toml"); }

// Loads `text` and expects exactly one error; returns it.
ConfigError only_error(const std::string& text) {
  const ConfigLoad load = load_text(text);
  EXPECT_EQ(load.errors.size(), 1u) << describe(load.errors);
  return load.errors.empty() ? ConfigError{} : load.errors.front();
}

/// A file under the system temp directory, removed when the test ends.
class TempFile {
 public:
  explicit TempFile(const std::string& text) {
    static int counter = 0;
    path_ = fs::temp_directory_path() / ("etcd-sync-config-test-" + std::to_string(::getpid()) +
                                         "-" + std::to_string(++counter) + ".toml");
    std::ofstream(path_) << text;
  }
  ~TempFile() {
    std::error_code ec;
    fs::remove(path_, ec);
  }
  std::string path() const { return path_.string(); }

 private:
  fs::path path_;
};

// --- defaults and the example files --------------------------------------------------------------

TEST(Config, AnEmptyFileGivesTheDefaults) {
  const ConfigLoad load = load_text("");
  ASSERT_TRUE(load.ok()) << describe(load.errors);
  const Config& c = load.config;
  EXPECT_EQ(c.source_file, "test.toml");
  EXPECT_EQ(c.postgresql.conninfo, "");
  EXPECT_EQ(c.postgresql.schema, "public");
  EXPECT_EQ(c.etcd.endpoints, Endpoints{"127.0.0.1:2379"});
  EXPECT_EQ(c.etcd.prefix, "/");
  EXPECT_EQ(c.etcd.dial_timeout, 5000ms);
  EXPECT_EQ(c.etcd.request_timeout, 10000ms);
  EXPECT_FALSE(c.etcd.tls);
  EXPECT_EQ(c.sync.direction, Direction::bidirectional);
  EXPECT_EQ(c.sync.conflict_resolution, ConflictResolution::etcd_wins);
  EXPECT_EQ(c.sync.batch_size, 100);
  EXPECT_EQ(c.sync.sync_interval, 5000ms);
  EXPECT_EQ(c.sync.retry.max_attempts, 3);
  EXPECT_EQ(c.sync.retry.initial_backoff, 1000ms);
  EXPECT_EQ(c.sync.retry.max_backoff, 30000ms);
  EXPECT_EQ(c.logging.level, LogLevel::info);
  EXPECT_EQ(c.logging.format, LogFormat::json);
  EXPECT_EQ(c.metrics.listen, "");
}

TEST(Config, EveryExampleFileLoadsWithoutErrors) {
  int files = 0;
  for (const auto& entry : fs::directory_iterator(conf_dir)) {
    if (entry.path().extension() != ".toml") continue;
    ++files;
    ConfigOverrides overrides;
    overrides.config_file = entry.path().string();
    const ConfigLoad load = load_config(overrides, {});
    EXPECT_TRUE(load.ok()) << entry.path() << describe(load.errors);
    EXPECT_EQ(load.config.source_file, entry.path().string());
  }
  EXPECT_GE(files, 3) << "expected local.toml, quickstart.toml and tls-auth.toml in " << conf_dir;
}

ConfigLoad load_example(const std::string& name) {
  ConfigOverrides overrides;
  overrides.config_file = (conf_dir / name).string();
  ConfigLoad load = load_config(overrides, {});
  EXPECT_TRUE(load.ok()) << name << describe(load.errors);
  return load;
}

TEST(Config, LocalExample) {
  const Config c = load_example("local.toml").config;
  EXPECT_EQ(c.postgresql.conninfo, "host=127.0.0.1 port=5432 dbname=sync_db user=sync_user");
  EXPECT_EQ(c.postgresql.schema, "public");
  EXPECT_EQ(c.etcd.endpoints, Endpoints{"127.0.0.1:2379"});
  EXPECT_EQ(c.etcd.prefix, "/");
  EXPECT_FALSE(c.etcd.tls);
  EXPECT_EQ(c.logging.format, LogFormat::text);
  EXPECT_EQ(c.metrics.listen, "");
}

TEST(Config, QuickstartExampleBuildsAConninfoFromTheSeparateKeys) {
  const Config c = load_example("quickstart.toml").config;
  EXPECT_EQ(
      c.postgresql.conninfo,
      "host='localhost' port='5432' dbname='sync_db' user='sync_user' password='your_password' "
      "sslmode='disable'");
  EXPECT_EQ(c.etcd.endpoints, Endpoints{"localhost:2379"});
  EXPECT_EQ(c.etcd.dial_timeout, 5000ms);
  EXPECT_EQ(c.etcd.request_timeout, 10000ms);
  EXPECT_EQ(c.sync.direction, Direction::bidirectional);
  EXPECT_EQ(c.sync.conflict_resolution, ConflictResolution::etcd_wins);
  EXPECT_EQ(c.sync.retry.max_attempts, 3);
  EXPECT_EQ(c.sync.retry.initial_backoff, 1000ms);
  EXPECT_EQ(c.sync.retry.max_backoff, 30000ms);
  EXPECT_EQ(c.sync.batch_size, 100);
  EXPECT_EQ(c.sync.sync_interval, 5000ms);
  EXPECT_EQ(c.logging.level, LogLevel::info);
  EXPECT_EQ(c.logging.format, LogFormat::text);
}

TEST(Config, TlsAuthExample) {
  const Config c = load_example("tls-auth.toml").config;
  EXPECT_TRUE(c.etcd.tls);
  EXPECT_EQ(c.etcd.endpoints.size(), 3u);
  EXPECT_EQ(c.etcd.username, "etcd_sync");
  EXPECT_EQ(c.etcd.password, "change-me");
  EXPECT_EQ(c.etcd.tls_files.ca_file, "/etc/etcd-sync/tls/ca.pem");
  EXPECT_EQ(c.etcd.tls_files.cert_file, "/etc/etcd-sync/tls/client.pem");
  EXPECT_EQ(c.etcd.tls_files.key_file, "/etc/etcd-sync/tls/client-key.pem");
  EXPECT_EQ(c.etcd.tls_files.server_name, "etcd.example.internal");
  EXPECT_EQ(c.metrics.listen, "127.0.0.1:9464");
  EXPECT_EQ(c.logging.format, LogFormat::json);
  EXPECT_EQ(c.sync.retry.initial_backoff, 500ms);
  EXPECT_EQ(c.sync.retry.max_backoff, 60000ms);
}

TEST(Config, ConninfoQuotesAndEscapesTheSeparateKeys) {
  const ConfigLoad load = load_text(
      "[postgresql]\n"
      "host = \"db host\"\n"
      "username = \"o'brien\"\n"
      "password = 'back\\slash'\n"
      "database = \"\"\n");
  ASSERT_TRUE(load.ok()) << describe(load.errors);
  EXPECT_EQ(load.config.postgresql.conninfo,
            "host='db host' user='o\\'brien' password='back\\\\slash'");
}

// --- errors name file, line and key --------------------------------------------------------------

TEST(ConfigErrors, UnknownKeySuggestsTheNearestKnownOne) {
  const ConfigError e = only_error("[etcd]\nendpoints = [\"h:1\"]\nrequest_timout = \"5s\"\n");
  EXPECT_EQ(e.file, "test.toml");
  EXPECT_EQ(e.line, 3);
  EXPECT_EQ(e.key, "etcd.request_timout");
  EXPECT_EQ(e.to_string(),
            "test.toml:3: etcd.request_timout: unknown key; did you mean \"request_timeout\"?");
}

TEST(ConfigErrors, UnknownKeyWithNothingCloseListsTheKnownKeys) {
  const ConfigError e = only_error("[logging]\nlevel = \"info\"\ncolour = true\n");
  EXPECT_EQ(e.to_string(),
            "test.toml:3: logging.colour: unknown key; [logging] takes level, format, output");
}

TEST(ConfigErrors, UnknownSectionAndTopLevelKey) {
  const ConfigLoad load = load_text("verbose = true\n\n[nonsense]\nx = 1\n");
  ASSERT_EQ(load.errors.size(), 2u) << describe(load.errors);
  EXPECT_EQ(load.errors[0].to_string(),
            "test.toml:1: verbose: unknown key; the sections are postgresql, etcd, sync, logging, "
            "metrics, ha, history");
  EXPECT_EQ(load.errors[1].line, 3);
  EXPECT_EQ(load.errors[1].key, "nonsense");
}

TEST(ConfigErrors, UnknownKeyInANestedTable) {
  const ConfigError e = only_error("[sync]\nbatch_size = 10\n\n[sync.retry]\nmax_attempt = 2\n");
  EXPECT_EQ(e.to_string(),
            "test.toml:5: sync.retry.max_attempt: unknown key; did you mean \"max_attempts\"?");
}

TEST(ConfigErrors, WrongTypeNamesTheExpectedType) {
  EXPECT_EQ(only_error("[sync]\nbatch_size = \"100\"\n").to_string(),
            "test.toml:2: sync.batch_size: expected an integer, got a string");
  EXPECT_EQ(only_error("[etcd]\nprefix = 5\n").to_string(),
            "test.toml:2: etcd.prefix: expected a string, got an integer");
  EXPECT_EQ(only_error("[sync]\nbatch_size = 1.5\n").to_string(),
            "test.toml:2: sync.batch_size: expected an integer, got a float");
  EXPECT_EQ(
      only_error("[etcd]\nendpoints = \"h:1\"\n").to_string(),
      "test.toml:2: etcd.endpoints: expected an array of \"host:port\" strings, got a string");
  EXPECT_EQ(only_error("sync = 5\n").to_string(),
            "test.toml:1: sync: expected a table ([sync]), got an integer");
  EXPECT_EQ(only_error("[etcd]\ntls = true\n").to_string(),
            "test.toml:2: etcd.tls: expected a table ([etcd.tls]), got a boolean");
}

TEST(ConfigErrors, BadDurationSaysTheAcceptedForm) {
  EXPECT_EQ(
      only_error("[sync.retry]\nmax_backoff = \"30\"\n").to_string(),
      "test.toml:2: sync.retry.max_backoff: \"30\" is not a duration; write a number with a unit "
      "(ms, s, m or h), e.g. \"500ms\", \"5s\", \"1.5s\", \"1m30s\"");
  EXPECT_EQ(
      only_error("[etcd]\ndial_timeout = 5\n").to_string(),
      "test.toml:2: etcd.dial_timeout: expected a duration string such as \"5s\", got an integer");
  EXPECT_EQ(only_error("[sync]\nsync_interval = \"0s\"\n").to_string(),
            "test.toml:2: sync.sync_interval: must be longer than 0s");
}

TEST(ConfigErrors, BadEnumValueListsTheAllowedValues) {
  EXPECT_EQ(
      only_error("[sync]\ndirection = \"sideways\"\n").to_string(),
      "test.toml:2: sync.direction: \"sideways\" is not one of: bidirectional, etcd_to_postgres, "
      "postgres_to_etcd");
  EXPECT_EQ(only_error("[sync]\nconflict_resolution = \"newest_wins\"\n").to_string(),
            "test.toml:2: sync.conflict_resolution: \"newest_wins\" is not one of: etcd_wins, "
            "postgres_wins");
  EXPECT_EQ(only_error("[logging]\nlevel = \"loud\"\n").to_string(),
            "test.toml:2: logging.level: \"loud\" is not one of: trace, debug, info, warn, error");
  EXPECT_EQ(only_error("[logging]\nformat = \"xml\"\n").to_string(),
            "test.toml:2: logging.format: \"xml\" is not one of: json, text");
  EXPECT_EQ(
      only_error("[postgresql]\nssl_mode = \"on\"\n").to_string(),
      "test.toml:2: postgresql.ssl_mode: \"on\" is not one of: disable, allow, prefer, require, "
      "verify-ca, verify-full");
}

TEST(ConfigErrors, CertFileWithoutKeyFile) {
  const ConfigError e = only_error("[etcd.tls]\nca_file = \"/ca.pem\"\ncert_file = \"/c.pem\"\n");
  EXPECT_EQ(e.to_string(), "test.toml:3: etcd.tls.key_file: is required when cert_file is set");
  EXPECT_EQ(only_error("[etcd.tls]\nkey_file = \"/k.pem\"\n").to_string(),
            "test.toml:2: etcd.tls.cert_file: is required when key_file is set");
}

TEST(ConfigErrors, TlsSectionTurnsTlsOn) {
  const ConfigLoad load = load_text("[etcd.tls]\n");
  ASSERT_TRUE(load.ok()) << describe(load.errors);
  EXPECT_TRUE(load.config.etcd.tls);
}

TEST(ConfigErrors, OutOfRangeNumbers) {
  EXPECT_EQ(only_error("[sync]\nbatch_size = 0\n").to_string(),
            "test.toml:2: sync.batch_size: must be from 1 to 100000, got 0");
  EXPECT_EQ(only_error("[sync]\nbatch_size = 100001\n").to_string(),
            "test.toml:2: sync.batch_size: must be from 1 to 100000, got 100001");
  EXPECT_EQ(only_error("[sync.retry]\nmax_attempts = 0\n").to_string(),
            "test.toml:2: sync.retry.max_attempts: must be at least 1, got 0");
  EXPECT_EQ(only_error("[sync.retry]\nmax_attempts = 99999999999\n").to_string(),
            "test.toml:2: sync.retry.max_attempts: must be at least 1, got 99999999999");
  EXPECT_EQ(only_error("[postgresql]\nport = 70000\n").to_string(),
            "test.toml:2: postgresql.port: must be from 1 to 65535, got 70000");
}

TEST(ConfigErrors, MaxBackoffBelowInitialBackoff) {
  EXPECT_EQ(
      only_error("[sync.retry]\ninitial_backoff = \"10s\"\nmax_backoff = \"5s\"\n").to_string(),
      "test.toml:3: sync.retry.max_backoff: must not be less than initial_backoff (10s)");
  EXPECT_EQ(only_error("[sync.retry]\ninitial_backoff = \"1m\"\n").to_string(),
            "test.toml:2: sync.retry.initial_backoff: must not be more than max_backoff (30s, the "
            "default)");
  EXPECT_TRUE(load_text("[sync.retry]\ninitial_backoff = \"5s\"\nmax_backoff = \"5s\"\n").ok());
}

TEST(ConfigErrors, BadEndpointsNameTheirOwnLines) {
  const ConfigLoad load = load_text("[etcd]\nendpoints = [\n  \"h:1\",\n  \"nohost\",\n  5,\n]\n");
  ASSERT_EQ(load.errors.size(), 2u) << describe(load.errors);
  EXPECT_EQ(load.errors[0].to_string(),
            "test.toml:4: etcd.endpoints: \"nohost\": missing port; expected host:port, e.g. "
            "\"127.0.0.1:2379\"");
  EXPECT_EQ(load.errors[1].to_string(),
            "test.toml:5: etcd.endpoints: expected \"host:port\" strings, got an integer");
  EXPECT_EQ(load.config.etcd.endpoints, Endpoints{"127.0.0.1:2379"});  // a bad list changes nothing
  EXPECT_EQ(only_error("[etcd]\nendpoints = []\n").to_string(),
            "test.toml:2: etcd.endpoints: must list at least one \"host:port\"");
}

TEST(ConfigErrors, DsnTogetherWithTheSeparateKeys) {
  EXPECT_EQ(only_error("[postgresql]\ndsn = \"host=a\"\n\nhost = \"b\"\n").to_string(),
            "test.toml:2: postgresql.dsn: give either dsn or "
            "host/port/database/username/password/ssl_mode, "
            "not both (postgresql.host is on line 4)");
}

TEST(ConfigErrors, OtherSectionChecks) {
  EXPECT_EQ(only_error("[logging]\noutput = \"/var/log/etcd-sync.log\"\n").to_string(),
            "test.toml:2: logging.output: \"/var/log/etcd-sync.log\" is not supported: logs always "
            "go to stdout");
  EXPECT_EQ(only_error("[metrics]\nlisten = \"9464\"\n").to_string(),
            "test.toml:2: metrics.listen: \"9464\": missing port; expected host:port, e.g. "
            "\"127.0.0.1:2379\" "
            "(or \"\" for no metrics)");
  EXPECT_EQ(
      only_error("[postgresql]\nschema = \"My-Schema\"\n").to_string(),
      "test.toml:2: postgresql.schema: \"My-Schema\" is not a plain lower-case SQL identifier "
      "([a-z_][a-z0-9_]*, at most 63 characters)");
  EXPECT_EQ(only_error("[etcd]\npassword = \"pw\"\n").to_string(),
            "test.toml:2: etcd.password: is set but etcd.username is not");
  EXPECT_EQ(only_error("[postgresql]\nmax_connections = \"10\"\n").to_string(),
            "test.toml:2: postgresql.max_connections: expected an integer, got a string");
}

TEST(ConfigErrors, AllErrorsAreCollectedInFileOrder) {
  const ConfigLoad load = load_text(
      "[etcd]\n"
      "dial_timeout = \"soon\"\n"  // 2
      "bogus = 1\n"                // 3
      "[sync]\n"
      "direction = \"up\"\n"  // 5
      "batch_size = -1\n"     // 6
      "[logging]\n"
      "format = 3\n"  // 8
      "[etcd.tls]\n"
      "cert_file = \"/c.pem\"\n");  // 10
  ASSERT_EQ(load.errors.size(), 6u) << describe(load.errors);
  const std::vector<std::pair<int, std::string>> expected = {
      {2, "etcd.dial_timeout"}, {3, "etcd.bogus"},     {5, "sync.direction"},
      {6, "sync.batch_size"},   {8, "logging.format"}, {10, "etcd.tls.key_file"}};
  for (std::size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ(load.errors[i].file, "test.toml");
    EXPECT_EQ(load.errors[i].line, expected[i].first) << load.errors[i].to_string();
    EXPECT_EQ(load.errors[i].key, expected[i].second) << load.errors[i].to_string();
  }
}

TEST(ConfigErrors, SyntaxErrorNamesFileAndLine) {
  const ConfigError e = only_error("[sync]\nbatch_size = 1\ndirection = \n");
  EXPECT_EQ(e.file, "test.toml");
  EXPECT_EQ(e.line, 3);
  EXPECT_EQ(e.to_string().rfind("test.toml:3: TOML syntax error: ", 0), 0u) << e.to_string();

  const ConfigError twice = only_error("[sync]\nbatch_size = 1\nbatch_size = 2\n");
  EXPECT_EQ(twice.line, 3);
  EXPECT_NE(twice.message.find("already exists"), std::string::npos) << twice.message;
}

TEST(ConfigErrors, SyntaxErrorDoesNotQuoteTheLineItIsOn) {
  const ConfigError e = only_error("[postgresql]\npassword = \"hunter2\n");
  EXPECT_EQ(e.line, 2);
  EXPECT_EQ(e.to_string().find("hunter2"), std::string::npos) << e.to_string();
  const ConfigError bare = only_error("[etcd]\nusername = \"u\"\npassword = hunter2\n");
  EXPECT_EQ(bare.line, 3);
  EXPECT_EQ(bare.to_string().find("hunter2"), std::string::npos) << bare.to_string();
}

TEST(ConfigErrors, MissingFileIsOneErrorNamingTheFile) {
  ConfigOverrides overrides;
  overrides.config_file = "/nonexistent/etcd-sync.toml";
  const ConfigLoad load = load_config(overrides, {});
  ASSERT_EQ(load.errors.size(), 1u) << describe(load.errors);
  EXPECT_EQ(load.errors[0].to_string(),
            "/nonexistent/etcd-sync.toml: cannot open: No such file or directory");

  overrides.config_file = fs::temp_directory_path().string();
  const ConfigLoad dir = load_config(overrides, {});
  ASSERT_EQ(dir.errors.size(), 1u) << describe(dir.errors);
  EXPECT_EQ(dir.errors[0].message, "is a directory, not a configuration file");
}

TEST(ConfigErrors, ErrorsFromARealFileCarryItsPath) {
  const TempFile file("[sync]\n\nbatch_size = 0\n");
  ConfigOverrides overrides;
  overrides.config_file = file.path();
  const ConfigLoad load = load_config(overrides, {});
  ASSERT_EQ(load.errors.size(), 1u) << describe(load.errors);
  EXPECT_EQ(load.errors[0].to_string(),
            file.path() + ":3: sync.batch_size: must be from 1 to 100000, got 0");
}

TEST(ConfigErrors, NoErrorShowsAPassword) {
  const ConfigLoad load = load_text(
      "[postgresql]\n"
      "dsn = \"password=hunter2\"\n"
      "password = \"hunter2\"\n"
      "[etcd]\n"
      "endpoints = [\"root:hunter2@h:1\", \"http://root:hunter2@h:1\"]\n"
      "password = \"hunter2\"\n"
      "passwd = \"hunter2\"\n");
  EXPECT_EQ(load.errors.size(), 5u) << describe(load.errors);
  for (const auto& e : load.errors) {
    EXPECT_EQ(e.to_string().find("hunter2"), std::string::npos) << e.to_string();
  }
}

// --- the environment and the command line --------------------------------------------------------

TEST(ConfigEnvironment, EtcdctlVariables) {
  const ConfigLoad load = load_config({}, {{"ETCDCTL_ENDPOINTS", "https://a:1, https://b:2/"},
                                           {"ETCDCTL_USER", "root:pw:with:colons"},
                                           {"ETCDCTL_CACERT", "/ca.pem"},
                                           {"ETCDCTL_CERT", "/c.pem"},
                                           {"ETCDCTL_KEY", "/k.pem"}});
  ASSERT_TRUE(load.ok()) << describe(load.errors);
  const EtcdConfig& etcd = load.config.etcd;
  EXPECT_EQ(etcd.endpoints, (Endpoints{"a:1", "b:2"}));
  EXPECT_TRUE(etcd.tls);
  EXPECT_EQ(etcd.username, "root");
  EXPECT_EQ(etcd.password, "pw:with:colons");
  EXPECT_EQ(etcd.tls_files.ca_file, "/ca.pem");
  EXPECT_EQ(etcd.tls_files.cert_file, "/c.pem");
  EXPECT_EQ(etcd.tls_files.key_file, "/k.pem");
}

TEST(ConfigEnvironment, PlainEndpointsAndUserWithoutPassword) {
  const ConfigLoad load = load_config({}, {{"ETCDCTL_ENDPOINTS", "http://a:1,b:2"},
                                           {"ETCDCTL_USER", "root"},
                                           {"ETCD_SYNC_LOG_LEVEL", ""}});
  ASSERT_TRUE(load.ok()) << describe(load.errors);
  EXPECT_EQ(load.config.etcd.endpoints, (Endpoints{"a:1", "b:2"}));
  EXPECT_FALSE(load.config.etcd.tls);
  EXPECT_EQ(load.config.etcd.username, "root");
  EXPECT_EQ(load.config.etcd.password, "");
  EXPECT_EQ(load.config.logging.level, LogLevel::info);  // empty counts as unset
}

TEST(ConfigEnvironment, ErrorsUseEnvironmentAndTheVariableName) {
  const ConfigLoad load = load_config({}, {{"ETCD_SYNC_LOG_LEVEL", "loud"},
                                           {"ETCDCTL_ENDPOINTS", "http://a:1,https://b:2"},
                                           {"ETCDCTL_USER", ":hunter2"},
                                           {"ETCDCTL_CERT", "/c.pem"},
                                           {"ETCD_SYNC_ETCD_DSN", "etcd://u:hunter2@h:0/"}});
  std::vector<std::string> shown;
  for (const auto& e : load.errors) {
    EXPECT_EQ(e.file, "environment");
    EXPECT_EQ(e.line, 0);
    EXPECT_EQ(e.to_string().find("hunter2"), std::string::npos) << e.to_string();
    shown.push_back(e.to_string());
  }
  const std::vector<std::string> expected = {
      "environment: ETCDCTL_ENDPOINTS: mixes http:// and https:// endpoints; use one for all",
      "environment: ETCDCTL_USER: the user name is empty; expected user or user:password",
      "environment: ETCDCTL_KEY: is required when ETCDCTL_CERT is set",
      "environment: ETCD_SYNC_ETCD_DSN: endpoint \"h:0\": port must be a number from 1 to 65535, "
      "got \"0\"",
      "environment: ETCD_SYNC_LOG_LEVEL: \"loud\" is not one of: trace, debug, info, warn, error",
  };
  EXPECT_EQ(shown, expected);
}

TEST(ConfigEnvironment, BadEndpointIsShownWithoutItsPassword) {
  const ConfigLoad load = load_config({}, {{"ETCDCTL_ENDPOINTS", "http://root:hunter2@h:1"}});
  ASSERT_EQ(load.errors.size(), 1u) << describe(load.errors);
  EXPECT_EQ(load.errors[0].to_string().find("hunter2"), std::string::npos)
      << load.errors[0].to_string();
  EXPECT_EQ(load.errors[0].key, "ETCDCTL_ENDPOINTS");
  EXPECT_EQ(load.config.etcd.endpoints, Endpoints{"127.0.0.1:2379"});

  const ConfigLoad scheme = load_config({}, {{"ETCDCTL_ENDPOINTS", "unix://sock:1"}});
  ASSERT_EQ(scheme.errors.size(), 1u) << describe(scheme.errors);
  EXPECT_EQ(scheme.errors[0].message, "\"unix://sock:1\": only http:// and https:// are supported");
}

TEST(ConfigEnvironment, EtcdSyncDsnWinsOverEtcdctlVariables) {
  const ConfigLoad load =
      load_config({}, {{"ETCDCTL_ENDPOINTS", "a:1"},
                       {"ETCDCTL_USER", "root:pw"},
                       {"ETCD_SYNC_ETCD_DSN", "etcd://svc:secret@b:2,c:3/app?tls=enabled"}});
  ASSERT_TRUE(load.ok()) << describe(load.errors);
  EXPECT_EQ(load.config.etcd.endpoints, (Endpoints{"b:2", "c:3"}));
  EXPECT_EQ(load.config.etcd.username, "svc");
  EXPECT_EQ(load.config.etcd.password, "secret");
  EXPECT_EQ(load.config.etcd.prefix, "/app");
  EXPECT_TRUE(load.config.etcd.tls);
}

TEST(ConfigCommandLine, ErrorsUseCommandLineAndTheFlag) {
  ConfigOverrides flags;
  flags.etcd_dsn = "etcd://u:hunter2@h/";
  flags.log_level = "verbose";
  const ConfigLoad load = load_config(flags, {});
  ASSERT_EQ(load.errors.size(), 2u) << describe(load.errors);
  EXPECT_EQ(load.errors[0].to_string(),
            "command line: --etcd-dsn: endpoint \"h\": missing port; expected host:port, e.g. "
            "\"127.0.0.1:2379\"");
  EXPECT_EQ(
      load.errors[1].to_string(),
      "command line: --log-level: \"verbose\" is not one of: trace, debug, info, warn, error");
}

TEST(ConfigPrecedence, FlagOverEnvironmentOverFileOverDefault) {
  const TempFile file(
      "[postgresql]\ndsn = \"host=file\"\n"
      "[etcd]\nendpoints = [\"file:1\"]\nprefix = \"/file\"\n"
      "[logging]\nlevel = \"debug\"\n");
  const Env env = {{"ETCD_SYNC_POSTGRES_DSN", "host=env"},
                   {"ETCD_SYNC_ETCD_DSN", "etcd://env:2/env"},
                   {"ETCD_SYNC_LOG_LEVEL", "warn"}};
  ConfigOverrides flags;
  flags.config_file = file.path();
  flags.postgres_dsn = "host=flag";
  flags.etcd_dsn = "etcd://flag:3/flag";
  flags.log_level = "error";

  const ConfigLoad defaults = load_config({}, {});
  ASSERT_TRUE(defaults.ok()) << describe(defaults.errors);
  EXPECT_EQ(defaults.config.postgresql.conninfo, "");
  EXPECT_EQ(defaults.config.etcd.endpoints, Endpoints{"127.0.0.1:2379"});
  EXPECT_EQ(defaults.config.etcd.prefix, "/");
  EXPECT_EQ(defaults.config.logging.level, LogLevel::info);
  EXPECT_EQ(defaults.config.source_file, "");

  ConfigOverrides file_only;
  file_only.config_file = file.path();
  const ConfigLoad from_file = load_config(file_only, {});
  ASSERT_TRUE(from_file.ok()) << describe(from_file.errors);
  EXPECT_EQ(from_file.config.postgresql.conninfo, "host=file");
  EXPECT_EQ(from_file.config.etcd.endpoints, Endpoints{"file:1"});
  EXPECT_EQ(from_file.config.etcd.prefix, "/file");
  EXPECT_EQ(from_file.config.logging.level, LogLevel::debug);

  const ConfigLoad from_env = load_config(file_only, env);
  ASSERT_TRUE(from_env.ok()) << describe(from_env.errors);
  EXPECT_EQ(from_env.config.postgresql.conninfo, "host=env");
  EXPECT_EQ(from_env.config.etcd.endpoints, Endpoints{"env:2"});
  EXPECT_EQ(from_env.config.etcd.prefix, "/env");
  EXPECT_EQ(from_env.config.logging.level, LogLevel::warn);

  const ConfigLoad from_flags = load_config(flags, env);
  ASSERT_TRUE(from_flags.ok()) << describe(from_flags.errors);
  EXPECT_EQ(from_flags.config.postgresql.conninfo, "host=flag");
  EXPECT_EQ(from_flags.config.etcd.endpoints, Endpoints{"flag:3"});
  EXPECT_EQ(from_flags.config.etcd.prefix, "/flag");
  EXPECT_EQ(from_flags.config.logging.level, LogLevel::error);
  EXPECT_EQ(from_flags.config.source_file, file.path());
}

TEST(ConfigPrecedence, LayersOnlyReplaceWhatTheyName) {
  const TempFile file(
      "[etcd]\nendpoints = [\"file:1\"]\nusername = \"fileuser\"\npassword = \"filepw\"\n");
  ConfigOverrides flags;
  flags.config_file = file.path();
  flags.etcd_dsn = "etcd://flag:3";
  const ConfigLoad load = load_config(flags, {{"ETCDCTL_CACERT", "/env-ca.pem"}});
  ASSERT_TRUE(load.ok()) << describe(load.errors);
  EXPECT_EQ(load.config.etcd.endpoints, Endpoints{"flag:3"});
  EXPECT_EQ(load.config.etcd.username, "fileuser");
  EXPECT_EQ(load.config.etcd.password, "filepw");
  EXPECT_EQ(load.config.etcd.prefix, "/");
  EXPECT_EQ(load.config.etcd.tls_files.ca_file, "/env-ca.pem");
  EXPECT_TRUE(load.config.etcd.tls);
}

// --- names ---------------------------------------------------------------------------------------

TEST(ConfigNames, RoundTrip) {
  for (auto d :
       {Direction::bidirectional, Direction::etcd_to_postgres, Direction::postgres_to_etcd}) {
    EXPECT_EQ(parse_direction(to_string(d)), d);
  }
  for (auto c : {ConflictResolution::etcd_wins, ConflictResolution::postgres_wins}) {
    EXPECT_EQ(parse_conflict_resolution(to_string(c)), c);
  }
  for (auto l :
       {LogLevel::trace, LogLevel::debug, LogLevel::info, LogLevel::warn, LogLevel::error}) {
    EXPECT_EQ(parse_log_level(to_string(l)), l);
  }
  EXPECT_EQ(to_string(LogLevel::warn), "warn");
  EXPECT_EQ(to_string(Direction::etcd_to_postgres), "etcd_to_postgres");
  EXPECT_EQ(to_string(LogFormat::text), "text");
  EXPECT_EQ(parse_log_format("json"), LogFormat::json);
  EXPECT_EQ(parse_log_level("WARN"), std::nullopt);
  EXPECT_EQ(parse_log_level("warning"), std::nullopt);
  EXPECT_EQ(parse_direction("both"), std::nullopt);
}

TEST(ConfigError, ToStringLeavesOutUnknownParts) {
  EXPECT_EQ((ConfigError{"f.toml", 7, "sync.batch_size", "bad"}).to_string(),
            "f.toml:7: sync.batch_size: bad");
  EXPECT_EQ((ConfigError{"f.toml", 0, "", "cannot open"}).to_string(), "f.toml: cannot open");
  EXPECT_EQ((ConfigError{"f.toml", 3, "", "syntax"}).to_string(), "f.toml:3: syntax");
  EXPECT_EQ((ConfigError{"environment", 0, "ETCDCTL_USER", "bad"}).to_string(),
            "environment: ETCDCTL_USER: bad");
}

// --- the quickstart guide's YAML, and files that give a password away -----------------------------

TEST(ConfigRefusals, AYamlFileIsRefusedUnreadWithWhereItsTomlSpellingIs) {
  // The guide's own path; the file need not exist for the answer to be the same.
  for (const std::string path : {"/etc/etcd-sync/config.yaml", "conf/x.yml", "X.YAML"}) {
    ConfigOverrides overrides;
    overrides.config_file = path;
    const ConfigLoad load = load_config(overrides, {});
    ASSERT_EQ(load.errors.size(), 1u) << path << describe(load.errors);
    EXPECT_EQ(load.errors[0].file, path);
    EXPECT_EQ(load.errors[0].message.rfind(
                  "YAML is not supported; the same sections and keys in TOML: conf/quickstart.toml", 0),
              0u)
        << load.errors[0].message;
  }
  // The guide's config, as it writes it: refused the same way, not with a TOML syntax error.
  TempFile yaml("postgresql:\n  host: localhost\n  password: your_password\n");
  const fs::path renamed = yaml.path() + ".yaml";
  fs::copy_file(yaml.path(), renamed);
  ConfigOverrides overrides;
  overrides.config_file = renamed.string();
  const ConfigLoad load = load_config(overrides, {});
  fs::remove(renamed);
  ASSERT_EQ(load.errors.size(), 1u) << describe(load.errors);
  EXPECT_NE(load.errors[0].message.find("YAML is not supported"), std::string::npos);
  EXPECT_EQ(load.errors[0].message.find("your_password"), std::string::npos);
}

TEST(ConfigRefusals, HoldsPasswordSeesEveryPlaceAPasswordCanBe) {
  const auto holds = [](const std::string& text) {
    const ConfigLoad load = load_text(text);
    EXPECT_TRUE(load.ok()) << text << describe(load.errors);
    return holds_password(load.config);
  };
  EXPECT_TRUE(holds("[postgresql]\nhost = \"db\"\npassword = \"s3cret\"\n"));
  EXPECT_TRUE(holds("[postgresql]\ndsn = \"host=db password=s3cret\"\n"));
  EXPECT_TRUE(holds("[postgresql]\ndsn = \"postgresql://u:s3cret@db/sync_db\"\n"));
  EXPECT_TRUE(holds("[etcd]\nusername = \"u\"\npassword = \"s3cret\"\n"));
  EXPECT_FALSE(holds("[postgresql]\ndsn = \"host=db user=u\"\n[etcd]\nusername = \"u\"\n"));
  EXPECT_FALSE(holds("[postgresql]\ndsn = \"postgresql://u@db/sync_db\"\n"));
  EXPECT_FALSE(holds(""));
}

TEST(ConfigRefusals, AFileWithAPasswordReadableByGroupOrOthersIsWarnedAbout) {
  const Config secret = load_text("[postgresql]\ndsn = \"host=db password=s3cret\"\n").config;
  const Config plain = load_text("[postgresql]\ndsn = \"host=db\"\n").config;
  const std::string path = "/etc/etcd-sync/config.toml";
  for (const unsigned mode : {0644u, 0640u, 0604u, 0100644u, 0660u}) {
    const auto warnings = config_file_warnings(path, mode, secret);
    ASSERT_EQ(warnings.size(), 1u) << std::oct << mode;
    EXPECT_EQ(warnings[0].file, path);
    char octal[8];
    std::snprintf(octal, sizeof octal, "%04o", mode & 07777);
    EXPECT_EQ(warnings[0].message, path + " holds a password but is readable by group or others (mode " +
                                       octal + "): chmod 600 " + path);
    EXPECT_EQ(warnings[0].message.find("s3cret"), std::string::npos);
  }
  for (const unsigned mode : {0600u, 0400u, 0700u, 0100600u, 0622u}) {
    EXPECT_TRUE(config_file_warnings(path, mode, secret).empty()) << std::oct << mode;
  }
  EXPECT_TRUE(config_file_warnings(path, 0644, plain).empty());
}

TEST(ConfigRefusals, LoadConfigWarnsFromTheFilesOwnModeAndSettings) {
  TempFile file("[postgresql]\nhost = \"db\"\npassword = \"s3cret\"\n");
  ConfigOverrides overrides;
  overrides.config_file = file.path();
  fs::permissions(file.path(), fs::perms(0644));
  ConfigLoad load = load_config(overrides, {});
  ASSERT_TRUE(load.ok()) << describe(load.errors);
  ASSERT_EQ(load.warnings.size(), 1u);
  EXPECT_EQ(load.warnings[0].file, file.path());
  EXPECT_NE(load.warnings[0].message.find("(mode 0644)"), std::string::npos) << load.warnings[0].message;

  fs::permissions(file.path(), fs::perms(0600));
  EXPECT_TRUE(load_config(overrides, {}).warnings.empty());

  // A password from the environment is no fault of a world-readable file.
  TempFile no_secret("[etcd]\nendpoints = [\"127.0.0.1:2379\"]\n");
  fs::permissions(no_secret.path(), fs::perms(0644));
  overrides.config_file = no_secret.path();
  load = load_config(overrides, {{"ETCDCTL_USER", "root:s3cret"}});
  ASSERT_TRUE(load.ok()) << describe(load.errors);
  EXPECT_EQ(load.config.etcd.password, "s3cret");
  EXPECT_TRUE(load.warnings.empty());
}

TEST(ProcessEnvironment, SeesTheProcessEnvironment) {
  ::setenv("ETCD_SYNC_CONFIG_TEST_VAR", "a=b", 1);
  const auto env = process_environment();
  ::unsetenv("ETCD_SYNC_CONFIG_TEST_VAR");
  ASSERT_EQ(env.count("ETCD_SYNC_CONFIG_TEST_VAR"), 1u);
  EXPECT_EQ(env.at("ETCD_SYNC_CONFIG_TEST_VAR"), "a=b");
}

}  // namespace
}  // namespace etcd_sync
