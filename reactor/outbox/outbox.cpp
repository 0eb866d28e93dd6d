#include "reactor/outbox/outbox.hpp"

#include "reactor/keys/keys.hpp"
#include "reactor/loop/logging.hpp"
#include "reactor/service/database.hpp"

#include <boost/asio/co_spawn.hpp>

#include <algorithm>
#include <limits>


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
}  // namespace

Outbox::Outbox(asio::io_context& io, const Config& config, EtcdClient& etcd, SyncStats& stats, bool dry_run)
    : io_(io),
      config_(config),
      etcd_(etcd),
      stats_(stats),
      dry_run_(dry_run),
      pg_(io, config.postgresql.conninfo, "outbox"),
      outcome_pg_(io, config.postgresql.conninfo, "outbox outcomes"),
      backoff_(config.sync.retry.initial_backoff, config.sync.retry.max_backoff),
      outcome_backoff_(config.sync.retry.initial_backoff, config.sync.retry.max_backoff),
      row_backoff_(config.sync.retry.initial_backoff, config.sync.retry.max_backoff),
      wakeup_(io),
      writer_wakeup_(io) {}

void Outbox::set_state(OutboxState state, const LogFields& fields) {
  if (state == state_) return;
  LogFields all{{"component", "outbox"}, {"from", to_string(state_)}, {"to", to_string(state)}};
  all.insert(all.end(), fields.begin(), fields.end());
  state_ = state;
  // idle <-> applying flips with every batch: those are debug lines, the rest are worth a look.
  bool routine = (state == OutboxState::idle || state == OutboxState::applying);
  log(state == OutboxState::backing_off ? LogLevel::warn : routine ? LogLevel::debug : LogLevel::info,
      "outbox state changed", all);
}

void Outbox::wake(std::optional<std::int64_t> lowest_id) {
  const std::int64_t from = lowest_id.value_or(0);
  scan_floor_ = std::min(scan_floor_, from);
  notified_during_claim_ = std::min(notified_during_claim_, from);
  wakeup_.notify();
}

void Outbox::stop() {
  stopping_ = true;
  wakeup_.notify();
  writer_wakeup_.notify();
}

namespace {
/// The completion of a coroutine the outbox spawns: an exception there is a bug, logged.
void log_unexpected(std::exception_ptr failure, const char* what) {
  if (!failure) return;
  try {
    std::rethrow_exception(failure);
  } catch (const std::exception& e) {
    log_error(what, {{"component", "outbox"}, {"error", e.what()}});
  }
}
}  // namespace

