#include "reactor/outbox/outbox.hpp"

#include "reactor/engine/database.hpp"
#include "reactor/loop/failpoint.hpp"
#include "reactor/loop/logging.hpp"
#include "reactor/loop/spawn.hpp"
#include "reactor/outbox/outbox_sql.hpp"

#include <algorithm>

namespace etcd_sync {

const char* to_string(OutboxState state) {
  switch (state) {
    case OutboxState::starting: return "starting";
    case OutboxState::idle: return "idle";
    case OutboxState::applying: return "applying";
    case OutboxState::backing_off: return "backing_off";
    case OutboxState::stopped: return "stopped";
  }
  return "unknown";
}

namespace {
// Outside the coroutines: g++ 12 mishandles a ?: of class temporaries inside a coroutine body.
nlohmann::json base_revision_json(const WalRow& row) {
  return row.revision ? nlohmann::json(*row.revision) : nlohmann::json();
}
const char* op_name(const WalRow& row) { return row.value ? "put" : "delete"; }
/// A pipeline of one statement, built outside the coroutines (g++ 12 and braced lists in co_await).
std::vector<PgStatement> one_statement(PgStatement statement) {
  std::vector<PgStatement> out;
  out.push_back(std::move(statement));
  return out;
}
}  // namespace

Outbox::Outbox(asio::io_context& io, std::shared_ptr<const Config> config, EtcdClient& etcd, SyncStats& stats,
               bool dry_run, Fencing fencing)
    : io_(io),
      config_(std::move(config)),
      etcd_(etcd),
      stats_(stats),
      dry_run_(dry_run),
      fencing_(std::move(fencing)),
      pg_(io, config_->postgresql.conninfo, "outbox", config_->postgresql.request_timeout),
      status_("outbox", OutboxState::starting, OutboxState::backing_off, stats,
              {OutboxState::idle, OutboxState::applying}),
      writer_(io, config_, stats, fencing_, [this](OutcomesWritten written) { on_written(std::move(written)); }),
      barrier_(io, etcd, outbox_keys(config_->ha.election_prefix), config_->etcd.request_timeout),
      row_backoff_(config_->sync.retry.initial_backoff, config_->sync.retry.max_backoff),
      wakeup_(io),
      etcd_outage_(io, etcd, status_),
      batches_(io),
      tokens_(std::random_device{}()) {
  fence_.keys = outbox_keys(config_->ha.election_prefix);
  if (fencing_.term) {
    fence_.leader_key = fencing_.term->key;
    fence_.epoch = fencing_.term->epoch;
  }
}

void Outbox::on_fenced(const SyncError& error) {
  if (deposed_) return;
  deposed_ = true;
  fencing_.fenced(error);
  wakeup_.notify();
  etcd_outage_.wake();
}

void Outbox::reconfigure(std::shared_ptr<const Config> config) {
  config_.offer(std::move(config));
  wakeup_.notify();
}

std::string Outbox::describe() const {
  if (writer_.status().state() == OutcomeWriterState::backing_off) return writer_.status().describe();
  return status_.describe();
}

void Outbox::wake(std::optional<std::int64_t> lowest_id) {
  schedule_.notified(lowest_id);
  wakeup_.notify();
}

void Outbox::stop() {
  stopping_ = true;
  wakeup_.notify();
  etcd_outage_.stop();
  writer_.stop();
}

void Outbox::abort() {
  pg_.close();
  writer_.abort();
}

void Outbox::set_activity(OutboxState state) {
  // An outage in progress stays the state until its peer works again.
  if (status_.failing_peer() != Peer::unknown) return;
  status_.set(state);
}

// --- the claim loop ----------------------------------------------------------------------------

asio::awaitable<void> Outbox::run() {
  if (dry_run_) {
    co_await dry_run_loop();
  } else {
    Gate writer_gate(io_);
    writer_.expect_more(true);
    spawn(io_, writer_gate, writer_.run(), "outbox outcome writer");
    std::exception_ptr fatal;
    try {
      co_await claim_loop();
    } catch (const SyncError&) {
      fatal = std::current_exception();  // a permission the outbox cannot work without
      stopping_ = true;
      etcd_outage_.stop();
    }
    // Batches in etcd finish (or are cancelled) and their outcomes are written before run() returns.
    co_await batches_.close();
    writer_.expect_more(false);
    writer_.stop();
    co_await writer_gate.close();
    if (fatal) {
      pg_.close();
      std::rethrow_exception(fatal);
    }
  }
  pg_.close();
  status_.clear();
  status_.set(OutboxState::stopped);
}

asio::awaitable<void> Outbox::claim_loop() {
  while (!stopping_) {
    config_.adopt();  // a defined point: between claims
    const Config& config = config_.get();
    if (deposed_) {
      co_await wakeup_.wait(config.sync.sync_interval);  // until the service stops this term
      continue;
    }
    std::optional<SyncError> failure;
    try {
      if (!pg_.connected()) {
        co_await open_database(pg_, config);
        // The claim must walk etcd_wal_pending_idx in id order and stop after batch_size rows. The
        // planner cannot see that (it estimates the head-of-queue test passes 0.5% of rows, and
        // right after a bulk INSERT it believes few rows are pending), so it picks a bitmap scan
        // of every pending row, the per-row subquery on each, and a sort: O(pending) per batch.
        co_await pg_.query("SELECT set_config('enable_bitmapscan', 'off', false), set_config('enable_sort', 'off', false)");
        if (status_.state() != OutboxState::starting) log_info("outbox reconnected to PostgreSQL", {{"component", "outbox"}});
        schedule_.reconnected();
        status_.working(Peer::postgresql);
      }
      if (fence_.barrier_revision == 0) {
        co_await etcd_.ensure_connected();
        // The first barrier: attempts a predecessor (a crashed run, a deposed leader) still has on
        // their way to etcd can no longer land; rows it left in doubt are decided from receipts.
        fence_.barrier_revision = co_await barrier_.raise(fence_);
        if (stats_.etcd_revision < fence_.barrier_revision) stats_.etcd_revision = fence_.barrier_revision;
        etcd_outage_.working();
        log_info("outbox barrier raised", {{"component", "outbox"}, {"barrier_revision", fence_.barrier_revision}});
      }
      set_activity(in_flight_.settled() ? OutboxState::idle : OutboxState::applying);  // coroutine-safe: enum arms
      const auto limit = in_flight_.claim_limit(config.sync.batch_size, backed_up_);
      if (limit == 0) {
        in_flight_.waiting_for_room(true);  // on_written wakes it whenever outcomes free room
        co_await wakeup_.wait(schedule_.sleep_limit(std::chrono::steady_clock::now(), config.sync.sync_interval));
        in_flight_.waiting_for_room(false);
        continue;  // until a batch ends or outcomes are written
      }
      auto attempts = co_await claim(limit);
      if (attempts.empty()) {
        if (in_flight_.settled()) {
          set_activity(OutboxState::idle);
          auto next_ms = co_await next_retry_ms();
          co_await wakeup_.wait(schedule_.idle_wait(std::chrono::steady_clock::now(), config.sync.sync_interval, next_ms));
        } else {
          co_await wakeup_.wait(schedule_.sleep_limit(std::chrono::steady_clock::now(), config.sync.sync_interval));
        }
        continue;
      }
      set_activity(OutboxState::applying);
      in_flight_.batch_started(attempts);
      spawn(io_, batches_, apply_batch(Batch{config_.snapshot(), std::move(attempts)}), "outbox batch", [this] {
        in_flight_.batch_ended();
        wakeup_.notify();
      });
      if (statistics_.due(std::chrono::steady_clock::now(), backed_up_)) co_await check_statistics(pg_, statistics_);
      // A short claim took every due row: claim again only when told of more (a NOTIFY during the
      // claim already counts), not at once. A full one may have left some behind.
      if (!backed_up_) co_await wakeup_.wait(schedule_.sleep_limit(std::chrono::steady_clock::now(), config.sync.sync_interval));
    } catch (const SyncError& error) {
      if (error.kind() == ErrorKind::fenced) {
        on_fenced(error);
        continue;
      }
      if (error.kind() == ErrorKind::permission_denied && error.peer() == Peer::etcd) {
        log_error("the etcd role etcd-sync runs as may not write the outbox's keys under [ha] election_prefix",
                  {{"component", "outbox"}, {"election_prefix", config.ha.election_prefix}, {"error", error.what()}});
        throw;
      }
      failure = error;
    }
    if (failure && !stopping_) {
      if (failure->peer() != Peer::etcd) pg_.close();
      if (failure->peer() == Peer::etcd) {
        etcd_outage_.failed(*failure, config.sync.retry);
        co_await etcd_outage_.ready();
      } else {
        co_await wakeup_.wait(status_.failed(*failure, config.sync.retry));
      }
    }
  }
}

asio::awaitable<std::vector<Attempt>> Outbox::claim(std::int64_t limit) {
  const auto floor = schedule_.begin_claim(std::chrono::steady_clock::now(), config_->sync.sync_interval);
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

asio::awaitable<std::optional<std::int64_t>> Outbox::next_retry_ms() {
  auto statements = one_statement(next_retry_statement(schedule_.floor()));
  auto results = co_await pg_.pipeline(std::move(statements));
  if (results.front().is_null(0, 0)) co_return std::nullopt;
  co_return results.front().int64(0, 0);
}

asio::awaitable<void> Outbox::dry_run_loop() {
  std::int64_t seen = 0;
  while (!stopping_) {
    config_.adopt();
    std::optional<SyncError> failure;
    try {
      if (!pg_.connected()) co_await open_database(pg_, config_.get());
      auto statements = one_statement(dry_run_claim_statement(config_->sync.batch_size));
      auto results = co_await pg_.pipeline(std::move(statements));
      auto claimed = parse_claimed(results.front(), false, 0, 0);
      for (const auto& row : claimed.rows) {
        if (row.id <= seen) continue;
        log_info("dry run: would apply etcd_wal row",
                 {{"component", "outbox"}, {"wal_id", row.id}, {"key", row.key}, {"op", op_name(row)},
                  {"base_revision", base_revision_json(row)}});
        seen = std::max(seen, row.id);
      }
      status_.working(Peer::postgresql);
      set_activity(OutboxState::idle);
      co_await wakeup_.wait(config_->sync.sync_interval);
    } catch (const SyncError& error) {
      pg_.close();
      failure = error;
    }
    if (failure && !stopping_) co_await wakeup_.wait(status_.failed(*failure, config_->sync.retry));
  }
}

// --- one batch: rows in doubt, then Txns ---------------------------------------------------------

asio::awaitable<void> Outbox::apply_batch(Batch batch) {
  const Config& config = *batch.config;
  for (auto& attempt : batch.attempts) {
    in_flight_.doubt_if_suspect(attempt.row);
    admit(attempt, config.etcd.prefix, config.ha.election_prefix);
  }
  for (;;) {
    std::vector<Attempt*> doubtful, fresh;
    for (auto& attempt : batch.attempts) {
      if (attempt.outcome) continue;
      (attempt.in_doubt ? doubtful : fresh).push_back(&attempt);
    }
    if (doubtful.empty() && fresh.empty()) break;
    if (deposed_) break;  // the new leader decides these rows from the receipts
    const bool ready = co_await etcd_outage_.ready();
    if (!ready) break;
    if (!doubtful.empty()) {
      co_await resolve_in_doubt(batch, std::move(doubtful));
      continue;  // rows decided "not applied" are fresh now
    }
    std::vector<const WalRow*> rows;
    for (auto* attempt : fresh) rows.push_back(&attempt->row);
    Gate groups(io_);
    for (const auto& indices : group_rows_for_txns(rows, config.sync.conflict_resolution)) {
      std::vector<Attempt*> group;
      for (auto i : indices) group.push_back(fresh[i]);
      spawn(io_, groups, send_group(batch, std::move(group)), "outbox Txn");
    }
    co_await groups.close();
  }
  // Rows left without an outcome (stopping) stay pending, in doubt: the next start decides them.
  auto decided = account(batch);
  in_flight_.batch_decided(batch.attempts);
  writer_.add(std::move(decided));
}

asio::awaitable<void> Outbox::resolve_in_doubt(const Batch& batch, std::vector<Attempt*> rows) {
  const Config& config = *batch.config;
  std::vector<const WalRow*> wal_rows;
  for (auto* attempt : rows) wal_rows.push_back(&attempt->row);
  try {
    auto resolution = co_await barrier_.resolve(wal_rows, config.sync.conflict_resolution, fence_);
    fence_.barrier_revision = std::max(fence_.barrier_revision, barrier_.revision());
    etcd_outage_.working();
    for (std::size_t i = 0; i < rows.size(); ++i) {
      auto& attempt = *rows[i];
      const auto& verdict = resolution.verdicts[i];
      LogFields fields{{"component", "outbox"}, {"wal_id", attempt.row.id}, {"key", attempt.row.key},
                       {"attempt_revision", *attempt.row.attempt_revision}};
      switch (verdict.kind) {
        case DoubtVerdict::Kind::applied:
          attempt.outcome = applied_outcome(attempt.row, verdict.revision, resolution.key_existed[i]);
          fields.push_back({"revision", verdict.revision});
          log_info("etcd_wal row in doubt had been applied", fields);
          break;
        case DoubtVerdict::Kind::not_applied:
          attempt.in_doubt = false;
          log_debug("etcd_wal row in doubt had not been applied; sending it", fields);
          break;
        case DoubtVerdict::Kind::unknown:
          attempt.outcome = unknown_outcome(attempt.row, resolution.log);
          break;
      }
      in_flight_.doubt_decided(attempt.row.id);
    }
  } catch (const SyncError& error) {
    if (error.kind() == ErrorKind::permission_denied && error.peer() == Peer::etcd) throw;
    if (error.kind() == ErrorKind::fenced) {
      on_fenced(error);
    } else {
      etcd_outage_.failed(error, config.sync.retry);
    }
  }
}

asio::awaitable<void> Outbox::send_group(const Batch& batch, std::vector<Attempt*> group) {
  const Config& config = *batch.config;
  const auto resolution = config.sync.conflict_resolution;
  while (!group.empty() && !stopping_ && !deposed_) {
    std::vector<const WalRow*> rows;
    for (auto* attempt : group) rows.push_back(&attempt->row);
    const TxnFence fence = fence_;
    std::optional<SyncError> failure;
    etcdserverpb::TxnResponse response;
    try {
      auto started = std::chrono::steady_clock::now();
      failpoint("outbox.before_txn");
      response = co_await etcd_.txn(build_txn(rows, resolution, fence));
      failpoint("outbox.after_txn");
      stats_.wal_apply_seconds.observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
      etcd_outage_.working();
      if (response.header().revision() > stats_.etcd_revision) stats_.etcd_revision = response.header().revision();
    } catch (const SyncError& error) {
      failure = error;
    }
    // What the answer or the error means for the group: txn_group.hpp.
    GroupNext next = GroupNext::done;
    TxnVerdict verdict;
    if (failure) {
      next = after_txn_error(group, *failure, config.sync.retry.max_attempts);
    } else {
      verdict = decide_txn(rows, response, resolution, fence);
      next = after_txn_answer(group, verdict);
    }
    switch (next) {
      case GroupNext::done:
        co_return;
      case GroupNext::resend:
        continue;  // without the rows decided
      case GroupNext::fenced:
        // A barrier moved the fence (this outbox's own, deciding rows in doubt): nothing was
        // applied; send again with the new one.
        fence_.barrier_revision = std::max(fence_.barrier_revision, verdict.barrier_revision);
        continue;
      case GroupNext::one_by_one:
        for (auto* attempt : group) co_await send_group(batch, std::vector<Attempt*>(1, attempt));
        co_return;
      case GroupNext::outage:
        // The rows are in doubt: the receipts will tell, after a barrier.
        etcd_outage_.failed(*failure, config.sync.retry);
        co_return;
      case GroupNext::deposed:
        on_fenced(deposed_error(fence));  // nothing was applied; the new leader decides these rows
        co_return;
    }
  }
}

// --- outcomes ----------------------------------------------------------------------------------

std::vector<DecidedRow> Outbox::account(Batch& batch) {
  const Config& config = *batch.config;
  row_backoff_.set_limits(config.sync.retry.initial_backoff, config.sync.retry.max_backoff);
  std::vector<DecidedRow> decided;
  for (auto& attempt : batch.attempts) {
    if (!attempt.outcome) continue;
    const auto& row = attempt.row;
    const auto& outcome = *attempt.outcome;
    std::chrono::milliseconds delay{0};
    LogFields fields{{"component", "outbox"}, {"wal_id", row.id}, {"key", row.key}, {"attempt", row.retry_count + 1}};
    switch (outcome.status) {
      case WalStatus::success:
        ++stats_.wal_success;
        fields.push_back({"revision", outcome.revision});
        log_debug(outcome.nothing_deleted ? "etcd_wal delete found the key already absent" : "etcd_wal row applied",
                  fields);
        break;
      case WalStatus::conflict:
        ++stats_.wal_conflict;
        fields.push_back({"error", outcome.error_message});
        log_info("etcd_wal conflict: etcd kept its value", fields);
        break;
      case WalStatus::failed:
        ++stats_.wal_failed;
        fields.push_back({"error", outcome.error_message});
        log_warn("etcd_wal row failed", fields);
        break;
      case WalStatus::retry: {
        ++stats_.wal_retries;
        delay = row_backoff_.delay(row.retry_count + 1);
        schedule_.retry_at(std::chrono::steady_clock::now() + delay);
        fields.push_back({"error", outcome.error_message});
        fields.push_back({"delay_ms", delay.count()});
        log_info("etcd_wal row will be retried", fields);
        break;
      }
    }
    if (outcome.conflict_resolved) ++stats_.conflicts_resolved;
    decided.push_back({row, outcome, delay});
  }
  return decided;
}

void Outbox::on_written(OutcomesWritten written) {
  // A dropped outcome is not written anywhere else. If the id comes back, that row is decided from
  // the receipts (InFlight::doubt_if_suspect), so a Txn that did land is not sent twice.
  for (const auto* d : in_flight_.written(written))
    log_warn("etcd_wal outcome dropped: the row is gone or changed since it was claimed",
             {{"component", "outbox"}, {"wal_id", d->row.id}, {"key", d->row.key},
              {"status", to_string(d->outcome.status)}, {"revision", d->outcome.revision}});
  switch (in_flight_.after_written(written)) {
    case InFlight::AfterWritten::wake:
      wakeup_.notify();  // the next rows of these keys (or retried rows) may be claimed now
      break;
    case InFlight::AfterWritten::idle:
      set_activity(OutboxState::idle);
      break;
    case InFlight::AfterWritten::nothing:
      break;
  }
}

}  // namespace etcd_sync
