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
constexpr const char* kLockNotAvailable = "55P03";  // PostgreSQL docs, Appendix A: lock_not_available
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
      etcd_waiters_(io),
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
  etcd_waiters_.notify_all();
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
  etcd_waiters_.notify_all();
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
      etcd_waiters_.notify_all();
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
        on_etcd_working();
        log_info("outbox barrier raised", {{"component", "outbox"}, {"barrier_revision", fence_.barrier_revision}});
      }
      set_activity(unsettled_ids_.empty() ? OutboxState::idle : OutboxState::applying);  // coroutine-safe: enum arms
      const auto limit =
          ClaimSchedule::claim_limit(config.sync.batch_size, unsettled_ids_.size(), batches_applying_, backed_up_);
      if (limit == 0) {
        waiting_for_room_ = true;  // on_written wakes it whenever outcomes free room
        co_await wakeup_.wait(schedule_.sleep_limit(std::chrono::steady_clock::now(), config.sync.sync_interval));
        waiting_for_room_ = false;
        continue;  // until a batch ends or outcomes are written
      }
      auto attempts = co_await claim(limit);
      if (attempts.empty()) {
        if (unsettled_ids_.empty()) {
          set_activity(OutboxState::idle);
          auto next_ms = co_await next_retry_ms();
          co_await wakeup_.wait(schedule_.idle_wait(std::chrono::steady_clock::now(), config.sync.sync_interval, next_ms));
        } else {
          co_await wakeup_.wait(schedule_.sleep_limit(std::chrono::steady_clock::now(), config.sync.sync_interval));
        }
        continue;
      }
      set_activity(OutboxState::applying);
      for (const auto& a : attempts) unsettled_ids_.insert(a.row.id);
      ++batches_applying_;
      spawn(io_, batches_, apply_batch(Batch{config_.snapshot(), std::move(attempts)}), "outbox batch", [this] {
        --batches_applying_;
        wakeup_.notify();
      });
      // Once the role is known not to own etcd_wal, a check could only say so again.
      if (backed_up_ && !analyze_refused_ && std::chrono::steady_clock::now() >= next_statistics_check_)
        co_await check_statistics();
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
        on_etcd_outage(*failure, config);
        co_await etcd_ready();
      } else {
        co_await wakeup_.wait(status_.failed(*failure, config.sync.retry));
      }
    }
  }
}

asio::awaitable<std::vector<Outbox::Attempt>> Outbox::claim(std::int64_t limit) {
  const auto floor = schedule_.begin_claim(std::chrono::steady_clock::now(), config_->sync.sync_interval);
  if (stats_.etcd_revision == 0) stats_.etcd_revision = (co_await etcd_.status()).header().revision();
  const auto token = static_cast<std::int64_t>(tokens_() >> 1);
  const auto revision = stats_.etcd_revision;
  auto statements = one_statement(claim_statement(limit, unsettled_ids_, floor, revision, token));
  fencing_.append(statements);
  auto results = co_await pg_.pipeline(std::move(statements));
  auto claimed = parse_claimed(results.front(), true, token, revision);
  backed_up_ = schedule_.end_claim(claimed.rows.size(), limit, claimed.lowest);
  std::vector<Attempt> attempts;
  attempts.reserve(claimed.rows.size());
  for (auto& row : claimed.rows) attempts.push_back({std::move(row), std::nullopt, false});
  co_return attempts;
}