asio::awaitable<void> Outbox::run() {
  std::int64_t dry_run_seen = 0;
  if (!dry_run_) {
    writer_running_ = true;
    asio::co_spawn(io_, write_loop(), [this](std::exception_ptr failure) {
      log_unexpected(failure, "outbox outcome writer failed unexpectedly");
      writer_running_ = false;
      wakeup_.notify();
    });
  }
  while (!stopping_) {
    std::optional<SyncError> failure;
    try {
      if (!pg_.connected()) {
        co_await open_database(pg_, config_);
        // fetch_due must walk etcd_wal_pending_idx in id order and stop after batch_size rows. The
        // planner cannot see that (it estimates the head-of-queue test passes 0.5% of rows, and
        // right after a bulk INSERT it believes few rows are pending), so it picks a bitmap scan
        // of every pending row, the per-row subquery on each, and a sort: O(pending) per batch.
        co_await pg_.query("SELECT set_config('enable_bitmapscan', 'off', false), set_config('enable_sort', 'off', false)");
        if (state_ != OutboxState::starting) log_info("outbox reconnected to PostgreSQL", {{"component", "outbox"}});
        scan_floor_ = 0;
      }
      backoff_.reset();
      last_error_.clear();
      // Sweep at once after (re)connecting: notifications sent meanwhile were lost.
      while (!stopping_) {
        if (unsettled_ids_.size() >= unsettled_capacity() || batches_applying_ >= kBatchesApplying) {
          waiting_for_room_ = true;
          co_await wakeup_.wait(sleep_limit());  // until a batch ends or outcomes are written
          waiting_for_room_ = false;
          continue;
        }
        auto batch = co_await fetch_due();
        if (dry_run_) {
          std::vector<Attempt> fresh;
          for (auto& a : batch)
            if (a.row.id > dry_run_seen) fresh.push_back(std::move(a));
          batch = std::move(fresh);
        }
        if (batch.empty()) {
          if (unsettled_ids_.empty()) {
            set_state(OutboxState::idle);
            co_await wakeup_.wait(co_await idle_wait());
          } else {
            co_await wakeup_.wait(sleep_limit());  // a NOTIFY, or outcomes written
          }
          continue;
        }
        set_state(OutboxState::applying);
        if (dry_run_) {
          for (const auto& a : batch) {
            log_info("dry run: would apply etcd_wal row",
                     {{"component", "outbox"}, {"wal_id", a.row.id}, {"key", a.row.key},
                      {"op", a.row.value ? "put" : "delete"},
                      {"base_revision", base_revision_json(a.row)}});
            dry_run_seen = std::max(dry_run_seen, a.row.id);
          }
          continue;
        }
        const bool full = batch.size() >= static_cast<std::size_t>(config_.sync.batch_size);
        for (const auto& a : batch) unsettled_ids_.insert(a.row.id);
        ++batches_applying_;
        asio::co_spawn(io_, apply_batch(std::move(batch)), [this](std::exception_ptr failure) {
          log_unexpected(failure, "outbox batch failed unexpectedly");
          --batches_applying_;
          writer_wakeup_.notify();
          if (waiting_for_room_) wakeup_.notify();
        });
        // A short batch took every due row: claim again only when told of more (a NOTIFY during
        // the claim already counts), not at once. A full batch may have left some behind.
        if (!full) co_await wakeup_.wait(sleep_limit());
      }
    } catch (const SyncError& error) {
      failure = error;
    }
    if (failure && !stopping_) co_await wakeup_.wait(on_failure(*failure));
  }
  // Batches still in etcd finish and their outcomes are written before run() returns.
  while (batches_applying_ > 0 || writer_running_) co_await wakeup_.wait(std::chrono::seconds(1));
  pg_.close();
  outcome_pg_.close();
  set_state(OutboxState::stopped);
}

asio::awaitable<void> Outbox::write_loop() {
  while (true) {
    if (decided_.empty()) {
      if (stopping_ && batches_applying_ == 0) co_return;
      co_await writer_wakeup_.wait(config_.sync.sync_interval);
      continue;
    }
    std::vector<Attempt> writing = std::move(decided_);
    decided_.clear();
    std::optional<SyncError> failure;
    bool more_pending = true;
    try {
      if (!outcome_pg_.connected()) {
        if (stopping_) throw SyncError(ErrorKind::cancelled, "stopping", Peer::postgresql);
        co_await open_database(outcome_pg_, config_);
      }
      auto results = co_await outcome_pg_.pipeline(outcome_statements(writing));
      more_pending = results.back().boolean(0, 0);
    } catch (const SyncError& error) {
      failure = error;
    }
    if (!failure || stopping_) {
      if (failure) {
        // The rows stay pending with their attempt recorded: the next run checks etcd for them.
        log_warn("outbox stopped before writing outcomes; the next start checks these rows against etcd",
                 {{"component", "outbox"}, {"rows", writing.size()}, {"error", failure->what()}});
      }
      outcome_backoff_.reset();
      for (const auto& a : writing) unsettled_ids_.erase(a.row.id);
      if (more_pending || waiting_for_room_ || failure) {
        wakeup_.notify();  // the next rows of these keys (or retried rows) may be claimed now
      } else if (unsettled_ids_.empty() && batches_applying_ == 0 && state_ == OutboxState::applying) {
        set_state(OutboxState::idle);  // the claim loop waits for a NOTIFY and has nothing in flight
      }
      continue;
    }
    outcome_pg_.close();
    stats_.last_error = failure->what();
    // Once per outage at warn: the first failure after a working write is news, retries are not.
    log(outcome_backoff_.attempts() == 0 ? LogLevel::warn : LogLevel::debug, "outbox could not write outcomes; will retry",
        {{"component", "outbox"}, {"rows", writing.size()}, {"error", failure->what()},
         {"attempt", outcome_backoff_.attempts() + 1}});
    // Keep them, oldest first, for the next write; wait out the backoff (a stop cuts it short).
    for (auto& a : decided_) writing.push_back(std::move(a));
    decided_ = std::move(writing);
    outcome_backoff_.set_limits(config_.sync.retry.initial_backoff, config_.sync.retry.max_backoff);
    auto until = std::chrono::steady_clock::now() + outcome_backoff_.next();
    while (!stopping_ && std::chrono::steady_clock::now() < until)
      co_await writer_wakeup_.wait(std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now()) +
                                   std::chrono::milliseconds(1));
  }
}

