// What an operator relies on, against real servers: status, validate, reload, metrics, logs.

#include "test/support/sync_fixture.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <csignal>
#include <fstream>
#include <regex>
#include <sstream>

namespace etcd_sync::testing {
namespace {

using namespace std::chrono_literals;

/// GET http://127.0.0.1:port/path; returns "STATUS\nBODY", or "" when it cannot connect.
std::string http_get(int port, const std::string& path) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<std::uint16_t>(port));
  inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
  if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    close(fd);
    return "";
  }
  std::string request = "GET " + path + " HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
  if (write(fd, request.data(), request.size()) < 0) {
    close(fd);
    return "";
  }
  std::string response;
  char buffer[4096];
  ssize_t n;
  while ((n = read(fd, buffer, sizeof buffer)) > 0) response.append(buffer, static_cast<std::size_t>(n));
  close(fd);
  auto space = response.find(' ');
  auto body = response.find("\r\n\r\n");
  if (space == std::string::npos || body == std::string::npos) return "";
  return response.substr(space + 1, 3) + "\n" + response.substr(body + 4);
}

class OperationsTest : public SyncSuite {
 protected:
  SyncSettings settings(const std::string& prefix) { return settings_for(prefix); }

  nlohmann::json status_json(const std::filesystem::path& config) {
    auto result = run_binary({"status", "--format", "json", "-c", config.string()});
    EXPECT_EQ(result.exit_code, 0) << result.stderr_text;
    return nlohmann::json::parse(result.stdout_text);
  }

};

TEST_F(OperationsTest, StatusAfterScenarioThreeCountsTheConflictAndReachesZeroLag) {
  auto config = env_->write_config(settings("/config/"));
  ServiceProcess service(env_->dir.path(), "status");
  env_->start_service(service, config);
  auto base = env_->client->put("/config/test/conflict", "etcd-value");
  env_->client->put("/config/test/conflict", "etcd-value-2");
  env_->db().exec_params("INSERT INTO etcd_wal (key, value, revision) VALUES ($1, 'pg-value', $2)",
                         {"/config/test/conflict", std::to_string(base)});
  ASSERT_TRUE(wait_until([&] { return env_->db().scalar("SELECT status FROM etcd_wal") == "conflict"; }, 10s));
  EXPECT_EQ(env_->client->get("/config/test/conflict")->value(), "etcd-value-2");

  nlohmann::json status;
  ASSERT_TRUE(wait_until(
      [&] {
        status = status_json(config);
        return status["synchronization"]["lag_revisions"] == 0;
      },
      15s))
      << status.dump(2);
  EXPECT_GE(status["synchronization"]["conflicts_resolved"].get<int>(), 1);
  EXPECT_EQ(status["synchronization"]["lag_seconds"], 0.0);
  EXPECT_EQ(status["synchronization"]["mirrored_revision"], status["synchronization"]["etcd_revision"]);
  EXPECT_EQ(status["service"]["running"], true);
  EXPECT_EQ(status["service"]["pid"], service.pid());
  EXPECT_EQ(status["wal"]["conflict"], 1);
  EXPECT_EQ(status["wal"]["pending"], 0);

  auto text = run_binary({"status", "-c", config.string()});
  EXPECT_EQ(text.exit_code, 0);
  EXPECT_NE(text.stdout_text.find("service      running"), std::string::npos) << text.stdout_text;
  EXPECT_NE(text.stdout_text.find("conflicts resolved 1"), std::string::npos) << text.stdout_text;

  EXPECT_EQ(service.terminate(5s), 0);
  status = status_json(config);
  EXPECT_EQ(status["service"]["running"], false);
  EXPECT_EQ(status["service"]["state"], "stopped");
  EXPECT_FALSE(status["service"]["stopped_at"].is_null());
  text = run_binary({"status", "-c", config.string()});
  EXPECT_NE(text.stdout_text.find("service      stopped"), std::string::npos) << text.stdout_text;
}