asio::awaitable<void> Outbox::check_statistics() {
  using clock = std::chrono::steady_clock;
  next_statistics_check_ = clock::now() + ClaimSchedule::kStatisticsCheckInterval;
  std::vector<PgStatement> statements{pending_sample_statement(ClaimSchedule::kPendingSample),
                                      planner_pending_estimate_statement(),
                                      may_analyze_statement()};
  auto results = co_await pg_.pipeline(std::move(statements));
  const auto counted = results[0].int64(0, 0);
  std::optional<std::int64_t> estimate;
  if (results[1].rows() > 0) estimate = explained_rows(results[1].text(0, 0));
  if (!estimate || !ClaimSchedule::statistics_stale(*estimate, counted)) co_return;
  LogFields fields{{"component", "outbox"}, {"planner_estimate", *estimate}, {"pending_counted", counted}};
  if (!results[2].boolean(0, 0)) {
    log_warn("PostgreSQL's statistics of etcd_wal predate the rows now pending, and this role may not ANALYZE "
             "etcd_wal (only its owner may): claims walk the pending rows until autovacuum analyzes it; run "
             "ANALYZE etcd_wal after large INSERTs",
             fields);
    analyze_refused_ = true;
    co_return;
  }
  const auto began = clock::now();
  try {
    std::string analyze = kAnalyzeWal;
    co_await pg_.execute_script(std::move(analyze));
  } catch (const SyncError& error) {
    if (error.sqlstate() != kLockNotAvailable) throw;  // a VACUUM holds it
    log_debug("ANALYZE etcd_wal waits for a lock; trying again at the next check", fields);
    co_return;
  }
  next_statistics_check_ = clock::now() + ClaimSchedule::kAnalyzeInterval;
  fields.push_back({"elapsed_ms", std::chrono::duration_cast<std::chrono::milliseconds>(clock::now() - began).count()});
  log_info("analyzed etcd_wal: PostgreSQL's statistics predated the rows now pending", fields);
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
    auto& row = attempt.row;
    if (auto suspect = suspect_ids_.find(row.id); suspect != suspect_ids_.end()) {
      // An outcome for this id was dropped: the row may be the one whose Txn that was.
      row.attempt_revision = std::min(row.attempt_revision.value_or(suspect->second), suspect->second);
    }
    if (auto reason = reject_reason(row, config.etcd.prefix, config.ha.election_prefix)) {
      attempt.outcome = WalOutcome{WalStatus::failed, 0, *reason, false, false, false};
    } else if (row.attempt_revision) {
      attempt.in_doubt = true;
    }
  }
  for (;;) {
    std::vector<Attempt*> doubtful, fresh;
    for (auto& attempt : batch.attempts) {
      if (attempt.outcome) continue;
      (attempt.in_doubt ? doubtful : fresh).push_back(&attempt);
    }
    if (doubtful.empty() && fresh.empty()) break;
    if (deposed_) break;  // the new leader decides these rows from the receipts
    const bool ready = co_await etcd_ready();
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
  for (const auto& attempt : batch.attempts)
    if (!attempt.outcome) unsettled_ids_.erase(attempt.row.id);
  writer_.add(std::move(decided));
}

asio::awaitable<void> Outbox::resolve_in_doubt(const Batch& batch, std::vector<Attempt*> rows) {
  const Config& config = *batch.config;
  std::vector<const WalRow*> wal_rows;
  for (auto* attempt : rows) wal_rows.push_back(&attempt->row);
  try {
    auto resolution = co_await barrier_.resolve(wal_rows, config.sync.conflict_resolution, fence_);
    fence_.barrier_revision = std::max(fence_.barrier_revision, barrier_.revision());
    on_etcd_working();
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
      suspect_ids_.erase(attempt.row.id);
    }
  } catch (const SyncError& error) {
    if (error.kind() == ErrorKind::permission_denied && error.peer() == Peer::etcd) throw;
    if (error.kind() == ErrorKind::fenced) {
      on_fenced(error);
    } else {
      on_etcd_outage(error, config);
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
      on_etcd_working();
      if (response.header().revision() > stats_.etcd_revision) stats_.etcd_revision = response.header().revision();
    } catch (const SyncError& error) {
      failure = error;
    }
    if (failure) {
      switch (classify_txn_error(*failure)) {
        case TxnErrorKind::outage:
          // The Txn may or may not have been applied: the receipts will tell, after a barrier. The
          // rows' attempts are not spent.
          for (auto* attempt : group) {
            attempt->in_doubt = true;
            if (!attempt->row.attempt_revision) attempt->row.attempt_revision = attempt->row.claim_revision;
          }
          on_etcd_outage(*failure, config);
          co_return;
        case TxnErrorKind::row_permanent:
        case TxnErrorKind::row_transient:
          if (group.size() == 1) {
            group.front()->outcome = decide_row_error(group.front()->row, *failure, config.sync.retry.max_attempts);
            co_return;
          }
          // etcd refused the group (a row it cannot take, no permission for one key, limits below
          // its defaults): each row alone gets its own answer.
          for (auto* attempt : group) co_await send_group(batch, std::vector<Attempt*>(1, attempt));
          co_return;
      }
    }
    auto verdict = decide_txn(rows, response, resolution, fence);
    if (verdict.deposed) {
      on_fenced(deposed_error(fence));  // nothing was applied; the new leader decides these rows
      co_return;
    }
    if (verdict.fenced) {
      // A barrier moved the fence (this outbox's own, deciding rows in doubt): nothing was
      // applied; send again with the new one.
      fence_.barrier_revision = std::max(fence_.barrier_revision, verdict.barrier_revision);
      continue;
    }
    std::vector<Attempt*> again;
    for (std::size_t i = 0; i < group.size(); ++i) {
      if (verdict.outcomes[i])
        group[i]->outcome = std::move(*verdict.outcomes[i]);
      else
        again.push_back(group[i]);
    }
    if (again.size() == group.size()) {
      for (auto* attempt : group) co_await send_group(batch, std::vector<Attempt*>(1, attempt));  // no conflict told apart
      co_return;
    }
    group = std::move(again);
  }
}