std::chrono::milliseconds Outbox::on_failure(const SyncError& error) {
  pg_.close();
  stats_.last_error = error.what();
  if (state_ != OutboxState::backing_off)
    set_state(OutboxState::backing_off, {{"error", error.what()}, {"kind", to_string(error.kind())}});
  else if (last_error_ != error.what())
    log_warn("outbox still backing off", {{"component", "outbox"}, {"error", error.what()}});
  last_error_ = error.what();
  backoff_.set_limits(config_.sync.retry.initial_backoff, config_.sync.retry.max_backoff);
  return backoff_.next();
}

asio::awaitable<std::chrono::milliseconds> Outbox::idle_wait() {
  // Sleep until the sweep, or until the earliest backed-off row falls due, whichever is first. A
  // backed-off row is pending, so its id is at least the floor: the scan skips what lies below.
  auto result = co_await pg_.query(
      "SELECT ceil(extract(epoch FROM min(next_attempt_at) - clock_timestamp()) * 1000)::bigint "
      "FROM etcd_wal WHERE status = 'pending' AND id >= $1 AND next_attempt_at > clock_timestamp()",
      pg_params(PgParam::int64(scan_floor_)));
  auto wait = config_.sync.sync_interval;
  if (!result.is_null(0, 0)) wait = std::min(wait, std::chrono::milliseconds(std::max<std::int64_t>(1, result.int64(0, 0))));
  co_return wait;
}

namespace {
// The head of each key's queue: the oldest pending row of every key, if it is due, in id order,
// from id $3 on. One row per key is in flight at a time, so rows of one key never overtake each
// other, and each row's attempt_revision is exact (it is recorded after the previous row of its key
// ended). Rows claimed earlier whose outcome is not yet written ($2) are still pending: they, and
// so their keys, are skipped. The head test looks at every pending row of the key, below $3 too.
const std::string head_of_queue =
    "FROM etcd_wal w "
    "WHERE w.status = 'pending' AND w.id >= $3 "
    "  AND (w.next_attempt_at IS NULL OR w.next_attempt_at <= clock_timestamp()) "
    "  AND w.id <> ALL($2::bigint[]) "
    "  AND w.id = (SELECT min(p.id) FROM etcd_wal p WHERE p.status = 'pending' AND p.key = w.key) "
    "ORDER BY w.id LIMIT $1";
const std::string base_is_tombstone =
    "EXISTS (SELECT 1 FROM etcd e WHERE e.key = m.key AND e.revision = m.revision AND e.tombstone)";
}  // namespace

std::vector<PgStatement> Outbox::claim_statements(std::int64_t limit, std::int64_t floor) {
  std::vector<std::optional<std::string>> unsettled;
  unsettled.reserve(unsettled_ids_.size());
  for (auto id : unsettled_ids_) unsettled.push_back(std::to_string(id));
  std::vector<PgStatement> statements;
  if (dry_run_) {
    statements.push_back({"SELECT m.id, m.key, m.value, m.value_bytes, m.revision, m.retry_count, m.attempt_revision, " +
                              base_is_tombstone + " FROM (SELECT w.* " + head_of_queue + ") m",
                          {PgParam::int64(limit), PgParam::text(pg_array(unsettled)), PgParam::int64(0)}});
    return statements;
  }
  // Taking the rows also records that they may reach etcd, with etcd's revision before the attempt
  // (rows already in doubt keep theirs): after a crash the next run checks etcd instead of applying
  // them blindly a second time. The row as fetched says whether it was in doubt. The statement also
  // returns the lowest pending id from the floor on (the next floor), on every row, or on a row of
  // its own when nothing was claimed.
  statements.push_back(
      {"WITH lowest AS (SELECT min(id) AS id FROM etcd_wal WHERE status = 'pending' AND id >= $3), "
       "due AS (SELECT w.id, w.attempt_revision AS in_doubt_since " + head_of_queue + "), "
       "marked AS (UPDATE etcd_wal t SET attempt_revision = coalesce(t.attempt_revision, $4::bigint) FROM due "
       "  WHERE t.id = due.id "
       "  RETURNING t.id, t.key, t.value, t.value_bytes, t.revision, t.retry_count, due.in_doubt_since) "
       "SELECT m.*, " + base_is_tombstone + ", l.id FROM lowest l LEFT JOIN marked m ON true ORDER BY m.id",
       {PgParam::int64(limit), PgParam::text(pg_array(unsettled)), PgParam::int64(floor),
        PgParam::int64(stats_.etcd_revision)},
       true});
  return statements;
}