TEST_F(OperationsTest, ValidateReportsATamperedRowAndFixRepairsIt) {
  auto config = env_->write_config(settings("/val/"));
  ServiceProcess service(env_->dir.path(), "validate");
  env_->start_service(service, config);
  env_->client->put("/val/a", "1");
  env_->client->put("/val/b", "2");
  auto last = env_->client->put("/val/c", "3");
  ASSERT_TRUE(env_->wait_mirrored(last, 10s, "/val/"));
  EXPECT_EQ(service.terminate(5s), 0);

  auto clean = run_binary({"validate", "-c", config.string()});
  EXPECT_EQ(clean.exit_code, 0) << clean.stdout_text << clean.stderr_text;
  EXPECT_NE(clean.stdout_text.find("0 difference(s)"), std::string::npos);

  env_->db().exec("UPDATE etcd SET value = 'tampered' WHERE key = '/val/b'");
  env_->db().exec("DELETE FROM etcd WHERE key = '/val/c'");
  env_->db().exec("INSERT INTO etcd (key, value, revision) VALUES ('/val/zombie', 'x', 1)");
  auto dirty = run_binary({"validate", "-c", config.string()});
  EXPECT_EQ(dirty.exit_code, 1);
  EXPECT_NE(dirty.stdout_text.find("different\t\"/val/b\""), std::string::npos) << dirty.stdout_text;
  EXPECT_NE(dirty.stdout_text.find("missing\t\"/val/c\""), std::string::npos) << dirty.stdout_text;
  EXPECT_NE(dirty.stdout_text.find("extra\t\"/val/zombie\""), std::string::npos) << dirty.stdout_text;
  EXPECT_NE(dirty.stdout_text.find("3 difference(s)"), std::string::npos) << dirty.stdout_text;

  auto fixed = run_binary({"validate", "--fix", "-c", config.string()});
  EXPECT_EQ(fixed.exit_code, 0) << fixed.stdout_text << "\nstderr: " << fixed.stderr_text;
  EXPECT_NE(fixed.stdout_text.find("0 difference(s) remain"), std::string::npos) << fixed.stdout_text;
  EXPECT_EQ(env_->db().scalar("SELECT value FROM etcd_get('/val/b')"), "2");
  EXPECT_EQ(env_->db().scalar("SELECT value FROM etcd_get('/val/c')"), "3");
  EXPECT_EQ(env_->db().scalar("SELECT count(*) FROM etcd_get('/val/zombie')"), "0");
  EXPECT_EQ(run_binary({"validate", "-c", config.string()}).exit_code, 0);
}

// validate walks etcd in pages sized by bytes (1,000 keys, then about 8 MiB): differences on later
// pages are found, and nothing is reported twice or skipped at a page boundary.
TEST_F(OperationsTest, ValidateWalksManyPages) {
  auto config = env_->write_config(settings("/valp/"));
  ServiceProcess service(env_->dir.path(), "validate-pages");
  env_->start_service(service, config);
  // 2,500 keys of 10 KiB through the outbox: pages of 1,000, then about 820 keys.
  env_->db().exec("INSERT INTO etcd_wal (key, value) SELECT '/valp/' || lpad(i::text, 5, '0'), repeat('v', 10240) "
                  "FROM generate_series(1, 2500) i");
  // Every row ends (a failed or conflicting row would otherwise show only as a timeout), in success.
  ASSERT_TRUE(wait_until([&] { return env_->db().scalar("SELECT count(*) FROM etcd_wal WHERE status = 'pending'") == "0"; }, 60s))
      << env_->wal_status_counts();
  ASSERT_EQ(env_->wal_status_counts(), "success:2500");
  auto last = std::stoll(*env_->db().scalar("SELECT max(revision) FROM etcd_wal"));
  ASSERT_TRUE(env_->wait_mirrored(last, 20s, "/valp/"));
  EXPECT_EQ(service.terminate(5s), 0);

  env_->db().exec("UPDATE etcd SET value = 'tampered' WHERE key = '/valp/02400'");
  env_->db().exec("DELETE FROM etcd WHERE key = '/valp/01500'");
  auto dirty = run_binary({"validate", "-c", config.string()});
  EXPECT_EQ(dirty.exit_code, 1);
  EXPECT_NE(dirty.stdout_text.find("different\t\"/valp/02400\""), std::string::npos) << dirty.stdout_text;
  EXPECT_NE(dirty.stdout_text.find("missing\t\"/valp/01500\""), std::string::npos) << dirty.stdout_text;
  EXPECT_NE(dirty.stdout_text.find("2 difference(s)"), std::string::npos) << dirty.stdout_text;
}

