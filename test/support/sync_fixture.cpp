#include "test/support/sync_fixture.hpp"

#include "test/support/run_coroutine.hpp"

#include "adapters/etcd_watch.hpp"
#include "reactor/keys/keys.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <libpq-fe.h>

#include <fstream>
#include <stdexcept>

namespace etcd_sync::testing {

namespace asio = boost::asio;

EtcdTestClient::EtcdTestClient(const std::string& endpoint) : loop_(endpoint, std::chrono::seconds(10)) {}
EtcdTestClient::EtcdTestClient(const std::vector<std::string>& endpoints) : loop_(endpoints, std::chrono::seconds(10)) {}

std::int64_t EtcdTestClient::put(const std::string& key, const std::string& value) {
  etcdserverpb::PutRequest request;
  request.set_key(key);
  request.set_value(value);
  return loop_.run(loop_.etcd().put(request)).header().revision();
}

std::int64_t EtcdTestClient::put(const std::string& key, const std::string& value, std::int64_t lease) {
  etcdserverpb::PutRequest request;
  request.set_key(key);
  request.set_value(value);
  request.set_lease(lease);
  return loop_.run(loop_.etcd().put(request)).header().revision();
}

std::int64_t EtcdTestClient::grant_lease(std::int64_t ttl_seconds) {
  etcdserverpb::LeaseGrantRequest request;
  request.set_ttl(ttl_seconds);
  return loop_.run(loop_.etcd().lease_grant(request)).id();
}

std::int64_t EtcdTestClient::txn_puts(const std::vector<std::pair<std::string, std::string>>& items) {
  etcdserverpb::TxnRequest request;
  for (const auto& [key, value] : items) {
    auto* put = request.add_success()->mutable_request_put();
    put->set_key(key);
    put->set_value(value);
  }
  return loop_.run(loop_.etcd().txn(request)).header().revision();
}

std::int64_t EtcdTestClient::del(const std::string& key) {
  etcdserverpb::DeleteRangeRequest request;
  request.set_key(key);
  return loop_.run(loop_.etcd().delete_range(request)).header().revision();
}

std::optional<mvccpb::KeyValue> EtcdTestClient::get(const std::string& key) {
  etcdserverpb::RangeRequest request;
  request.set_key(key);
  auto response = loop_.run(loop_.etcd().range(request));
  if (response.kvs_size() == 0) return std::nullopt;
  return response.kvs(0);
}

std::int64_t EtcdTestClient::revision() {
  etcdserverpb::RangeRequest request;
  request.set_key(std::string(1, '\0'));  // "\0" to "\0": the whole keyspace
  request.set_range_end(std::string(1, '\0'));
  request.set_count_only(true);
  return loop_.run(loop_.etcd().range(request)).header().revision();
}

void EtcdTestClient::compact(std::int64_t revision) {
  etcdserverpb::CompactionRequest request;
  request.set_revision(revision);
  request.set_physical(true);
  loop_.run(loop_.etcd().compact(request));
}

void EtcdTestClient::put_many(const std::vector<std::pair<std::string, std::string>>& items, int concurrency) {
  std::size_t next = 0;
  auto worker = [&]() -> asio::awaitable<void> {
    while (next < items.size()) {
      const auto& item = items[next++];
      etcdserverpb::PutRequest request;
      request.set_key(item.first);
      request.set_value(item.second);
      // A writer retries a put the client gave up on, as an application would: a busy member
      // may be abandoned by the client's probe although it took the put.
      for (int attempt = 1;; ++attempt) {
        try {
          co_await loop_.etcd().put(request);
          break;
        } catch (const SyncError& error) {
          if (!error.transient() || attempt == 3) throw;
        }
      }
    }
  };
  std::exception_ptr failure;
  for (int i = 0; i < concurrency; ++i)
    asio::co_spawn(loop_.io(), worker(), [&](std::exception_ptr e) {
      if (e && !failure) failure = e;
    });
  loop_.io().restart();
  loop_.io().run();
  if (failure) std::rethrow_exception(failure);
}

std::vector<HistoryEntry> EtcdTestClient::history(const std::string& prefix, std::int64_t from_revision,
                                                  std::int64_t to_revision) {
  auto work = [&]() -> asio::awaitable<std::vector<HistoryEntry>> {
    std::vector<HistoryEntry> out;
    if (to_revision < from_revision) co_return out;
    // Watch the whole keyspace: every revision has at least one event, so reading until one at
    // or past to_revision proves nothing is missing. (A progress notification would not: etcd 3.4
    // may send one before an unsynced watcher has caught up.)
    auto stream = loop_.etcd().open_watch();
    etcdserverpb::WatchCreateRequest create;
    create.set_key(std::string(1, '\0'));
    create.set_range_end(std::string(1, '\0'));
    create.set_start_revision(from_revision);
    co_await stream->start(create);
    bool done = false;
    while (!done) {
      auto response = co_await stream->read();
      if (!response) throw std::runtime_error("watch ended early");
      if (response->canceled()) throw std::runtime_error("watch cancelled: " + response->cancel_reason());
      for (const auto& e : response->events()) {
        if (e.kv().mod_revision() >= to_revision) done = true;
        if (e.kv().mod_revision() > to_revision) break;
        if (!key_in_prefix(e.kv().key(), prefix)) continue;
        HistoryEntry entry{e.kv().key(), std::nullopt, e.kv().mod_revision()};
        if (e.type() == mvccpb::Event::PUT) entry.value = e.kv().value();
        out.push_back(entry);
      }
    }
    stream->cancel();
    while (co_await stream->read()) {
    }
    co_await stream->finish();
    co_return out;
  };
  return loop_.run(work());
}

SyncEnvironment::SyncEnvironment() : etcd(dir.path()), postgres(dir.path()) {
  etcd.start();
  postgres.start();
  client = std::make_unique<EtcdTestClient>(etcd.endpoint());
}

SyncEnvironment::~SyncEnvironment() {
  client.reset();
  db_.reset();
}

void SyncEnvironment::fresh_database() {
  db_.reset();
  PgClient admin(postgres.conninfo("postgres"));
  ++database_number_;
  admin.exec("CREATE DATABASE sync_db_" + std::to_string(database_number_));
}

std::string SyncEnvironment::conninfo() const { return postgres.conninfo("sync_db_" + std::to_string(database_number_)); }

PgClient& SyncEnvironment::db() {
  if (!db_ || PQstatus(db_->native()) != CONNECTION_OK) db_ = std::make_unique<PgClient>(conninfo());
  return *db_;
}

std::string SyncEnvironment::wal_status_counts() {
  return db()
      .scalar("SELECT coalesce(string_agg(status || ':' || n, ' ' ORDER BY status), '') "
              "FROM (SELECT status, count(*) AS n FROM etcd_wal GROUP BY status) s")
      .value_or("");
}

std::filesystem::path SyncEnvironment::write_config(const SyncSettings& s, const std::string& name) {
  auto path = dir.path() / name;
  std::ofstream out(path);
  out << "[postgresql]\ndsn = \"" << conninfo() << "\"\n\n"
      << "[etcd]\nendpoints = [\"" << etcd.endpoint() << "\"]\nprefix = \"" << s.prefix << "\"\n"
      << "dial_timeout = \"" << s.dial_timeout << "\"\nrequest_timeout = \"" << s.request_timeout << "\"\n\n"
      << "[sync]\ndirection = \"" << s.direction << "\"\nconflict_resolution = \"" << s.conflict_resolution << "\"\n"
      << "batch_size = " << s.batch_size << "\nsync_interval = \"" << s.sync_interval << "\"\n\n"
      << "[sync.retry]\nmax_attempts = " << s.max_attempts << "\ninitial_backoff = \"" << s.initial_backoff
      << "\"\nmax_backoff = \"" << s.max_backoff << "\"\n\n"
      << "[logging]\nlevel = \"" << s.log_level << "\"\nformat = \"json\"\n";
  return path;
}

void SyncEnvironment::start_service(ServiceProcess& service, const std::filesystem::path& config,
                                    const std::map<std::string, std::string>& env) {
  service.start({"start", "-c", config.string()}, env);
  if (!service.wait_for_log("etcd-sync started", std::chrono::seconds(20)))
    throw std::runtime_error("etcd-sync did not start:\n" + service.log_text());
  // With the mirror on, wait until it watches: changes made before its snapshot would be folded
  // into the snapshot instead of arriving as events.
  std::ifstream in(config);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (text.find("postgres_to_etcd") == std::string::npos &&
      !service.wait_for_log("\"to\":\"watching\"", std::chrono::seconds(20)))
    throw std::runtime_error("the mirror did not start watching:\n" + service.log_text());
}

std::int64_t SyncEnvironment::insert_wal(const std::string& key, const std::optional<std::string>& value,
                                         std::optional<std::int64_t> revision) {
  auto rows = db().exec_params("INSERT INTO etcd_wal (key, value, revision) VALUES ($1, $2, $3::bigint) RETURNING id",
                               {key, value, revision ? std::optional(std::to_string(*revision)) : std::nullopt});
  return std::stoll(*rows.at(0).at(0));
}

std::int64_t SyncEnvironment::checkpoint(const std::string& prefix) {
  try {
    auto rows = db().exec_params("SELECT revision FROM etcd_sync_checkpoint WHERE prefix = $1", {prefix});
    if (rows.empty() || !rows[0][0]) return -1;
    return std::stoll(*rows[0][0]);
  } catch (const std::exception&) {
    return -1;  // tables not created yet, or the server is restarting
  }
}

bool SyncEnvironment::wait_mirrored(std::int64_t revision, std::chrono::milliseconds deadline, const std::string& prefix) {
  return wait_until([&] { return checkpoint(prefix) >= revision; }, deadline, std::chrono::milliseconds(20));
}

std::vector<HistoryEntry> SyncEnvironment::mirror_rows(const std::string& prefix) {
  auto rows = db().exec_params(
      "SELECT key, CASE WHEN tombstone THEN NULL WHEN value IS NOT NULL THEN value "
      "ELSE encode(value_bytes, 'hex') END, revision, value IS NULL AND value_bytes IS NOT NULL "
      "FROM etcd WHERE $1 = '' OR starts_with(key, $1) ORDER BY revision, key",
      {prefix});
  std::vector<HistoryEntry> out;
  for (const auto& row : rows) {
    HistoryEntry entry{*row[0], row[1], std::stoll(*row[2])};
    if (row[1] && *row[3] == "t") {
      std::string bytes;
      for (std::size_t i = 0; i + 1 < row[1]->size(); i += 2) bytes += static_cast<char>(std::stoi(row[1]->substr(i, 2), nullptr, 16));
      entry.value = bytes;
    }
    out.push_back(entry);
  }
  return out;
}

}  // namespace etcd_sync::testing