asio::awaitable<std::vector<Outbox::Attempt>> Outbox::fetch_due() {
  const auto room = static_cast<std::int64_t>(unsettled_capacity() - unsettled_ids_.size());  // run() checked > 0
  const auto limit = std::min<std::int64_t>(config_.sync.batch_size, room);
  const auto now = std::chrono::steady_clock::now();
  if (earliest_retry_ && now >= *earliest_retry_) earliest_retry_.reset();  // this claim takes it
  if (now >= next_full_scan_) {
    scan_floor_ = 0;
    next_full_scan_ = now + config_.sync.sync_interval;
  }
  if (!dry_run_ && stats_.etcd_revision == 0) stats_.etcd_revision = (co_await etcd_.status()).header().revision();
  const std::int64_t floor = scan_floor_;
  notified_during_claim_ = std::numeric_limits<std::int64_t>::max();
  auto results = co_await pg_.pipeline(claim_statements(limit, floor));
  const PgResult& result = results.back();
  if (!dry_run_) {
    std::int64_t lowest = std::numeric_limits<std::int64_t>::max();
    if (result.rows() > 0 && !result.is_null(0, 8)) lowest = result.int64(0, 8);
    scan_floor_ = std::min(lowest, notified_during_claim_);
  }
  std::vector<Attempt> batch;
  batch.reserve(result.rows());
  for (int r = 0; r < result.rows(); ++r) {
    if (result.is_null(r, 0)) continue;  // the floor's own row: nothing was claimed
    WalRow row;
    row.id = result.int64(r, 0);
    row.key = std::string(result.text(r, 1));
    if (!result.is_null(r, 2))
      row.value = std::string(result.text(r, 2));
    else if (!result.is_null(r, 3))
      row.value = result.bytea(r, 3);
    if (!result.is_null(r, 4)) row.revision = result.int64(r, 4);
    row.retry_count = static_cast<int>(result.int64(r, 5));
    if (!result.is_null(r, 6)) row.attempt_revision = result.int64(r, 6);
    row.base_is_tombstone = result.boolean(r, 7);
    batch.push_back({std::move(row), std::nullopt});
  }
  co_return batch;
}

asio::awaitable<void> Outbox::apply_batch(std::vector<Attempt> batch) {
  // Rows etcd must not see fail at once. Rows whose last attempt is in doubt are checked and sent
  // alone; the rest (distinct keys: one row per key is claimed) share Txns, sent concurrently.
  const auto resolution = config_.sync.conflict_resolution;
  std::vector<Attempt*> fresh;
  std::vector<const WalRow*> fresh_rows;
  int running = 0;
  Wakeup done(io_);
  auto spawn = [this, &running, &done](asio::awaitable<void> work) {
    ++running;
    asio::co_spawn(io_, std::move(work), [&running, &done](std::exception_ptr failure) {
      log_unexpected(failure, "outbox attempt failed unexpectedly");
      --running;
      done.notify();
    });
  };
  for (auto& attempt : batch) {
    if (auto reason = reject_reason(attempt.row, config_.etcd.prefix)) {
      attempt.outcome = WalOutcome{WalStatus::failed, 0, *reason, false, false};
    } else if (attempt.row.attempt_revision) {
      spawn(apply_in_doubt(attempt));
    } else {
      fresh.push_back(&attempt);
      fresh_rows.push_back(&attempt.row);
    }
  }
  for (const auto& indices : group_rows_for_txns(fresh_rows, resolution)) {
    std::vector<Attempt*> group;
    for (auto i : indices) group.push_back(fresh[i]);
    spawn(apply_group(std::move(group)));
  }
  while (running > 0) co_await done.wait(std::chrono::seconds(1));
  // A row left without an outcome (only after a bug was logged above) is released when the
  // others are written, and claimed again as in doubt.
  account(batch);
  for (auto& attempt : batch) decided_.push_back(std::move(attempt));
  writer_wakeup_.notify();
}