TEST_F(OperationsTest, SighupChangesLogLevelUnderLoadAndLosesNothing) {
  auto s = settings("/hup/");
  s.log_level = "info";
  auto config = env_->write_config(s);
  auto first = env_->client->revision() + 1;
  ServiceProcess service(env_->dir.path(), "sighup");
  env_->start_service(service, config);

  std::atomic<bool> writing{true};
  std::thread writer([&] {
    EtcdTestClient own(env_->etcd.endpoint());
    for (int i = 0; writing; ++i) own.put("/hup/k" + std::to_string(i % 50), std::to_string(i));
  });
  ASSERT_TRUE(wait_until([&] { return env_->checkpoint("/hup/") > first + 50; }, 10s));
  EXPECT_EQ(service.log_text().find("\"msg\":\"watch events applied\""), std::string::npos);  // debug only

  s.log_level = "debug";
  env_->write_config(s);
  service.mark_log();
  service.signal(SIGHUP);
  EXPECT_TRUE(service.wait_for_log("configuration reloaded", 5s));
  EXPECT_TRUE(service.wait_for_log("\"msg\":\"watch events applied\"", 5s)) << "debug lines after the reload";

  // An invalid file is rejected and the running configuration stays.
  {
    std::ofstream broken(config);
    broken << "[sync]\nbatch_size = \"many\"\n";
  }
  service.mark_log();
  service.signal(SIGHUP);
  EXPECT_TRUE(service.wait_for_log("reload rejected", 5s));
  EXPECT_NE(service.log_since_mark().find("sync.batch_size"), std::string::npos) << service.log_since_mark();
  EXPECT_TRUE(service.running());

  writing = false;
  writer.join();
  auto now = env_->client->revision();
  ASSERT_TRUE(env_->wait_mirrored(now, 15s, "/hup/"));
  auto want = env_->client->history("/hup/", first, now);
  auto got = env_->mirror_rows("/hup/");
  EXPECT_EQ(got.size(), want.size());
  EXPECT_TRUE(got == want);
  EXPECT_EQ(service.terminate(5s), 0);
}

TEST_F(OperationsTest, ReloadWithANewPrefixReconnectsAndMirrorsIt) {
  auto s = settings("/before/");
  auto config = env_->write_config(s);
  ServiceProcess service(env_->dir.path(), "reconnect");
  env_->start_service(service, config);
  s.prefix = "/after/";
  env_->write_config(s);
  service.mark_log();
  service.signal(SIGHUP);
  ASSERT_TRUE(service.wait_for_log("reconnected with the reloaded configuration", 10s)) << service.log_text();
  ASSERT_TRUE(service.wait_for_log("\"to\":\"watching\"", 10s));
  auto revision = env_->client->put("/after/x", "1");
  EXPECT_TRUE(env_->wait_mirrored(revision, 10s, "/after/"));
  EXPECT_EQ(service.terminate(5s), 0);
}

