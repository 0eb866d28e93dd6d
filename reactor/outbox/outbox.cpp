#include "reactor/outbox/outbox.hpp"

#include "reactor/loop/logging.hpp"
#include "reactor/loop/spawn.hpp"

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
}  // namespace

Outbox::Outbox(asio::io_context& io, std::shared_ptr<const Config> config, EtcdClient& etcd, SyncStats& stats,
               bool dry_run, Fencing fencing)
    : io_(io),
      config_(std::move(config)),
      stats_(stats),
      dry_run_(dry_run),
      fencing_(std::move(fencing)),
      status_("outbox", OutboxState::starting, OutboxState::backing_off, stats,
              {OutboxState::idle, OutboxState::applying}),
      writer_(io, config_, stats, fencing_, [this](OutcomesWritten written) { on_written(std::move(written)); }),
      claimer_(io, config_.get(), etcd, stats, fencing_, in_flight_),
      applier_(io, config_.get(), etcd, stats, fencing_, status_, in_flight_,
               [this](const SyncError& error) { on_fenced(error); }),
      row_backoff_(config_->sync.retry.initial_backoff, config_->sync.retry.max_backoff),
      wakeup_(io),
      batches_(io) {}

void Outbox::on_fenced(const SyncError& error) {
  if (applier_.deposed()) return;
  applier_.depose();
  fencing_.fenced(error);
  wakeup_.notify();
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
  claimer_.schedule().notified(lowest_id);
  wakeup_.notify();
}

void Outbox::stop() {
  stopping_ = true;
  wakeup_.notify();
  applier_.stop();
  writer_.stop();
}

void Outbox::abort() {
  claimer_.close();
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
      applier_.stop();
    }
    // Batches in etcd finish (or are cancelled) and their outcomes are written before run() returns.
    co_await batches_.close();
    writer_.expect_more(false);
    writer_.stop();
    co_await writer_gate.close();
    if (fatal) {
      claimer_.close();
      std::rethrow_exception(fatal);
    }
  }
  claimer_.close();
  status_.clear();
  status_.set(OutboxState::stopped);
}

asio::awaitable<void> Outbox::claim_loop() {
  auto& schedule = claimer_.schedule();
  while (!stopping_) {
    config_.adopt();  // a defined point: between claims
    const Config& config = config_.get();
    if (applier_.deposed()) {
      co_await wakeup_.wait(config.sync.sync_interval);  // until the service stops this term
      continue;
    }
    std::optional<SyncError> failure;
    try {
      if (!claimer_.connected()) {
        co_await claimer_.connect(config);
        if (status_.state() != OutboxState::starting) log_info("outbox reconnected to PostgreSQL", {{"component", "outbox"}});
        status_.working(Peer::postgresql);
      }
      if (!applier_.barrier_raised()) co_await applier_.raise_barrier();
      set_activity(in_flight_.settled() ? OutboxState::idle : OutboxState::applying);  // coroutine-safe: enum arms
      const auto limit = in_flight_.claim_limit(config.sync.batch_size, claimer_.backed_up());
      if (limit == 0) {
        in_flight_.waiting_for_room(true);  // on_written wakes it whenever outcomes free room
        co_await wakeup_.wait(schedule.sleep_limit(std::chrono::steady_clock::now(), config.sync.sync_interval));
        in_flight_.waiting_for_room(false);
        continue;  // until a batch ends or outcomes are written
      }
      auto attempts = co_await claimer_.claim(limit, config.sync.sync_interval);
      if (attempts.empty()) {
        if (in_flight_.settled()) {
          set_activity(OutboxState::idle);
          auto next_ms = co_await claimer_.next_retry_ms();
          co_await wakeup_.wait(schedule.idle_wait(std::chrono::steady_clock::now(), config.sync.sync_interval, next_ms));
        } else {
          co_await wakeup_.wait(schedule.sleep_limit(std::chrono::steady_clock::now(), config.sync.sync_interval));
        }
        continue;
      }
      set_activity(OutboxState::applying);
      in_flight_.batch_started(attempts);
      spawn(io_, batches_, apply_batch(ClaimedBatch{config_.snapshot(), std::move(attempts)}), "outbox batch", [this] {
        in_flight_.batch_ended();
        wakeup_.notify();
      });
      co_await claimer_.check_statistics_if_due();
      // A short claim took every due row: claim again only when told of more (a NOTIFY during the
      // claim already counts), not at once. A full one may have left some behind.
      if (!claimer_.backed_up())
        co_await wakeup_.wait(schedule.sleep_limit(std::chrono::steady_clock::now(), config.sync.sync_interval));
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
      if (failure->peer() != Peer::etcd) claimer_.close();
      if (failure->peer() == Peer::etcd) {
        applier_.etcd_failed(*failure, config.sync.retry);
        co_await applier_.etcd_ready();
      } else {
        co_await wakeup_.wait(status_.failed(*failure, config.sync.retry));
      }
    }
  }
}

asio::awaitable<void> Outbox::dry_run_loop() {
  std::int64_t seen = 0;
  while (!stopping_) {
    config_.adopt();
    std::optional<SyncError> failure;
    try {
      auto rows = co_await claimer_.peek(config_.get());
      for (const auto& row : rows) {
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
      claimer_.close();
      failure = error;
    }
    if (failure && !stopping_) co_await wakeup_.wait(status_.failed(*failure, config_->sync.retry));
  }
}

// --- one batch ---------------------------------------------------------------------------------

asio::awaitable<void> Outbox::apply_batch(ClaimedBatch batch) {
  co_await applier_.decide(batch);
  // Rows left without an outcome (stopping) stay pending, in doubt: the next start decides them.
  auto decided = account(batch);
  in_flight_.batch_decided(batch.attempts);
  writer_.add(std::move(decided));
}

// --- outcomes ----------------------------------------------------------------------------------

std::vector<DecidedRow> Outbox::account(ClaimedBatch& batch) {
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
        claimer_.schedule().retry_at(std::chrono::steady_clock::now() + delay);
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