asio::awaitable<void> Outbox::apply_in_doubt(Attempt& attempt) {
  // An earlier attempt may have reached etcd (timeout, crash): look before writing again.
  std::optional<SyncError> failure;
  try {
    etcdserverpb::RangeRequest read;
    read.set_key(attempt.row.key);
    auto current = co_await etcd_.range(read);
    std::optional<mvccpb::KeyValue> kv;
    if (current.kvs_size() > 0) kv = current.kvs(0);
    attempt.outcome = decide_unknown_attempt(attempt.row, kv, current.header().revision(), config_.sync.conflict_resolution);
  } catch (const SyncError& error) {
    failure = error;
  }
  if (failure) {
    attempt.outcome = decide_error(attempt.row, *failure, config_.sync.retry.max_attempts);
  } else if (!attempt.outcome) {
    co_await apply_group(std::vector<Attempt*>(1, &attempt));
  }
}

asio::awaitable<void> Outbox::apply_group(std::vector<Attempt*> group) {
  const auto resolution = config_.sync.conflict_resolution;
  while (!group.empty()) {
    std::vector<const WalRow*> rows;
    for (auto* attempt : group) rows.push_back(&attempt->row);
    std::optional<SyncError> failure;
    etcdserverpb::TxnResponse response;
    try {
      auto started = std::chrono::steady_clock::now();
      response = co_await etcd_.txn(build_txn(rows, resolution));
      stats_.wal_apply_seconds.observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
      stats_.etcd_up = true;
      if (response.header().revision() > stats_.etcd_revision) stats_.etcd_revision = response.header().revision();
    } catch (const SyncError& error) {
      failure = error;
    }
    if (failure) {
      if (group.size() == 1 || worth_retrying(*failure)) {
        // A passing failure hits every row alike: each is now in doubt and is checked next time.
        for (auto* attempt : group) attempt->outcome = decide_error(attempt->row, *failure, config_.sync.retry.max_attempts);
        co_return;
      }
      // etcd refused the group (a row it cannot take, no permission for one key, limits below its
      // defaults): each row alone gets its own answer.
      co_await apply_one_by_one(group);
      co_return;
    }
    std::vector<Attempt*> again;
    auto outcomes = decide_txn(rows, response, resolution);
    for (std::size_t i = 0; i < group.size(); ++i) {
      if (outcomes[i])
        group[i]->outcome = std::move(*outcomes[i]);
      else
        again.push_back(group[i]);
    }
    if (again.size() == group.size()) {
      co_await apply_one_by_one(group);  // no row's conflict could be told apart
      co_return;
    }
    group = std::move(again);
  }
}

asio::awaitable<void> Outbox::apply_one_by_one(std::vector<Attempt*> group) {
  for (auto* attempt : group) co_await apply_group(std::vector<Attempt*>(1, attempt));
}

std::size_t Outbox::unsettled_capacity() const {
  return static_cast<std::size_t>(kBatchesInFlight) * static_cast<std::size_t>(config_.sync.batch_size);
}

std::chrono::milliseconds Outbox::sleep_limit() const {
  auto limit = config_.sync.sync_interval;
  if (earliest_retry_) {
    auto left = std::chrono::ceil<std::chrono::milliseconds>(*earliest_retry_ - std::chrono::steady_clock::now());
    limit = std::clamp(left, std::chrono::milliseconds(1), limit);
  }
  return limit;
}