TEST_F(OperationsTest, MetricsHealthAndReadinessOverHttp) {
  int port = free_loopback_port();
  auto config = env_->write_config(settings("/metrics/"));
  {
    std::ofstream out(config, std::ios::app);
    out << "\n[metrics]\nlisten = \"127.0.0.1:" << port << "\"\n";
  }
  ServiceProcess service(env_->dir.path(), "metrics");
  env_->start_service(service, config);
  auto revision = env_->client->put("/metrics/a", "1");
  env_->client->del("/metrics/a");
  ASSERT_TRUE(env_->wait_mirrored(revision + 1, 10s, "/metrics/"));

  EXPECT_EQ(http_get(port, "/healthz"), "200\nok\n");
  EXPECT_TRUE(wait_until([&] { return http_get(port, "/readyz") == "200\nready\n"; }, 5s)) << http_get(port, "/readyz");
  EXPECT_EQ(http_get(port, "/nope").substr(0, 3), "404");

  std::string metrics;
  ASSERT_TRUE(wait_until(
      [&] {
        metrics = http_get(port, "/metrics");
        return metrics.find("etcd_sync_events_applied_total{op=\"delete\"} 1\n") != std::string::npos;
      },
      5s))
      << metrics;
  ASSERT_EQ(metrics.substr(0, 4), "200\n");
  // Prometheus text format 0.0.4: comments, or `name{labels} value`.
  std::regex comment(R"(# (HELP|TYPE) [a-zA-Z_:][a-zA-Z0-9_:]* .+)");
  std::regex sample_line(R"([a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="[^"]*",?)*\})? -?[0-9.e+-]+|[a-zA-Z_:][a-zA-Z0-9_:]*(\{[^}]*\})? (\+Inf|NaN))");
  std::istringstream lines(metrics.substr(4));
  std::string line;
  int samples = 0;
  while (std::getline(lines, line)) {
    if (line.empty()) continue;
    bool ok = std::regex_match(line, comment) || std::regex_match(line, sample_line);
    EXPECT_TRUE(ok) << "not Prometheus text: " << line;
    if (line[0] != '#') ++samples;
  }
  EXPECT_GT(samples, 20);
  for (const char* name : {"etcd_sync_build_info{version=", "etcd_sync_wal_outcomes_total{status=\"conflict\"}",
                           "etcd_sync_conflicts_resolved_total ", "etcd_sync_resyncs_total ", "etcd_sync_lag_revisions ",
                           "etcd_sync_mirror_apply_seconds_bucket{le=\"+Inf\"}", "etcd_sync_connection_up{peer=\"etcd\"} 1",
                           "etcd_sync_connection_up{peer=\"postgresql\"} 1"})
    EXPECT_NE(metrics.find(name), std::string::npos) << name;
  EXPECT_EQ(service.terminate(5s), 0);
}

// The metrics server is not held hostage by idle clients: past its connection cap a new
// connection closes the oldest, and a connection that sends no request is closed after 10 s.
TEST_F(OperationsTest, IdleMetricsConnectionsAreCappedAndTimedOut) {
  int port = free_loopback_port();
  auto config = env_->write_config(settings("/idle-metrics/"));
  {
    std::ofstream out(config, std::ios::app);
    out << "\n[metrics]\nlisten = \"127.0.0.1:" << port << "\"\n";
  }
  ServiceProcess service(env_->dir.path(), "idle-metrics");
  env_->start_service(service, config);
  const auto opened_at = std::chrono::steady_clock::now();
  std::vector<int> idle;
  for (int i = 0; i < 100; ++i) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<std::uint16_t>(port));
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
    idle.push_back(fd);
  }
  // A scraper still gets its answer.
  EXPECT_EQ(http_get(port, "/healthz"), "200\nok\n");
  auto closed_by_server = [&] {
    int closed = 0;
    for (int fd : idle) {
      char byte;
      if (::recv(fd, &byte, 1, MSG_DONTWAIT) == 0) ++closed;  // orderly end of stream
    }
    return closed;
  };
  EXPECT_TRUE(wait_until([&] { return closed_by_server() >= 37; }, 5s)) << closed_by_server() << " of 100 closed";
  EXPECT_TRUE(wait_until([&] { return closed_by_server() == 100; }, 15s)) << closed_by_server() << " of 100 closed";
  EXPECT_GE(std::chrono::steady_clock::now() - opened_at, 9s) << "idle connections closed before the request timeout";
  for (int fd : idle) ::close(fd);
  EXPECT_EQ(service.terminate(5s), 0);
}

