#include "reactor/outbox/claimer.hpp"

#include "reactor/engine/database.hpp"
#include "reactor/outbox/outbox_sql.hpp"

namespace etcd_sync {

namespace {
/// A pipeline of one statement, built outside the coroutines (g++ 12 and braced lists in co_await).
std::vector<PgStatement> one_statement(PgStatement statement) {
  std::vector<PgStatement> out;
  out.push_back(std::move(statement));
  return out;
}
}  // namespace

Claimer::Claimer(asio::io_context& io, const Config& config, EtcdClient& etcd, SyncStats& stats, const Fencing& fencing,
                 const InFlight& in_flight)
    : etcd_(etcd),
      stats_(stats),
      fencing_(fencing),
      in_flight_(in_flight),
      pg_(io, config.postgresql.conninfo, "outbox", config.postgresql.request_timeout),
      tokens_(std::random_device{}()) {}

asio::awaitable<void> Claimer::connect(const Config& config) {
  co_await open_database(pg_, config);
  // The claim must walk etcd_wal_pending_idx in id order and stop after batch_size rows. The
  // planner cannot see that (it estimates the head-of-queue test passes 0.5% of rows, and right
  // after a bulk INSERT it believes few rows are pending), so it picks a bitmap scan of every
  // pending row, the per-row subquery on each, and a sort: O(pending) per batch.
  co_await pg_.query("SELECT set_config('enable_bitmapscan', 'off', false), set_config('enable_sort', 'off', false)");
  schedule_.reconnected();
}

asio::awaitable<std::vector<Attempt>> Claimer::claim(std::int64_t limit, std::chrono::milliseconds sync_interval) {
  const auto floor = schedule_.begin_claim(std::chrono::steady_clock::now(), sync_interval);
  if (stats_.etcd_revision == 0) stats_.etcd_revision = (co_await etcd_.status()).header().revision();
  const auto token = static_cast<std::int64_t>(tokens_() >> 1);
  const auto revision = stats_.etcd_revision;
  auto statements = one_statement(claim_statement(limit, in_flight_.unsettled(), floor, revision, token));
  fencing_.append(statements);
  auto results = co_await pg_.pipeline(std::move(statements));
  auto claimed = parse_claimed(results.front(), true, token, revision);
  backed_up_ = schedule_.end_claim(claimed.rows.size(), limit, claimed.lowest);
  std::vector<Attempt> attempts;
  attempts.reserve(claimed.rows.size());
  for (auto& row : claimed.rows) attempts.push_back({std::move(row), std::nullopt, false});
  co_return attempts;
}

asio::awaitable<std::optional<std::int64_t>> Claimer::next_retry_ms() {
  auto statements = one_statement(next_retry_statement(schedule_.floor()));
  auto results = co_await pg_.pipeline(std::move(statements));
  if (results.front().is_null(0, 0)) co_return std::nullopt;
  co_return results.front().int64(0, 0);
}

asio::awaitable<void> Claimer::check_statistics_if_due() {
  if (statistics_.due(std::chrono::steady_clock::now(), backed_up_)) co_await check_statistics(pg_, statistics_);
}

asio::awaitable<std::vector<WalRow>> Claimer::peek(const Config& config) {
  if (!pg_.connected()) co_await open_database(pg_, config);
  auto statements = one_statement(dry_run_claim_statement(config.sync.batch_size));
  auto results = co_await pg_.pipeline(std::move(statements));
  auto claimed = parse_claimed(results.front(), false, 0, 0);
  co_return std::move(claimed.rows);
}

}  // namespace etcd_sync
