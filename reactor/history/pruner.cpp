#include "reactor/history/pruner.hpp"

#include "reactor/engine/database.hpp"
#include "reactor/keys/keys.hpp"
#include "reactor/loop/logging.hpp"

namespace etcd_sync {

const char* to_string(PrunerState state) {
  switch (state) {
    case PrunerState::off: return "off";
    case PrunerState::pruning: return "pruning";
    case PrunerState::resting: return "resting";
    case PrunerState::backing_off: return "backing_off";
    case PrunerState::stopped: return "stopped";
  }
  return "unknown";
}

namespace {
KeepRules rules_of(const Config& config) { return KeepRules{config.history.keep_versions, config.history.keep_for}; }

std::vector<PgStatement> window_statements(const std::string& prefix, std::int64_t cursor, std::int64_t end,
                                           const KeepRules& rules, const Fencing& fencing) {
  std::vector<PgStatement> statements;
  statements.push_back(prune_superseded_statement(prefix, cursor, end, rules));
  statements.push_back(prune_lone_tombstones_statement(prefix, cursor, end, rules));
  fencing.append(statements);
  return statements;
}

std::vector<PgStatement> one(PgStatement statement) {
  std::vector<PgStatement> out;
  out.push_back(std::move(statement));
  return out;
}
}  // namespace

std::chrono::milliseconds Pruner::pass_interval(const HistoryConfig& history) {
  const std::chrono::milliseconds minute{60000};
  if (history.keep_for.count() == 0) return minute;
  return std::clamp(history.keep_for / 2, std::chrono::milliseconds(1000), minute);
}

Pruner::Pruner(asio::io_context& io, std::shared_ptr<const Config> config, SyncStats& stats, Fencing fencing)
    : io_(io),
      config_(std::move(config)),
      stats_(stats),
      fencing_(std::move(fencing)),
      pg_(io, config_->postgresql.conninfo, "history", config_->postgresql.request_timeout),
      status_("history", PrunerState::off, PrunerState::backing_off, stats, {PrunerState::pruning, PrunerState::resting}),
      wakeup_(io) {}

void Pruner::stop() {
  stopping_ = true;
  wakeup_.notify();
}

void Pruner::reconfigure(std::shared_ptr<const Config> config) {
  const bool changed = !(config->history == config_->history);
  config_.offer(std::move(config));
  if (changed) {
    restart_pass_ = true;
    wakeup_.notify();
  }
}

asio::awaitable<bool> Pruner::prune_window(const KeepRules& rules) {
  const auto prefix = effective_prefix(config_->etcd.prefix);
  auto window = co_await pg_.pipeline(one(window_end_statement(prefix, cursor_, kWindowRows)));
  if (window.front().is_null(0, 0)) co_return false;
  const std::int64_t end = window.front().int64(0, 0);
  auto statements = window_statements(prefix, cursor_, end, rules, fencing_);
  auto results = co_await pg_.pipeline(std::move(statements));
  const std::int64_t pruned = results[0].affected() + results[1].affected();
  stats_.history_pruned += pruned;
  cursor_ = end;
  co_return true;
}

asio::awaitable<void> Pruner::run() {
  while (!stopping_) {
    config_.adopt();  // a defined point: between passes and batches
    const auto rules = rules_of(config_.get());
    if (!rules.prunes()) {
      status_.set(PrunerState::off);
      co_await wakeup_.wait(config_->sync.sync_interval);
      continue;
    }
    std::optional<SyncError> failure;
    try {
      if (!pg_.connected()) co_await open_database(pg_, config_.get());
      status_.working(Peer::postgresql);
      status_.set(PrunerState::pruning, {{"keep_versions", rules.keep_versions}, {"keep_for_ms", rules.keep_for.count()}});
      cursor_ = 0;
      restart_pass_ = false;
      const auto pruned_before = stats_.history_pruned;
      const auto began = std::chrono::steady_clock::now();
      for (;;) {
        const auto batch_began = std::chrono::steady_clock::now();
        const bool more = co_await prune_window(rules);
        if (!more || stopping_ || restart_pass_) break;
        // Rest as long as the batch took: at most about half a core of PostgreSQL for pruning.
        co_await wakeup_.wait(std::chrono::ceil<std::chrono::milliseconds>(std::chrono::steady_clock::now() - batch_began));
        if (stopping_ || restart_pass_) break;
        config_.adopt();
        if (!(rules_of(config_.get()).keep_versions == rules.keep_versions &&
              rules_of(config_.get()).keep_for == rules.keep_for))
          break;
      }
      const auto pruned = stats_.history_pruned - pruned_before;
      if (pruned > 0)
        log_info("history pruned", {{"component", "history"}, {"rows", pruned},
                                    {"seconds", std::chrono::duration<double>(std::chrono::steady_clock::now() - began).count()}});
      status_.set(PrunerState::resting);
    } catch (const SyncError& error) {
      failure = error;
    }
    if (failure) {
      pg_.close();
      if (stopping_) break;
      if (fencing_.fenced(*failure)) {
        co_await wakeup_.wait(pass_interval(config_->history));  // another leads: wait to be stopped
        continue;
      }
      co_await wakeup_.wait(status_.failed(*failure, config_->sync.retry));
      continue;
    }
    if (!restart_pass_) co_await wakeup_.wait(pass_interval(config_->history));
  }
  pg_.close();
  status_.clear();
  status_.set(PrunerState::stopped);
}

}  // namespace etcd_sync