// --- etcd outages ------------------------------------------------------------------------------

namespace {

/// How often a waiter asks etcd for its Status during an outage: etcd elects a new leader in about
/// a second (its default election timeout is 1000 ms), and the outbox should follow within 2 s.
constexpr std::chrono::milliseconds kOutageProbeInterval{250};

}  // namespace

void Outbox::on_etcd_outage(const SyncError& error, const Config& config) {
  // Concurrent failures of one outage count once: a new backoff starts only after the last one.
  const auto now = std::chrono::steady_clock::now();
  if (now < etcd_retry_at_) return;
  SyncError named = error.peer() == Peer::unknown ? SyncError(error.kind(), error.what(), Peer::etcd) : error;
  etcd_retry_at_ = now + status_.failed(named, config.sync.retry);
  outage_term_ = etcd_.raft_term();
}

void Outbox::on_etcd_working() {
  if (status_.failing_peer() != Peer::etcd) return;
  status_.working(Peer::etcd);
  log_info("outbox reaches etcd again", {{"component", "outbox"}});
  status_.set(OutboxState::applying);
}

asio::awaitable<bool> Outbox::etcd_ready() {
  while (!stopping_ && std::chrono::steady_clock::now() < etcd_retry_at_) {
    if (asking_etcd_) {
      co_await etcd_waiters_.wait_until(etcd_retry_at_);
      continue;
    }
    asking_etcd_ = true;
    const auto ask_at = std::min(etcd_retry_at_, std::chrono::steady_clock::now() + kOutageProbeInterval);
    co_await etcd_waiters_.wait_until(ask_at);
    bool answered = false;
    if (!stopping_ && std::chrono::steady_clock::now() < etcd_retry_at_) answered = co_await etcd_has_leader();
    asking_etcd_ = false;
    if (answered) {
      etcd_retry_at_ = std::chrono::steady_clock::now();
      etcd_waiters_.notify_all();
    }
  }
  co_return !stopping_;
}

asio::awaitable<bool> Outbox::etcd_has_leader() {
  bool leader = false;
  try {
    // Right after a leader dies its followers still name it until their election timeout, and a
    // Txn sent then is forwarded to it and waits out etcd's request timeout (about 7 s): only a
    // leader of a newer raft term than the outage began in counts. An outage that ends without an
    // election waits out its backoff.
    const auto response = co_await etcd_.status();
    leader = response.leader() != 0 && static_cast<std::int64_t>(response.raftterm()) > outage_term_;
  } catch (const SyncError&) {
    // still down: the backoff goes on, and the client has moved to its next endpoint
  }
  co_return leader;
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
  for (const auto& d : written.rows) {
    unsettled_ids_.erase(d.row.id);
    if (written.abandoned || written.updated.count(d.row.id)) continue;
    // The row is gone or changed since it was claimed (a PostgreSQL failover that lost it, or an
    // application that edited it): its outcome is not written anywhere else. If the id comes back,
    // that row is decided from the receipts, so a Txn that did land is not sent twice.
    log_warn("etcd_wal outcome dropped: the row is gone or changed since it was claimed",
             {{"component", "outbox"}, {"wal_id", d.row.id}, {"key", d.row.key},
              {"status", to_string(d.outcome.status)}, {"revision", d.outcome.revision}});
    suspect_ids_[d.row.id] = d.row.attempt_revision.value_or(d.row.claim_revision);
  }
  if (written.more_pending || written.abandoned || batches_applying_ > 0 || waiting_for_room_) {
    wakeup_.notify();  // the next rows of these keys (or retried rows) may be claimed now
  } else if (unsettled_ids_.empty()) {
    set_activity(OutboxState::idle);
  }
}

}  // namespace etcd_sync