void Outbox::account(std::vector<Attempt>& batch) {
  row_backoff_.set_limits(config_.sync.retry.initial_backoff, config_.sync.retry.max_backoff);
  for (auto& attempt : batch) {
    if (!attempt.outcome) continue;
    const auto& row = attempt.row;
    const auto& outcome = *attempt.outcome;
    LogFields fields{{"component", "outbox"}, {"wal_id", row.id}, {"key", row.key}, {"attempt", row.retry_count + 1}};
    switch (outcome.status) {
      case WalStatus::success:
        ++stats_.wal_success;
        fields.push_back({"revision", outcome.revision});
        log_debug("etcd_wal row applied", fields);
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
        attempt.retry_delay = row_backoff_.delay(row.retry_count + 1);
        auto due = std::chrono::steady_clock::now() + attempt.retry_delay;
        if (!earliest_retry_ || due < *earliest_retry_) earliest_retry_ = due;
        fields.push_back({"error", outcome.error_message});
        fields.push_back({"delay_ms", attempt.retry_delay.count()});
        log_info("etcd_wal row will be retried", fields);
        break;
      }
    }
    if (outcome.conflict_resolved) ++stats_.conflicts_resolved;
  }
}

std::vector<PgStatement> Outbox::outcome_statements(const std::vector<Attempt>& decided) {
  // One UPDATE for all of them, from parallel arrays.
  std::vector<std::optional<std::string>> ids, statuses, revisions, errors, retry_increments, delays;
  std::int64_t conflicts = 0;
  for (const auto& attempt : decided) {
    if (!attempt.outcome) continue;
    const auto& row = attempt.row;
    const auto& outcome = *attempt.outcome;
    bool success = outcome.status == WalStatus::success;
    ids.push_back(std::to_string(row.id));
    statuses.push_back(to_string(outcome.status));  // "pending" for a retry
    revisions.push_back(success ? std::optional(std::to_string(outcome.revision)) : std::nullopt);
    errors.push_back(success ? std::nullopt : std::optional(outcome.error_message));
    retry_increments.push_back(outcome.transient ? "1" : "0");
    delays.push_back(std::to_string(attempt.retry_delay.count()));
    if (outcome.conflict_resolved) ++conflicts;
  }
  std::vector<PgStatement> statements;
  if (!ids.empty()) statements.push_back(
      {"UPDATE etcd_wal w SET status = o.status, "
       "  revision = CASE WHEN o.status = 'success' THEN o.revision ELSE w.revision END, "
       "  error_message = o.error, retry_count = w.retry_count + o.retry_increment, "
       "  applied_at = CASE WHEN o.status = 'pending' THEN w.applied_at ELSE now() END, "
       "  attempt_revision = CASE WHEN o.status = 'pending' THEN w.attempt_revision END, "
       "  next_attempt_at = CASE WHEN o.status = 'pending' "
       "    THEN clock_timestamp() + o.delay_ms * interval '1 millisecond' END "
       "FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[], $5::int[], $6::bigint[]) "
       "  AS o(id, status, revision, error, retry_increment, delay_ms) "
       "WHERE w.id = o.id",
       {PgParam::text(pg_array(ids)), PgParam::text(pg_array(statuses)), PgParam::text(pg_array(revisions)),
        PgParam::text(pg_array(errors)), PgParam::text(pg_array(retry_increments)), PgParam::text(pg_array(delays))},
       true});
  if (conflicts > 0) {
    // An upsert: on a fresh database the outbox may finish its first batch before the listener's
    // first heartbeat has created the row, and an UPDATE would then lose the count.
    statements.push_back({"INSERT INTO etcd_sync_service AS s (id, state, conflicts_resolved) VALUES (1, 'starting', $1::bigint) "
                          "ON CONFLICT (id) DO UPDATE SET conflicts_resolved = s.conflicts_resolved + EXCLUDED.conflicts_resolved",
                          {PgParam::int64(conflicts)}});
  }
  // Whether these keys have pending rows left (the next row of a key, or a row to retry): only then
  // is another claim worth its cost. Rows left without an outcome are pending themselves.
  std::vector<std::optional<std::string>> keys;
  for (const auto& attempt : decided) keys.push_back(attempt.row.key);
  statements.push_back({"SELECT EXISTS (SELECT 1 FROM etcd_wal WHERE status = 'pending' AND key = ANY($1::text[]))",
                        {PgParam::text(pg_array(keys))},
                        true});
  return statements;
}

}  // namespace etcd_sync
