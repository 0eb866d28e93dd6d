#include "test/chaos/writers.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <chrono>
#include <optional>
#include <sstream>

#include "adapters/errors.hpp"
#include "test/support/etcd_loop.hpp"
#include "test/support/pg_client.hpp"

namespace etcd_sync::chaos {

namespace asio = boost::asio;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

namespace {

/// How long a writer waits after `writes` writes: 1/rate each on average, jittered by +-50%.
milliseconds pause_after(Random& random, double rate, int writes = 1) {
  return milliseconds(static_cast<std::int64_t>(1000.0 * writes / rate * random.uniform(0.5, 1.5)));
}

etcdserverpb::PutRequest put_request(const std::string& key, const std::string& value) {
  etcdserverpb::PutRequest request;
  request.set_key(key);
  request.set_value(value);
  return request;
}

/// A delete of `key` and a put of `marker` (value: the key) in one Txn: both at one revision.
etcdserverpb::TxnRequest delete_with_marker(const std::string& key, const std::string& marker) {
  etcdserverpb::TxnRequest request;
  request.add_success()->mutable_request_delete_range()->set_key(key);
  auto* put = request.add_success()->mutable_request_put();
  put->set_key(marker);
  put->set_value(key);
  return request;
}

/// The first failures of a writer are logged with their message, later ones only counted.
bool worth_logging(std::uint64_t failures) { return failures <= 5 || failures % 100 == 0; }

}  // namespace

void create_base_table(const std::string& conninfo) {
  testing::PgClient db(conninfo);
  db.exec(std::string("CREATE TABLE ") + kBaseTable +
          " (id bigint PRIMARY KEY, base bigint, statement text NOT NULL);"
          " CREATE INDEX ON " + kBaseTable + " (statement)");
}

// --- EtcdWriter ----------------------------------------------------------------------------------

EtcdWriter::EtcdWriter(std::vector<std::string> endpoints, std::string marker_prefix, WriterPlan plan, ChaosLog& log)
    : endpoints_(std::move(endpoints)), marker_prefix_(std::move(marker_prefix)), plan_(std::move(plan)), log_(log) {}

EtcdWriter::~EtcdWriter() { stop(); }

void EtcdWriter::start() { thread_ = std::thread([this] { run(); }); }

void EtcdWriter::stop() {
  stopping_ = true;
  if (thread_.joinable()) thread_.join();
}

void EtcdWriter::run() {
  testing::EtcdLoop etcd(endpoints_, std::chrono::seconds(2));
  std::exception_ptr failure;
  asio::co_spawn(etcd.io(), loop(etcd), [&](std::exception_ptr e) { failure = e; });
  etcd.io().run();
  if (!failure) return;
  try {
    std::rethrow_exception(failure);
  } catch (const std::exception& e) {
    log_.line("etcd writer " + std::to_string(plan_.stream) + " ended early: " + e.what());
  }
}

asio::awaitable<void> EtcdWriter::loop(testing::EtcdLoop& etcd) {
  Random random(plan_.seed);
  asio::steady_timer timer(etcd.io());
  std::uint64_t n = 0;
  while (!stopping_) {
    const std::string key = random.pick(plan_.keys);
    const bool is_delete = random.chance(plan_.delete_share);
    const std::string name = std::to_string(plan_.stream) + "." + std::to_string(++n);
    const milliseconds pause = pause_after(random, plan_.rate);
    std::string error;
    try {
      if (is_delete) {
        const auto request = delete_with_marker(key, marker_prefix_ + name);
        co_await etcd.etcd().txn(request);
        ++deletes_;
      } else {
        const auto request = put_request(key, "e-" + name);
        co_await etcd.etcd().put(request);
        ++puts_;
      }
    } catch (const SyncError& e) {
      error = e.what();
    }
    if (!error.empty() && worth_logging(++failures_)) {
      log_.line("etcd writer " + std::to_string(plan_.stream) + ": " + (is_delete ? "delete " : "put ") + key + " (" +
                name + ") failed, outcome unknown (failure " + std::to_string(failures_) + "): " + error);
    }
    timer.expires_after(pause);
    co_await timer.async_wait(asio::use_awaitable);
  }
}

std::string EtcdWriter::summary() const {
  std::ostringstream out;
  out << "etcd writer " << plan_.stream << ": " << puts_ << " puts, " << deletes_ << " deletes, " << failures_
      << " calls failed (outcome unknown; etcd's history tells)";
  return out.str();
}

// --- PgWriter ------------------------------------------------------------------------------------

namespace {

/// The row's base: the mirror's revision of the key (NULL when absent), or with `stale` an older
/// revision of it (from etcd_get_all) or NULL while it exists. Returns whether it came out stale.
std::pair<std::optional<std::string>, bool> choose_base(testing::PgClient& db, const std::string& key, bool stale,
                                                        Random& random) {
  const auto current = db.exec_params("SELECT revision FROM etcd_get($1)", {key});
  std::optional<std::string> base = current.empty() ? std::nullopt : current[0][0];
  if (!stale) return {base, false};
  if (random.chance(0.5) || !base) {
    const auto all = db.exec_params("SELECT revision FROM etcd_get_all($1, 0) ORDER BY revision", {key});
    if (all.size() >= 2) {
      const auto index = random.between(0, static_cast<std::int64_t>(all.size()) - 2);
      return {all[static_cast<std::size_t>(index)][0], true};
    }
  }
  if (base) return {std::nullopt, true};  // NULL while the key exists
  return {base, false};                   // nothing older to pick
}

/// The INSERT of `rows` rows ($1..$3n: key, value, revision each) that also records each row's
/// base in the base table under the statement's name ($3n+1), in one statement.
std::string insert_sql(int rows) {
  std::string sql = "WITH w AS (INSERT INTO etcd_wal (key, value, revision) VALUES ";
  for (int r = 0; r < rows; ++r) {
    sql += (r ? ", " : "") + std::string("($") + std::to_string(3 * r + 1) + ", $" + std::to_string(3 * r + 2) +
           ", $" + std::to_string(3 * r + 3) + "::bigint)";
  }
  sql += std::string(" RETURNING id, revision) INSERT INTO ") + kBaseTable + " (id, base, statement) SELECT id, revision, $" +
         std::to_string(3 * rows + 1) + " FROM w";
  return sql;
}

}  // namespace

PgWriter::PgWriter(std::string conninfo, WriterPlan plan, ChaosLog& log)
    : conninfo_(std::move(conninfo)), plan_(std::move(plan)), log_(log) {}

PgWriter::~PgWriter() { stop(); }

void PgWriter::start() { thread_ = std::thread([this] { run(); }); }

void PgWriter::stop() {
  stopping_ = true;
  if (thread_.joinable()) thread_.join();
}

void PgWriter::run() {
  Random random(plan_.seed);
  testing::PgClient db;
  const std::string who = "postgres writer " + std::to_string(plan_.stream);
  std::uint64_t n = 0;
  std::uint64_t connect_failures = 0;
  while (!stopping_) {
    if (!db.connected()) {
      try {
        db.connect(conninfo_ + " connect_timeout=2");
      } catch (const testing::PgError&) {
        ++connect_failures;
        std::this_thread::sleep_for(milliseconds(100));
        continue;
      }
    }
    const int rows = random.chance(plan_.multi_row_share) ? static_cast<int>(random.between(2, 4)) : 1;
    const std::string statement = "s-" + std::to_string(plan_.stream) + "." + std::to_string(++n);
    const milliseconds pause = pause_after(random, plan_.rate, rows);
    std::vector<std::optional<std::string>> params;
    int deletes = 0, stale = 0;
    bool sent = false;
    try {
      for (int r = 0; r < rows; ++r) {
        const std::string key = random.pick(plan_.keys);
        const bool is_delete = random.chance(plan_.delete_share);
        const auto [base, is_stale] = choose_base(db, key, random.chance(plan_.stale_share), random);
        params.push_back(key);
        params.push_back(is_delete ? std::nullopt
                                   : std::optional<std::string>("w-" + std::to_string(plan_.stream) + "." +
                                                                std::to_string(n) + "." + std::to_string(r)));
        params.push_back(base);
        deletes += is_delete;
        stale += is_stale;
      }
      params.push_back(statement);
      sent = true;
      db.exec_params(insert_sql(rows), params);
      ++statements_;
      rows_ += rows;
      deletes_ += deletes;
      stale_ += stale;
      multi_row_ += rows > 1;
    } catch (const testing::PgError& e) {
      if (!sent || db.connected()) {
        // A base query that failed, or an INSERT PostgreSQL refused (and rolled back).
        if (sent && worth_logging(++failed_)) log_.line(who + ": " + statement + " failed: " + e.what());
      } else {
        // The connection broke while the INSERT was in flight: did it commit?
        std::optional<bool> committed;
        const auto give_up = steady_clock::now() + std::chrono::seconds(30);
        while (!committed && steady_clock::now() < give_up) {
          try {
            db.connect(conninfo_ + " connect_timeout=2");
            const auto found = db.exec_params(std::string("SELECT count(*) FROM ") + kBaseTable + " WHERE statement = $1",
                                              {statement});
            committed = found[0][0] != "0";
          } catch (const testing::PgError&) {
            std::this_thread::sleep_for(milliseconds(100));
          }
        }
        if (!committed) {
          ++in_doubt_unresolved_;
        } else if (*committed) {
          ++in_doubt_committed_;
          ++statements_;
          rows_ += rows;
          deletes_ += deletes;
          stale_ += stale;
          multi_row_ += rows > 1;
        } else {
          ++in_doubt_lost_;
        }
        log_.line(who + ": " + statement + " (" + std::to_string(rows) + " rows) was in doubt (" + e.what() + "): " +
                  (!committed ? "unresolved" : *committed ? "committed" : "not committed"));
      }
    }
    std::this_thread::sleep_for(pause);
  }
  if (connect_failures > 0)
    log_.line(who + ": " + std::to_string(connect_failures) + " connection attempts failed while PostgreSQL was down");
}

std::string PgWriter::summary() const {
  std::ostringstream out;
  out << "postgres writer " << plan_.stream << ": " << rows_ << " rows in " << statements_ << " statements (" << deletes_
      << " deletes, " << stale_ << " stale bases, " << multi_row_ << " multi-row statements); in doubt: "
      << in_doubt_committed_ << " committed, " << in_doubt_lost_ << " not committed, " << in_doubt_unresolved_
      << " unresolved; " << failed_ << " refused";
  return out.str();
}

}  // namespace etcd_sync::chaos
