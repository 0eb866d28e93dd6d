#include "perf/steady_load.hpp"

#include "reactor/loop/wakeup.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <ctime>
#include <sstream>

namespace etcd_sync::bench {

using namespace std::chrono_literals;

SteadyLoad::SteadyLoad(std::vector<std::string> endpoints, std::string conninfo, double rate, int inserters)
    : endpoints_(std::move(endpoints)), conninfo_(std::move(conninfo)), rate_(rate), inserters_(inserters),
      value_(100, 'v') {}

SteadyLoad::~SteadyLoad() {
  try {
    stop();
  } catch (const std::exception&) {
  }
}

void SteadyLoad::start() {
  stop_ = false;
  thread_ = std::thread([this] { thread_main(); });
}

void SteadyLoad::stop() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
  if (failure_) std::rethrow_exception(std::exchange(failure_, nullptr));
}

void SteadyLoad::thread_main() {
  try {
    // Built on this thread: the gRPC bridge posts into the io_context of the thread that runs it.
    testing::EtcdLoop loop(endpoints_, 5s);
    std::vector<std::unique_ptr<PgConnection>> pool;
    for (int i = 0; i < inserters_; ++i)
      pool.push_back(std::make_unique<PgConnection>(loop.io(), conninfo_, "bench-load-" + std::to_string(i)));
    loop.run(drive(loop, pool));
    for (auto& pg : pool) pg->close();
  } catch (...) {
    failure_ = std::current_exception();
  }
}

asio::awaitable<void> SteadyLoad::insert_rows(PgConnection& pg, std::size_t first, std::size_t step,
                                              Clock::time_point start) {
  const auto period = std::chrono::nanoseconds(static_cast<std::int64_t>(1e9 / rate_));
  for (std::size_t i = first; !stop_; i += step) {
    co_await sleep_until(start + period * static_cast<std::int64_t>(i));
    if (stop_) break;
    const auto sent = wall_micros();
    co_await pg.query("INSERT INTO etcd_wal (key, value) VALUES ($1, $2)",
                      pg_params(PgParam::text(wal_prefix + std::to_string(i)), PgParam::text(value_)));
    const auto committed = wall_micros();
    if (rows_.size() <= i) rows_.resize(i + 1);
    rows_[i].sent_us = sent;
    rows_[i].committed_us = committed;
    ++rows_committed_;
  }
}

asio::awaitable<void> SteadyLoad::put_one(EtcdClient& etcd, std::size_t index) {
  etcdserverpb::PutRequest request;
  request.set_key(put_prefix + std::to_string(index % 100));
  request.set_value(value_);
  puts_[index].sent_us = wall_micros();
  std::int64_t revision = 0;
  try {
    revision = (co_await etcd.put(request)).header().revision();
  } catch (const SyncError&) {
    // No leader, the member is gone, a timeout: the put failed; the load goes on.
  }
  puts_[index].answered_us = wall_micros();
  puts_[index].revision = revision;
  if (revision > 0) ++puts_succeeded_;
}

asio::awaitable<void> SteadyLoad::drive(testing::EtcdLoop& loop, std::vector<std::unique_ptr<PgConnection>>& pool) {
  for (auto& pg : pool) co_await pg->connect(5s);
  Wakeup done(loop.io());
  int inserters_running = 0;
  std::exception_ptr failure;
  const auto start = Clock::now() + 20ms;
  for (std::size_t j = 0; j < pool.size(); ++j) {
    ++inserters_running;
    asio::co_spawn(loop.io(), insert_rows(*pool[j], j, pool.size(), start),
                   [&inserters_running, &failure, &done, this](std::exception_ptr e) {
                     if (e && !failure) {
                       failure = e;
                       stop_ = true;
                     }
                     --inserters_running;
                     done.notify();
                   });
  }
  // Puts: open-loop, each its own coroutine, so a put that waits on a dead member delays no other.
  const auto period = std::chrono::nanoseconds(static_cast<std::int64_t>(1e9 / rate_));
  for (std::size_t i = 0; !stop_; ++i) {
    co_await sleep_until(start + period * static_cast<std::int64_t>(i));
    if (stop_) break;
    puts_.emplace_back();
    ++puts_in_flight_;
    asio::co_spawn(loop.io(), put_one(loop.etcd(), i), [this, &done](std::exception_ptr) {
      --puts_in_flight_;
      done.notify();
    });
  }
  while (inserters_running > 0 || puts_in_flight_ > 0) co_await done.wait(1s);
  if (failure) std::rethrow_exception(failure);
}

LoadOutcomes LoadOutcomes::read(testing::PgClient& db, std::size_t row_count) {
  LoadOutcomes out;
  out.rows.resize(row_count);
  const std::string prefix = SteadyLoad::wal_prefix;
  for (const auto& r : db.exec_params(
           "SELECT substr(key, length($1) + 1)::bigint, status, coalesce(revision, 0), "
           "coalesce((extract(epoch FROM applied_at) * 1000000)::bigint, 0) FROM etcd_wal WHERE starts_with(key, $1)",
           {prefix})) {
    auto index = static_cast<std::size_t>(std::stoll(*r[0]));
    if (index >= out.rows.size()) out.rows.resize(index + 1);
    auto& row = out.rows[index];
    row.status = *r[1];
    row.revision = *r[1] == "success" ? std::stoll(*r[2]) : 0;
    row.applied_us = std::stoll(*r[3]);
    ++out.status_counts[row.status];
  }
  for (const auto& r : db.exec("SELECT revision, (extract(epoch FROM min(ts)) * 1000000)::bigint FROM etcd GROUP BY revision"))
    out.mirrored_us[std::stoll(*r[0])] = std::stoll(*r[1]);
  auto counts = db.exec_params("SELECT count(*), count(DISTINCT key) FROM etcd WHERE starts_with(key, $1)", {prefix});
  out.wal_keys_in_mirror = std::stoll(*counts[0][0]);
  out.distinct_wal_keys_in_mirror = std::stoll(*counts[0][1]);
  return out;
}