TEST_F(OperationsTest, PasswordsNeverReachTheLogs) {
  const std::string secret = "Sup3rSecretPw";
  // A DSN on the command line with a password (trust auth ignores it) and debug logging.
  auto config = env_->write_config(settings("/pw/"));
  ServiceProcess service(env_->dir.path(), "password");
  service.start({"start", "-c", config.string(), "-l", "trace", "-p", env_->conninfo() + " password=" + secret});
  ASSERT_TRUE(service.wait_for_log("etcd-sync started", 20s)) << service.log_text();
  env_->client->put("/pw/k", "v");
  EXPECT_EQ(service.terminate(5s), 0);
  // Everything the service printed (the harness's own marker line echoes the command, before the mark).
  auto printed = service.log_since_mark();
  EXPECT_NE(printed.find("etcd-sync stopped"), std::string::npos);
  EXPECT_EQ(printed.find(secret), std::string::npos);

  // Failures print the host and port, never the password.
  auto refused = run_binary({"migrate", "-p", "host=127.0.0.1 port=1 dbname=x user=u password=" + secret});
  EXPECT_EQ(refused.exit_code, 2);
  EXPECT_NE(refused.stderr_text.find("127.0.0.1"), std::string::npos) << refused.stderr_text;
  EXPECT_EQ((refused.stdout_text + refused.stderr_text).find(secret), std::string::npos);

  auto etcd_auth = run_binary({"start", "-c", config.string(), "-e", "etcd://root:" + secret + "@" + env_->etcd.endpoint() + "/pw/"});
  EXPECT_EQ(etcd_auth.exit_code, 3) << etcd_auth.stdout_text << etcd_auth.stderr_text;  // auth is not enabled
  EXPECT_EQ((etcd_auth.stdout_text + etcd_auth.stderr_text).find(secret), std::string::npos);

  std::ofstream bad(env_->dir.path() / "bad-password.toml");
  bad << "[postgresql]\nhost = \"h\"\npassword = \"" << secret << "\"\nport = \"not a number\"\n";
  bad.close();
  auto invalid = run_binary({"config", "validate", "-c", (env_->dir.path() / "bad-password.toml").string()});
  EXPECT_EQ(invalid.exit_code, 1);
  EXPECT_NE(invalid.stderr_text.find("postgresql.port"), std::string::npos) << invalid.stderr_text;
  EXPECT_EQ((invalid.stdout_text + invalid.stderr_text).find(secret), std::string::npos);
}

TEST_F(OperationsTest, ExitCodesForConfigurationAndConnectionErrors) {
  std::ofstream bad(env_->dir.path() / "unknown-key.toml");
  bad << "[sync]\ndirektion = \"bidirectional\"\n";
  bad.close();
  auto config_error = run_binary({"start", "-c", (env_->dir.path() / "unknown-key.toml").string()});
  EXPECT_EQ(config_error.exit_code, 1);
  EXPECT_NE(config_error.stderr_text.find("unknown-key.toml:2"), std::string::npos) << config_error.stderr_text;
  EXPECT_NE(config_error.stderr_text.find("sync.direktion"), std::string::npos) << config_error.stderr_text;

  auto s = settings("/exit/");
  auto config = env_->write_config(s);
  auto no_etcd = run_binary({"start", "-c", config.string(), "-e", "etcd://127.0.0.1:1/?dial_timeout=300ms"});
  EXPECT_EQ(no_etcd.exit_code, 2) << no_etcd.stdout_text;
  EXPECT_NE(no_etcd.stdout_text.find("127.0.0.1:1"), std::string::npos) << no_etcd.stdout_text;
}

TEST_F(OperationsTest, EtcdUsernameAndPasswordAuthenticateAndTheTokenIsRenewed) {
  // Its own etcd: auth stays on there, and tokens expire after one idle second.
  EtcdServer secured(env_->dir.path(), "etcd-auth");
  secured.add_arguments({"--auth-token-ttl=1"});
  secured.start();
  secured.etcdctl({"user", "add", "root:rootpw"});
  secured.etcdctl({"auth", "enable"});
  auto s = settings("/auth/");
  auto config = env_->write_config(s);
  const std::string dsn = "etcd://root:rootpw@" + secured.endpoint() + "/auth/";

  auto denied = run_binary({"start", "-c", config.string(), "-e", "etcd://root:wrong@" + secured.endpoint() + "/auth/"});
  EXPECT_EQ(denied.exit_code, 3) << denied.stdout_text;
  EXPECT_NE(denied.stdout_text.find("authentication"), std::string::npos) << denied.stdout_text;

  ServiceProcess service(env_->dir.path(), "auth");
  service.start({"start", "-c", config.string(), "-e", dsn});
  ASSERT_TRUE(service.wait_for_log("\"to\":\"watching\"", 20s)) << service.log_text();
  secured.etcdctl({"--user", "root:rootpw", "put", "/auth/a", "1"});
  EXPECT_TRUE(wait_until([&] { return env_->db().scalar("SELECT value FROM etcd_get('/auth/a')") == "1"; }, 10s));

  // Idle past the token's TTL, then write through etcd_wal: the first Txn meets an expired token,
  // authenticates again and goes through.
  auto idle_until = std::chrono::steady_clock::now() + 2500ms;
  wait_until([&] { return std::chrono::steady_clock::now() >= idle_until; }, 3s, 100ms);
  env_->db().exec("INSERT INTO etcd_wal (key, value) VALUES ('/auth/b', 'from postgres')");
  EXPECT_TRUE(wait_until([&] { return env_->db().scalar("SELECT status FROM etcd_wal") == "success"; }, 10s))
      << env_->db().scalar("SELECT error_message FROM etcd_wal").value_or("");
  EXPECT_NE(secured.etcdctl({"--user", "root:rootpw", "get", "/auth/b", "--print-value-only"}).find("from postgres"),
            std::string::npos);
  EXPECT_EQ(service.terminate(5s), 0);
  EXPECT_EQ(service.log_since_mark().find("rootpw"), std::string::npos);
}

