#include "reactor/outbox/outcome_writer.hpp"

#include "reactor/engine/database.hpp"
#include "reactor/loop/logging.hpp"

namespace etcd_sync {

const char* to_string(OutcomeWriterState state) {
  switch (state) {
    case OutcomeWriterState::idle: return "idle";
    case OutcomeWriterState::writing: return "writing";
    case OutcomeWriterState::backing_off: return "backing_off";
    case OutcomeWriterState::stopped: return "stopped";
  }
  return "unknown";
}

OutcomeWriter::OutcomeWriter(asio::io_context& io, const ConfigView& config, SyncStats& stats, const Fencing& fencing,
                             std::function<void(OutcomesWritten)> on_written)
    : io_(io),
      config_(config),
      fencing_(fencing),
      pg_(io, config->postgresql.conninfo, "outbox outcomes", config->postgresql.request_timeout),
      status_("outbox outcomes", OutcomeWriterState::idle, OutcomeWriterState::backing_off, stats,
              {OutcomeWriterState::idle, OutcomeWriterState::writing}),
      on_written_(std::move(on_written)),
      wakeup_(io) {}

void OutcomeWriter::add(std::vector<DecidedRow> decided) {
  if (decided.empty() || fenced_) return;
  queued_.insert(queued_.end(), std::make_move_iterator(decided.begin()), std::make_move_iterator(decided.end()));
  wakeup_.notify();
}

void OutcomeWriter::stop() {
  stopping_ = true;
  wakeup_.notify();
}

std::vector<PgStatement> OutcomeWriter::statements(const std::vector<DecidedRow>& decided) const {
  std::vector<PgStatement> out;
  out.push_back(outcome_update_statement(decided));
  std::int64_t conflicts = 0;
  for (const auto& d : decided)
    if (d.outcome.conflict_resolved) ++conflicts;
  if (conflicts > 0) out.push_back(conflicts_resolved_statement(conflicts, config_->ha.instance_id));
  fencing_.append(out);
  out.push_back(keys_pending_statement(decided));
  return out;
}

asio::awaitable<void> OutcomeWriter::run() {
  for (;;) {
    if (queued_.empty()) {
      if (stopping_ && !expect_more_) break;
      status_.set(OutcomeWriterState::idle);
      co_await wakeup_.wait();
      continue;
    }
    std::vector<DecidedRow> writing = std::move(queued_);
    queued_.clear();
    std::optional<SyncError> failure;
    OutcomesWritten written;
    try {
      status_.set(OutcomeWriterState::writing);
      if (!pg_.connected()) {
        if (stopping_) throw SyncError(ErrorKind::cancelled, "stopping", Peer::postgresql);
        co_await open_database(pg_, config_.get());
      }
      auto pipeline = statements(writing);
      auto results = co_await pg_.pipeline(std::move(pipeline));
      written.updated = updated_ids(results.front());
      written.more_pending = results.back().boolean(0, 0);
      status_.working(Peer::postgresql);
    } catch (const SyncError& error) {
      failure = error;
    }
    if (failure && fencing_.fenced(*failure)) {
      // Another instance leads: these outcomes are not ours to write (the new leader decides the
      // rows from etcd's receipts), nor any that follow.
      fenced_ = true;
      written.abandoned = true;
      written.rows = std::move(writing);
      queued_.clear();
      on_written_(std::move(written));
      continue;
    }
    if (!failure || stopping_) {
      if (failure) {
        // The rows stay pending with their attempt recorded: the next start checks their receipts.
        log_warn("outbox stopped before writing outcomes; the next start checks these rows against etcd",
                 {{"component", "outbox"}, {"rows", writing.size()}, {"error", failure->what()}});
        written.abandoned = true;
      }
      written.rows = std::move(writing);
      on_written_(std::move(written));
      continue;
    }
    pg_.close();
    // Try again after a backoff with the same rows first (they stay unsettled meanwhile).
    writing.insert(writing.end(), std::make_move_iterator(queued_.begin()), std::make_move_iterator(queued_.end()));
    queued_ = std::move(writing);
    SyncError error = *failure;
    if (error.peer() == Peer::unknown) error = SyncError(error.kind(), error.what(), Peer::postgresql);
    const auto retry_at = std::chrono::steady_clock::now() + status_.failed(error, config_->sync.retry);
    while (!stopping_ && std::chrono::steady_clock::now() < retry_at) co_await wakeup_.wait_until(retry_at);
  }
  pg_.close();
  status_.clear();
  status_.set(OutcomeWriterState::stopped);
}

}  // namespace etcd_sync