FaultFigures fault_figures(const SteadyLoad& load, const LoadOutcomes& outcomes, std::int64_t fault_us,
                           std::int64_t until_us) {
  FaultFigures f;
  const auto& rows = load.rows();
  std::int64_t first_revision = INT64_MAX;
  std::vector<std::size_t> after;
  for (std::size_t i = 0; i < rows.size() && i < outcomes.rows.size(); ++i) {
    const auto sent = rows[i].sent_us;
    if (rows[i].committed_us == 0) continue;
    const auto& outcome = outcomes.rows[i];
    if (sent < fault_us) {
      if (outcome.applied_us == 0 || outcome.applied_us > fault_us) {
        ++f.in_flight;
        ++f.in_flight_statuses[outcome.status];
        f.in_flight_settled_us = std::max(f.in_flight_settled_us, outcome.applied_us);
      }
      continue;
    }
    if (sent >= until_us) continue;
    after.push_back(i);
    if (outcome.applied_us > 0 && (f.first_applied_us == 0 || outcome.applied_us < f.first_applied_us))
      f.first_applied_us = outcome.applied_us;
    if (outcome.revision > 0) first_revision = std::min(first_revision, outcome.revision);
  }
  f.rows_after = static_cast<std::int64_t>(after.size());
  std::vector<double> outage, all;
  for (auto i : after) {
    const auto& outcome = outcomes.rows[i];
    if (outcome.applied_us == 0) continue;
    const double wait_ms = (outcome.applied_us - rows[i].committed_us) / 1000.0;
    all.push_back(wait_ms);
    if (f.first_applied_us > 0 && rows[i].committed_us < f.first_applied_us) outage.push_back(wait_ms);
  }
  f.outage_rows = static_cast<std::int64_t>(outage.size());
  f.outage_wait_ms = distribution(outage);
  f.after_wait_ms = distribution(all);

  std::vector<double> put_mirror;
  for (const auto& put : load.puts()) {
    if (put.sent_us < fault_us || put.sent_us >= until_us) continue;
    if (put.revision == 0) {
      ++f.puts_failed;
      continue;
    }
    if (f.first_put_answered_us == 0 || put.answered_us < f.first_put_answered_us) f.first_put_answered_us = put.answered_us;
    first_revision = std::min(first_revision, put.revision);
    auto it = outcomes.mirrored_us.find(put.revision);
    if (it != outcomes.mirrored_us.end()) put_mirror.push_back((it->second - put.answered_us) / 1000.0);
  }
  f.put_mirror_ms = distribution(put_mirror);
  if (first_revision != INT64_MAX) {
    f.first_post_fault_revision = first_revision;
    // The mirror commits revisions in order, so the first one at or past the bound is the earliest.
    auto it = outcomes.mirrored_us.lower_bound(first_revision);
    if (it != outcomes.mirrored_us.end()) f.first_mirrored_us = it->second;
  }
  return f;
}

double seconds_between(std::int64_t from_us, std::int64_t to_us) { return to_us == 0 ? -1 : (to_us - from_us) / 1e6; }

std::optional<std::int64_t> log_line_time(const std::string& log, const std::vector<std::string>& needles) {
  std::istringstream lines(log);
  for (std::string line; std::getline(lines, line);) {
    bool all = true;
    for (const auto& needle : needles) all = all && line.find(needle) != std::string::npos;
    if (!all) continue;
    try {
      const auto ts = nlohmann::json::parse(line).at("ts").get<std::string>();  // 2026-11-21T10:00:00.123Z
      std::tm utc{};
      int millis = 0;
      if (std::sscanf(ts.c_str(), "%d-%d-%dT%d:%d:%d.%dZ", &utc.tm_year, &utc.tm_mon, &utc.tm_mday, &utc.tm_hour,
                      &utc.tm_min, &utc.tm_sec, &millis) != 7)
        continue;
      utc.tm_year -= 1900;
      utc.tm_mon -= 1;
      return static_cast<std::int64_t>(timegm(&utc)) * 1000000 + millis * 1000;
    } catch (const std::exception&) {
      continue;  // not a JSON line (a marker, a library's output)
    }
  }
  return std::nullopt;
}

bool LoadOutcomes::applied_once(std::int64_t row_count, bool drained) const {
  std::string statuses;
  for (const auto& [status, n] : status_counts) statuses += format(" %s:%lld", status.c_str(), static_cast<long long>(n));
  const auto success = status_counts.count("success") ? status_counts.at("success") : 0;
  const bool once = wal_keys_in_mirror == distinct_wal_keys_in_mirror && success == row_count && wal_keys_in_mirror == row_count;
  detail(format("%lld rows in all:%s; %s; the mirror holds %lld rows of their %lld keys (%s)", static_cast<long long>(row_count),
                statuses.c_str(), drained ? "none pending at the end" : "SOME STILL PENDING",
                static_cast<long long>(wal_keys_in_mirror), static_cast<long long>(distinct_wal_keys_in_mirror),
                once ? "every row applied once" : "MISMATCH"));
  return once;
}

}  // namespace etcd_sync::bench