// A dead etcd endpoint listed first costs no dial_timeout: every endpoint is dialled at once, the
// first that answers is used, and the dead one is named in a warning.
TEST_F(OperationsTest, ADeadEtcdEndpointAtStartupIsPassedOverAndNamed) {
  auto s = settings("/dead-endpoint/");
  s.dial_timeout = "30s";
  auto config = env_->write_config(s);
  const int dead_port = free_loopback_port();
  const std::string dead = "127.0.0.1:" + std::to_string(dead_port);
  ServiceProcess service(env_->dir.path(), "dead-endpoint");
  const auto began = std::chrono::steady_clock::now();
  service.start({"start", "-c", config.string(), "-e", "etcd://" + dead + "," + env_->etcd.endpoint() + "/dead-endpoint/"});
  ASSERT_TRUE(service.wait_for_log("etcd-sync started", 20s)) << service.log_text();
  EXPECT_LT(std::chrono::steady_clock::now() - began, 10s) << "waited out dial_timeout on the dead endpoint";
  EXPECT_TRUE(service.wait_for_log("etcd endpoint does not answer", 5s)) << service.log_text();
  EXPECT_NE(service.log_text().find(dead), std::string::npos) << "the warning names the dead endpoint";
  auto revision = env_->client->put("/dead-endpoint/k", "v");
  EXPECT_TRUE(env_->wait_mirrored(revision, 10s, "/dead-endpoint/"));
  EXPECT_EQ(service.terminate(5s), 0);
}

// An etcd role without readwrite on [ha] election_prefix cannot campaign: exit code 3, naming the
// prefix. With it, the same user runs.
TEST_F(OperationsTest, AnEtcdRoleWithoutTheElectionPrefixIsExitCodeThreeNamingIt) {
  EtcdServer secured(env_->dir.path(), "etcd-roles");
  secured.start();
  secured.etcdctl({"user", "add", "root:rootpw"});
  secured.etcdctl({"user", "add", "sync:syncpw"});
  secured.etcdctl({"role", "add", "sync"});
  secured.etcdctl({"role", "grant-permission", "sync", "--prefix=true", "readwrite", "/perm/"});
  secured.etcdctl({"user", "grant-role", "sync", "sync"});
  secured.etcdctl({"auth", "enable"});
  auto config = env_->write_config(settings("/perm/"));
  const std::string dsn = "etcd://sync:syncpw@" + secured.endpoint() + "/perm/";
  auto denied = run_binary({"start", "-c", config.string(), "-e", dsn}, {}, 30s);
  EXPECT_EQ(denied.exit_code, 3) << denied.stdout_text;
  EXPECT_NE(denied.stdout_text.find("election_prefix"), std::string::npos) << denied.stdout_text;
  EXPECT_NE(denied.stdout_text.find("/etcd-sync/election/"), std::string::npos) << denied.stdout_text;
  EXPECT_EQ(denied.stdout_text.find("syncpw"), std::string::npos) << "a password in the log";

  secured.etcdctl({"--user", "root:rootpw", "role", "grant-permission", "sync", "--prefix=true", "readwrite",
                   "/etcd-sync/election/"});
  ServiceProcess service(env_->dir.path(), "roles");
  service.start({"start", "-c", config.string(), "-e", dsn});
  ASSERT_TRUE(service.wait_for_log("\"to\":\"watching\"", 20s)) << service.log_text();
  env_->db().exec("INSERT INTO etcd_wal (key, value) VALUES ('/perm/a', 'granted')");
  EXPECT_TRUE(wait_until([&] { return env_->db().scalar("SELECT status FROM etcd_wal") == "success"; }, 10s))
      << env_->db().scalar("SELECT error_message FROM etcd_wal").value_or("");
  EXPECT_EQ(service.terminate(5s), 0);
}

/// Makes a CA and a certificate it signs for 127.0.0.1 with openssl; returns {cert, key}.
std::pair<std::filesystem::path, std::filesystem::path> make_certificate(const std::filesystem::path& dir,
                                                                          const std::string& name) {
  auto run = [](const std::vector<std::string>& args) {
    auto result = run_command("/usr/bin/openssl", args, {}, 30s);
    if (result.exit_code != 0) throw std::runtime_error("openssl failed: " + result.stderr_text);
  };
  auto ca_key = dir / "ca.key", ca = dir / "ca.crt";
  if (!std::filesystem::exists(ca))
    run({"req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=etcd-sync test CA",
         "-keyout", ca_key.string(), "-out", ca.string()});
  auto key = dir / (name + ".key"), csr = dir / (name + ".csr"), cert = dir / (name + ".crt"),
       extensions = dir / (name + ".ext");
  std::ofstream(extensions) << "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n";
  run({"req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=" + name, "-keyout", key.string(), "-out", csr.string()});
  run({"x509", "-req", "-in", csr.string(), "-CA", ca.string(), "-CAkey", ca_key.string(), "-CAcreateserial", "-days",
       "2", "-extfile", extensions.string(), "-out", cert.string()});
  return {cert, key};
}

TEST_F(OperationsTest, EtcdOverTlsWithClientCertificates) {
  auto certs = env_->dir.path() / "tls";
  std::filesystem::create_directories(certs);
  auto [server_cert, server_key] = make_certificate(certs, "server");
  auto [client_cert, client_key] = make_certificate(certs, "client");
  EtcdServer secured(env_->dir.path(), "etcd-tls");
  secured.use_tls(certs / "ca.crt", server_cert, server_key, client_cert, client_key);
  secured.start();

  auto config = env_->write_config(settings("/tls/"));
  {
    std::ofstream out(config, std::ios::app);
    out << "\n[etcd.tls]\nca_file = \"" << (certs / "ca.crt").string() << "\"\ncert_file = \"" << client_cert.string()
        << "\"\nkey_file = \"" << client_key.string() << "\"\n";
  }
  ServiceProcess service(env_->dir.path(), "tls");
  service.start({"start", "-c", config.string(), "-e", "etcd://" + secured.endpoint() + "/tls/"});
  ASSERT_TRUE(service.wait_for_log("\"to\":\"watching\"", 20s)) << service.log_text();
  secured.etcdctl({"put", "/tls/a", "over tls"});
  EXPECT_TRUE(wait_until([&] { return env_->db().scalar("SELECT value FROM etcd_get('/tls/a')") == "over tls"; }, 10s));
  env_->db().exec("INSERT INTO etcd_wal (key, value) VALUES ('/tls/b', 'back')");
  EXPECT_TRUE(wait_until([&] { return env_->db().scalar("SELECT status FROM etcd_wal") == "success"; }, 10s));
  EXPECT_NE(secured.etcdctl({"get", "/tls/b", "--print-value-only"}).find("back"), std::string::npos);
  EXPECT_EQ(service.terminate(5s), 0);

  // Without the CA the server's certificate is not trusted: no connection, exit code 2.
  std::ofstream(env_->dir.path() / "no-ca.toml") << "[etcd.tls]\nserver_name = \"localhost\"\n";
  auto untrusted = run_binary({"start", "-c", (env_->dir.path() / "no-ca.toml").string(), "-p", env_->conninfo(),
                               "-e", "etcd://" + secured.endpoint() + "/tls/?dial_timeout=1s"});
  EXPECT_EQ(untrusted.exit_code, 2) << untrusted.stdout_text;
}

TEST_F(OperationsTest, DryRunLogsWhatItWouldWriteAndWritesNothing) {
  auto config = env_->write_config(settings("/dry/"));
  ASSERT_EQ(run_binary({"migrate", "-c", config.string()}).exit_code, 0);
  env_->db().exec("INSERT INTO etcd_wal (key, value) VALUES ('/dry/from-pg', 'v')");
  ServiceProcess service(env_->dir.path(), "dry-run");
  service.start({"start", "--dry-run", "-c", config.string()});
  ASSERT_TRUE(service.wait_for_log("\"to\":\"watching\"", 20s)) << service.log_text();
  env_->client->put("/dry/from-etcd", "x");
  EXPECT_TRUE(service.wait_for_log("dry run: would write a row to etcd", 10s));
  EXPECT_TRUE(service.wait_for_log("dry run: would apply etcd_wal row", 10s));
  EXPECT_EQ(service.terminate(5s), 0);
  EXPECT_EQ(env_->db().scalar("SELECT count(*) FROM etcd"), "0");
  EXPECT_EQ(env_->db().scalar("SELECT status FROM etcd_wal"), "pending");
  EXPECT_EQ(env_->db().scalar("SELECT count(*) FROM etcd_sync_checkpoint"), "0");
  EXPECT_EQ(env_->db().scalar("SELECT count(*) FROM etcd_sync_service"), "0");
  EXPECT_FALSE(env_->client->get("/dry/from-pg").has_value());
}

/// Receives systemd notifications the way systemd does: a datagram socket named by NOTIFY_SOCKET.
class NotifySocket {
 public:
  explicit NotifySocket(const std::filesystem::path& path) : path_(path) {
    fd_ = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::snprintf(address.sun_path, sizeof address.sun_path, "%s", path.c_str());
    if (bind(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) throw std::runtime_error("bind");
  }
  ~NotifySocket() { close(fd_); }
  /// Reads datagrams until one contains `needle`, or the deadline passes.
  bool wait_for(const std::string& needle, std::chrono::milliseconds deadline) {
    auto end = std::chrono::steady_clock::now() + deadline;
    while (std::chrono::steady_clock::now() < end) {
      if (received_.find(needle) != std::string::npos) return true;
      pollfd p{fd_, POLLIN, 0};
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - std::chrono::steady_clock::now());
      if (poll(&p, 1, static_cast<int>(std::max<long long>(1, left.count()))) <= 0) continue;
      char buffer[512];
      auto n = recv(fd_, buffer, sizeof buffer, 0);
      if (n > 0) received_ += std::string(buffer, static_cast<std::size_t>(n)) + "\n";
    }
    return received_.find(needle) != std::string::npos;
  }
  void forget() { received_.clear(); }

 private:
  std::filesystem::path path_;
  int fd_ = -1;
  std::string received_;
};

TEST_F(OperationsTest, TellsSystemdReadyReloadingWatchdogAndStopping) {
  NotifySocket notify(env_->dir.path() / "notify.sock");
  auto config = env_->write_config(settings("/sd/"));
  ServiceProcess service(env_->dir.path(), "systemd");
  service.start({"start", "-c", config.string()},
                {{"NOTIFY_SOCKET", (env_->dir.path() / "notify.sock").string()}, {"WATCHDOG_USEC", "400000"}});
  EXPECT_TRUE(notify.wait_for("READY=1", 20s));
  notify.forget();
  EXPECT_TRUE(notify.wait_for("WATCHDOG=1", 2s));
  notify.forget();
  EXPECT_TRUE(notify.wait_for("WATCHDOG=1", 2s)) << "the watchdog is petted repeatedly";
  service.signal(SIGHUP);
  EXPECT_TRUE(notify.wait_for("RELOADING=1", 5s));
  EXPECT_TRUE(notify.wait_for("READY=1", 5s));
  service.signal(SIGTERM);
  EXPECT_TRUE(notify.wait_for("STOPPING=1", 5s));
  EXPECT_EQ(service.wait_exit(5s), 0);
}

}  // namespace
}  // namespace etcd_sync::testing
