#include "reactor/mirror/mirror.hpp"

#include "reactor/engine/database.hpp"
#include "reactor/keys/keys.hpp"
#include "reactor/loop/failpoint.hpp"
#include "reactor/loop/logging.hpp"
#include "reactor/loop/spawn.hpp"
#include "reactor/mirror/watch_response.hpp"

#include <algorithm>
#include <cstdio>
#include <cstdlib>

namespace etcd_sync {

namespace {

constexpr std::size_t max_queued_bytes = 64 * 1024 * 1024;  // watch responses waiting for PostgreSQL

// When a backlog is copied (perf/README.md, (f)).
struct CopyLimits {
  // A backlog of this many events read at once (a catch-up after downtime or an outage) is
  // copied: below it, one pipeline of INSERTs for all its transactions costs fewer round trips
  // than a COPY per transaction.
  std::size_t min_events = 1000;
  // Events per COPY transaction, or batch_size when that is larger (0 here); a transaction of more
  // is a run alone. Memory stays bounded by the queue's max_queued_bytes.
  std::size_t run_events = 0;
};
constexpr std::size_t kCopyRunEvents = 10000;

// The fault suite lowers both, so that the backlogs of its short outages (a few hundred events)
// are copied in several runs on both connections: ETCD_SYNC_TEST_COPY_BACKLOG="min_events,run_events",
// read once. Unset (as in production) or malformed, the defaults hold.
const CopyLimits& copy_limits() {
  static const CopyLimits limits = [] {
    CopyLimits l;
    const char* text = std::getenv("ETCD_SYNC_TEST_COPY_BACKLOG");
    unsigned long min_events = 0, run_events = 0;
    if (text && std::sscanf(text, "%lu,%lu", &min_events, &run_events) == 2 && min_events > 0 && run_events > 0) {
      l.min_events = min_events;
      l.run_events = run_events;
    }
    return l;
  }();
  return limits;
}
// Events per COPY run for this batch_size.
std::size_t copy_run_events(std::size_t batch_size) {
  if (copy_limits().run_events > 0) return copy_limits().run_events;
  return std::max(kCopyRunEvents, batch_size);
}

constexpr std::size_t kCopyChunkBytes = 256 * 1024;  // COPY data per write

/// How often a quiet watch looks at its liveness (WatchLiveness) and its progress requests.
constexpr std::chrono::milliseconds kWatchCheckEvery{500};

// A plain function (g++ 12 and class temporaries in coroutines).
SyncError silent_watch_error(const std::string& endpoint, std::chrono::milliseconds quiet) {
  SyncError error(ErrorKind::transient,
                  "etcd Watch at " + endpoint + ": the member left " + std::to_string(WatchLiveness::kStrikes) +
                      " status probes in a row unanswered (or has no leader) after " + std::to_string(quiet.count()) +
                      " ms without a response; watching on another member",
                  Peer::etcd);
  error.at(endpoint);
  return error;
}
constexpr const char* kUniqueViolation = "23505";     // PostgreSQL docs, Appendix A: unique_violation

}  // namespace

const char* to_string(MirrorState state) {
  switch (state) {
    case MirrorState::starting: return "starting";
    case MirrorState::snapshotting: return "snapshotting";
    case MirrorState::resyncing: return "resyncing";
    case MirrorState::rewinding: return "rewinding";
    case MirrorState::watching: return "watching";
    case MirrorState::backing_off: return "backing_off";
    case MirrorState::stopped: return "stopped";
  }
  return "unknown";
}

/// One Watch stream and the responses read from it but not yet applied.
struct Mirror::WatchSession {
  explicit WatchSession(asio::io_context& io) : applier_wakeup(io), reader_wakeup(io), reader_gate(io) {}
  std::unique_ptr<WatchStream> stream;
  std::deque<etcdserverpb::WatchResponse> queue;
  std::size_t queued_bytes = 0;
  Wakeup applier_wakeup;  // a response arrived, or the reader ended
  Wakeup reader_wakeup;   // the queue has room again
  Gate reader_gate;       // the reader coroutine is inside while it runs
  bool reader_done = false;
  bool logged_watching = false;
  std::optional<SyncError> error;
  std::chrono::steady_clock::time_point last_event = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point last_progress_request = std::chrono::steady_clock::now();
  WatchLiveness liveness{std::chrono::steady_clock::now()};
};

Mirror::Mirror(asio::io_context& io, std::shared_ptr<const Config> config, EtcdClient& etcd, SyncStats& stats,
               bool dry_run, Fencing fencing)
    : io_(io),
      config_(std::move(config)),
      etcd_(etcd),
      stats_(stats),
      pg_(io, config_->postgresql.conninfo, "mirror", config_->postgresql.request_timeout),
      copy_pg_(io, config_->postgresql.conninfo, "mirror copy", config_->postgresql.request_timeout),
      status_("mirror", MirrorState::starting, MirrorState::backing_off, stats),
      stop_wakeup_(io),
      dry_run_(dry_run),
      fencing_(std::move(fencing)) {}

std::optional<PgStatement> Mirror::fence_statement() const {
  if (!fencing_.term) return std::nullopt;
  return etcd_sync::fence_statement(*fencing_.term);
}

std::string Mirror::prefix() const { return effective_prefix(config_->etcd.prefix); }

bool Mirror::own_key(const std::string& key) const {
  return !config_->ha.election_prefix.empty() && key.starts_with(config_->ha.election_prefix);
}

void Mirror::stop() {
  stopping_ = true;
  stop_wakeup_.notify();
  if (session_) {
    session_->stream->cancel();
    session_->applier_wakeup.notify();
    session_->reader_wakeup.notify();
  }
}

void Mirror::throw_if_stopping() const {
  if (stopping_) throw SyncError(ErrorKind::cancelled, "the mirror is stopping");
}

asio::awaitable<void> Mirror::connect_postgres() {
  if (pg_.connected()) co_return;
  co_await open_database(pg_, config_.get());
}

asio::awaitable<std::optional<std::int64_t>> Mirror::load_checkpoint() {
  auto result = co_await pg_.query("SELECT revision, etcd_cluster_id FROM etcd_sync_checkpoint WHERE prefix = $1",
                                   pg_params(PgParam::text(prefix())));
  recorded_cluster_.reset();
  stored_checkpoint_ = 0;
  if (result.rows() == 0) co_return std::nullopt;
  recorded_cluster_ = result.optional_text(0, 1);
  stored_checkpoint_ = result.int64(0, 0);
  co_return stored_checkpoint_;
}

asio::awaitable<std::int64_t> Mirror::resync_once() {
  co_await connect_postgres();
  co_await etcd_.connect();
  co_await load_checkpoint();  // the checkpoint a rewind starts from, if the resync finds one due
  std::int64_t revision = 0;
  for (int attempt = 0; attempt < 2 && revision == 0; ++attempt) {
    try {
      revision = co_await snapshot(true);
    } catch (const SyncError&) {
      if (!rewound_ || attempt > 0) throw;
      rewound_ = false;  // etcd went back: the rows are set apart now; take the snapshot again
    }
  }
  pg_.close();
  co_return revision;
}

asio::awaitable<void> Mirror::run() {
  while (!stopping_) {
    config_.adopt();  // a defined point: between connections, snapshots and watches
    std::chrono::milliseconds delay{0};
    try {
      co_await connect_postgres();
      co_await etcd_.connect();
      auto checkpoint = co_await load_checkpoint();
      if (checkpoint && !dry_run_) co_await check_postgres_timeline(*checkpoint);
      if (dry_run_ && checkpoint_ > 0) checkpoint = checkpoint_;  // dry runs keep their place in memory
      if (dry_run_ && (!checkpoint || resync_needed_)) {
        checkpoint = (co_await etcd_.status()).header().revision();
        log_info("dry run: would take a snapshot here; watching from etcd's current revision instead",
                 {{"component", "mirror"}, {"revision", *checkpoint}});
      }
      if (checkpoint && !resync_needed_ && !dry_run_) checkpoint = co_await check_timeline(*checkpoint);
      if (!checkpoint || resync_needed_) checkpoint = co_await snapshot(checkpoint.has_value());
      resync_needed_ = false;
      lost_from_.reset();
      checkpoint_ = *checkpoint;
      stats_.mirrored_revision = checkpoint_;
      stats_.snapshot_done = true;
      co_await note_caught_up();
      co_await watch(checkpoint_ + 1);
    } catch (const SyncError& error) {
      delay = on_failure(error);
    }
    if (delay.count() > 0) co_await stop_wakeup_.wait(delay);
  }
  pg_.close();
  copy_pg_.close();
  status_.clear();
  status_.set(MirrorState::stopped);
}

std::chrono::milliseconds Mirror::on_failure(const SyncError& error) {
  pg_.close();  // drops any transaction in flight; the checkpoint says where to resume
  copy_pg_.close();
  if (stopping_) return std::chrono::milliseconds(0);
  if (fencing_.fenced(error)) return config_->sync.retry.max_backoff;  // another leads: wait to be stopped
  if (rewound_) {
    rewound_ = false;
    resync_needed_ = true;
    return std::chrono::milliseconds(0);
  }
  if (timeline_suspect_) {
    // Not an outage: check_timeline looks at etcd at once, with a linearizable read.
    timeline_suspect_ = false;
    log_warn("watch response does not fit the checkpoint's timeline; checking etcd",
             {{"component", "mirror"}, {"error", error.what()}});
    return std::chrono::milliseconds(100);
  }
  if (error.kind() == ErrorKind::compacted) {
    // Never retry a compacted revision: take a new snapshot instead, at once.
    resync_needed_ = true;
    if (!lost_from_) lost_from_ = checkpoint_ + 1;
    log_warn("etcd compacted the revisions the mirror needs", {{"component", "mirror"}, {"error", error.what()}});
    return std::chrono::milliseconds(0);
  }
  return status_.failed(error, config_->sync.retry);
}

void Mirror::append_reconcile(std::int64_t revision, std::vector<PgStatement>& statements) const {
  // Keys gone from etcd get a tombstone at the snapshot revision; keys whose latest row is older
  // than their mod_revision get a row at it (a row at the same revision whose value differs is
  // rewritten: validate --fix).
  statements.push_back(
      {"INSERT INTO etcd (key, value, value_bytes, revision, tombstone) "
       "SELECT l.key, NULL, NULL, $2::bigint, true FROM ("
       "  SELECT DISTINCT ON (key) key, tombstone FROM etcd"
       "   WHERE ($1 = '' OR starts_with(key, $1)) ORDER BY key, revision DESC) l "
       "WHERE NOT l.tombstone AND NOT EXISTS (SELECT 1 FROM etcd_sync_snapshot s WHERE s.key = l.key) "
       "ON CONFLICT (key, revision) DO NOTHING",
       {PgParam::text(prefix()), PgParam::int64(revision)}});
  statements.push_back(
      {"INSERT INTO etcd (key, value, value_bytes, revision, tombstone, create_revision, version, lease) "
       "SELECT key, value, value_bytes, revision, false, create_revision, version, lease FROM etcd_sync_snapshot "
       "ON CONFLICT (key, revision) DO UPDATE SET value = EXCLUDED.value, value_bytes = EXCLUDED.value_bytes, "
       "tombstone = false, create_revision = EXCLUDED.create_revision, version = EXCLUDED.version, "
       "lease = EXCLUDED.lease WHERE etcd.value IS DISTINCT FROM EXCLUDED.value "
       "OR etcd.value_bytes IS DISTINCT FROM EXCLUDED.value_bytes OR etcd.tombstone",
       {}});
}

asio::awaitable<std::int64_t> Mirror::snapshot(bool resync) {
  status_.set(resync ? MirrorState::resyncing : MirrorState::snapshotting);  // coroutine-safe: enum arms
  auto range = prefix_range(config_->etcd.prefix);
  // The first snapshot of a prefix with no rows yet has nothing to reconcile: its rows are copied
  // straight into `etcd` (a row that appears meanwhile fails the COPY as a duplicate, and the next
  // attempt reconciles). Otherwise, and always for a resync, they go to a temporary table first.
  // (Where other prefixes' rows fill the table, the probe reads it until a row of this prefix.)
  bool direct = false;
  if (!resync) {
    auto probe = co_await pg_.query("SELECT EXISTS (SELECT 1 FROM etcd WHERE $1 = '' OR starts_with(key, $1))",
                                    pg_params(PgParam::text(prefix())));
    direct = !probe.boolean(0, 0);
  }
  if (direct) {
    auto copy = copy_in_sql("etcd", "BEGIN; ");
    co_await pg_.copy_start(std::move(copy));
  } else {
    co_await pg_.execute_script(
        "BEGIN; CREATE TEMP TABLE etcd_sync_snapshot (key text NOT NULL, value text, value_bytes bytea, "
        "revision bigint NOT NULL, tombstone boolean NOT NULL, create_revision bigint, version bigint, "
        "lease bigint) ON COMMIT DROP");
    auto copy = copy_in_sql("etcd_sync_snapshot");
    co_await pg_.copy_start(std::move(copy));
  }
  std::int64_t revision = 0;
  std::uint64_t cluster_id = 0;
  std::int64_t keys = 0;
  std::vector<RejectedKey> rejected;
  etcdserverpb::RangeRequest request;
  request.set_key(range.key);
  request.set_range_end(range.range_end);
  request.set_limit(kRangeFirstPageKeys);  // then sized by bytes: next_range_page_limit
  std::string chunk;
  for (;;) {
    // A stop abandons the snapshot between pages: the transaction rolls back when the connection
    // closes, and the next start (perhaps with a reloaded prefix) takes a new one.
    throw_if_stopping();
    request.set_revision(revision);  // 0 for the first page: etcd's current revision, then pinned
    auto page = co_await etcd_.range(request);
    status_.working(Peer::etcd);
    if (revision == 0) {
      revision = page.header().revision();
      cluster_id = page.header().cluster_id();
    }
    chunk.clear();
    for (const auto& kv : page.kvs()) {
      if (own_key(kv.key())) continue;
      RejectedKey bad;
      auto row = make_row(kv, false, bad);
      if (!row) {
        rejected.push_back(std::move(bad));
        continue;
      }
      append_copy_line(chunk, *row);
      ++keys;
    }
    if (!chunk.empty()) co_await pg_.copy_data(chunk);
    failpoint("mirror.snapshot_page");
    if (!page.more() || page.kvs().empty()) break;
    request.set_limit(next_range_page_limit(page.ByteSizeLong(), page.kvs_size()));
    request.set_key(page.kvs(page.kvs_size() - 1).key() + '\0');
  }
  // PostgreSQL now writes (and reconciles) every key at once: longer than one round trip.
  PgLongStatements long_statements(pg_);
  auto copied = co_await pg_.copy_end();
  throw_if_stopping();
  std::vector<PgStatement> statements;
  if (!direct) {
    co_await pg_.execute_script("ANALYZE etcd_sync_snapshot");
    if (resync && !dry_run_) {
      // A resync after etcd went back in time, found only now (the history that would have shown
      // it was compacted): reconciling would mix the timelines. Set the rows apart first.
      auto newer = co_await rows_newer_than_etcd();
      if (newer) {
        co_await pg_.execute_script("ROLLBACK");
        co_await rewind(stored_checkpoint_, revision, cluster_id, *newer);
        rewound_ = true;  // on_failure: snapshot again at once
        throw SyncError(ErrorKind::transient, "the resync found etcd gone back in time; taking it again", Peer::etcd);
      }
    }
    append_reconcile(revision, statements);
  }
  append_rejected_inserts(rejected, statements);
  statements.push_back(checkpoint_statement(prefix(), revision));
  // The checkpoint belongs to the cluster the snapshot was read from (check_timeline compares).
  statements.push_back({"UPDATE etcd_sync_checkpoint SET etcd_cluster_id = $2 WHERE prefix = $1",
                        {PgParam::text(prefix()), PgParam::text(cluster_id_text(cluster_id))}});
  fencing_.append(statements);
  auto results = co_await pg_.pipeline(std::move(statements));
  co_await pg_.execute_script("COMMIT");
  recorded_cluster_ = cluster_id_text(cluster_id);
  status_.working(Peer::postgresql);
  std::int64_t tombstones = 0;
  std::int64_t added = copied.affected();
  if (!direct) {
    tombstones = results[0].affected();
    added = results[1].affected();
  }

  LogFields fields{{"component", "mirror"}, {"revision", revision}, {"keys", keys},
                   {"rows_added", added}, {"tombstones_added", tombstones},
                   {"rejected_keys", static_cast<std::int64_t>(rejected.size())}};
  if (resync) {
    ++stats_.resyncs;
    ++stats_.pending_resyncs;
    if (lost_from_) {
      fields.push_back({"lost_from_revision", *lost_from_});
      fields.push_back({"lost_to_revision", revision});
      log_warn("etcd compacted history that was never mirrored; resynchronized the net state, "
               "intermediate revisions in the lost range are not in the etcd table",
               fields);
    } else {
      log_warn("resynchronized from a snapshot", fields);
    }
  } else {
    log_info("snapshot applied", fields);
  }
  for (const auto& r : rejected)
    log_warn("key is not valid UTF-8 text; recorded in etcd_sync_rejected",
             {{"component", "mirror"}, {"revision", r.revision}, {"reason", r.reason}});
  stats_.events_applied += added + tombstones;
  stats_.pending_events += added + tombstones;
  co_return revision;
}

asio::awaitable<void> Mirror::read_responses(WatchSession& session) {
  for (;;) {
    while (session.queued_bytes > max_queued_bytes && !stopping_) co_await session.reader_wakeup.wait();
    auto response = co_await session.stream->read();
    if (!response) break;
    session.liveness.heard(std::chrono::steady_clock::now());
    session.queued_bytes += response->ByteSizeLong();
    session.queue.push_back(std::move(*response));
    session.applier_wakeup.notify();
  }
  session.reader_done = true;
  session.applier_wakeup.notify();
}

asio::awaitable<void> Mirror::watch(std::int64_t start_revision) {
  WatchSession session(io_);
  session.stream = etcd_.open_watch();
  auto range = prefix_range(config_->etcd.prefix);
  etcdserverpb::WatchCreateRequest create;
  create.set_key(range.key);
  create.set_range_end(range.range_end);
  create.set_start_revision(start_revision);
  create.set_progress_notify(true);
  co_await session.stream->start(create);
  session_ = &session;
  spawn(io_, session.reader_gate, read_responses(session), "mirror watch reader");

  std::exception_ptr failure;
  try {
    while (!stopping_ && !session.error) {
      const bool go_on = co_await apply_queued(session, start_revision);
      if (!go_on) break;
      if (rewind_) co_await note_caught_up();
      if (stopping_) break;
      if (session.reader_done) {
        session.error = co_await session.stream->finish();
        break;
      }
      if (!session.queue.empty()) continue;
      const bool woken = co_await session.applier_wakeup.wait(std::min(config_->sync.sync_interval, kWatchCheckEvery));
      if (woken) continue;
      const auto now = std::chrono::steady_clock::now();
      // Quiet for a whole interval: ask for progress so the checkpoint follows etcd's revision
      // and a quiet prefix's resume point never falls behind compaction.
      if (now - session.last_progress_request >= config_->sync.sync_interval &&
          should_request_progress(now - session.last_event, config_->sync.sync_interval, session.stream->writing())) {
        session.last_progress_request = now;
        etcdserverpb::WatchRequest progress;
        progress.mutable_progress_request();
        co_await session.stream->write(progress);
      }
      if (session.liveness.probe_due(now)) {
        const std::string endpoint = session.stream->endpoint();
        const bool answered = co_await etcd_.member_answers(endpoint, WatchLiveness::kProbeTimeout);
        if (session.liveness.probed(answered) && !stopping_) {
          session.error = silent_watch_error(endpoint, session.liveness.quiet_for(std::chrono::steady_clock::now()));
          if (etcd_.current_endpoint() == endpoint) etcd_.fail_over();
          break;
        }
      }
    }
  } catch (...) {
    failure = std::current_exception();
  }
  // Tear down: end the stream, wait for the reader, collect the reason.
  session_ = nullptr;
  session.stream->cancel();
  session.reader_wakeup.notify();
  co_await session.reader_gate.close();
  auto ended = co_await session.stream->finish();
  if (failure) std::rethrow_exception(failure);
  if (stopping_) co_return;
  if (session.error) throw *session.error;
  throw ended;
}

asio::awaitable<bool> Mirror::apply_queued(WatchSession& session, std::int64_t start_revision) {
  config_.adopt();  // a defined point: between transactions
  MirrorBatches batches(static_cast<std::size_t>(config_->sync.batch_size));
  while (!session.queue.empty() && !session.error) {
    auto response = std::move(session.queue.front());
    session.queue.pop_front();
    session.queued_bytes -= std::min(session.queued_bytes, response.ByteSizeLong());
    if (!dry_run_) {
      session.error = timeline_suspect(response.header());
      if (session.error) break;  // nothing from this response is applied
    }
    if (response.header().revision() > stats_.etcd_revision) stats_.etcd_revision = response.header().revision();
    const std::int64_t covered = batches.empty() ? checkpoint_ : std::max(checkpoint_, batches.revision());
    auto step = read_watch_response(response, covered);
    switch (step.kind) {
      case WatchStep::Kind::compacted:
        lost_from_ = checkpoint_ + 1;
        session.error = SyncError(ErrorKind::compacted,
                                  "etcd compacted revision " + std::to_string(step.revision) + "; the watch from " +
                                      std::to_string(start_revision) + " cannot continue",
                                  Peer::etcd);
        break;
      case WatchStep::Kind::cancelled:
        session.error = SyncError(ErrorKind::transient, "etcd cancelled the watch: " + step.reason, Peer::etcd);
        break;
      case WatchStep::Kind::created:
        if (!session.logged_watching) {
          session.logged_watching = true;
          status_.working(Peer::etcd);
          status_.working(Peer::postgresql);
          status_.set(MirrorState::watching, {{"start_revision", start_revision}, {"prefix", config_->etcd.prefix}});
        }
        break;
      case WatchStep::Kind::events:
        for (auto& event : *response.mutable_events()) {
          if (own_key(event.kv().key()))
            batches.advance_to(event.kv().mod_revision());  // etcd-sync's own key: the revision only
          else
            batches.add_event(std::move(event));  // the response is consumed: its strings move into rows
        }
        session.last_event = std::chrono::steady_clock::now();
        break;
      case WatchStep::Kind::progress:
        batches.advance_to(step.revision);  // nothing under the prefix changed up to there
        break;
      case WatchStep::Kind::stale:
        break;
    }
  }
  session.reader_wakeup.notify();
  if (!batches.empty() && batches.revision() > checkpoint_) co_await apply(batches);
  co_return !session.error;
}

asio::awaitable<void> Mirror::apply(const MirrorBatches& batches) {
  std::int64_t events = 0, puts = 0, deletes = 0;
  for (const auto& batch : batches.batches()) {
    events += static_cast<std::int64_t>(batch.events());
    puts += batch.puts();
    deletes += batch.deletes();
    if (dry_run_)
      for (const auto& row : batch.rows())
        log_info("dry run: would write a row to etcd", {{"component", "mirror"}, {"key", row.key},
                                                         {"revision", row.revision}, {"tombstone", row.tombstone}});
  }
  if (!dry_run_) {
    auto started = std::chrono::steady_clock::now();
    if (copy_backlogs_ && batches.events() >= copy_limits().min_events) {
      co_await copy_backlog(batches);
    } else {
      failpoint("mirror.before_commit");
      auto statements = batches.statements(prefix(), fence_statement());
      co_await pg_.pipeline(std::move(statements));
    }
    stats_.mirror_apply_seconds.observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
    status_.working(Peer::postgresql);
  }
  checkpoint_ = batches.revision();
  stats_.mirrored_revision = checkpoint_;
  if (checkpoint_ > stats_.etcd_revision) stats_.etcd_revision = checkpoint_;
  stats_.events_applied += events;
  stats_.pending_events += events;
  stats_.puts_applied += puts;
  stats_.deletes_applied += deletes;
  for (const auto& batch : batches.batches())
    for (const auto& r : batch.rejected())
      log_warn("key is not valid UTF-8 text; recorded in etcd_sync_rejected",
               {{"component", "mirror"}, {"revision", r.revision}, {"reason", r.reason}});
  if (events > 0)
    log_debug("watch events applied", {{"component", "mirror"}, {"events", events}, {"puts", puts},
                                       {"deletes", deletes}, {"revision", checkpoint_},
                                       {"transactions", static_cast<std::int64_t>(batches.batches().size())}});
}

/// The runs of one backlog in flight on two connections.
struct Mirror::CopyPipe {
  CopyPipe(asio::io_context& io, std::vector<std::pair<std::size_t, std::size_t>> runs)
      : runs(std::move(runs)), turn(io), gate(io) {}
  std::vector<std::pair<std::size_t, std::size_t>> runs;  // MirrorBatches::copy_runs
  std::size_t committed = 0;                              // runs committed: they commit in order
  std::optional<std::size_t> failed_run;                  // the lowest run that failed
  std::exception_ptr failure;                             // its error
  std::optional<std::string> refused;                     // it met a row already there: the error
  Broadcast turn;                                         // a run committed, or one failed
  Gate gate;                                              // the second connection's coroutine
};

asio::awaitable<void> Mirror::copy_backlog(const MirrorBatches& batches) {
  CopyPipe pipe(io_, batches.copy_runs(copy_run_events(static_cast<std::size_t>(config_->sync.batch_size))));
  std::size_t stride = 1;
  if (pipe.runs.size() > 1) {
    std::optional<std::string> unavailable;  // say, max_connections reached: one connection still works
    try {
      if (!copy_pg_.connected()) co_await open_database(copy_pg_, config_.get());
    } catch (const SyncError& error) {
      unavailable = error.what();
    }
    if (unavailable) {
      copy_pg_.close();
      log_warn("the mirror's second connection could not be opened; this backlog is copied on one",
               {{"component", "mirror"}, {"error", *unavailable}});
    } else {
      stride = 2;
      spawn(io_, pipe.gate, copy_runs(batches, 1, stride, copy_pg_, pipe), "mirror copy");
    }
  }
  co_await copy_runs(batches, 0, stride, pg_, pipe);
  co_await pipe.gate.close();
  log_debug("backlog copied", {{"component", "mirror"}, {"events", static_cast<std::int64_t>(batches.events())},
                               {"runs", static_cast<std::int64_t>(pipe.runs.size())},
                               {"runs_committed", static_cast<std::int64_t>(pipe.committed)},
                               {"connections", static_cast<std::int64_t>(stride)}});
  if (!pipe.failed_run) co_return;
  if (!pipe.refused) std::rethrow_exception(pipe.failure);
  // A row of the run is there already, so rows above the checkpoint exist: another etcd-sync on
  // an overlapping prefix, or rows written by hand. COPY cannot skip them; INSERT ... ON CONFLICT
  // DO NOTHING can, and the rows it skips are the same revisions etcd reported.
  co_await pg_.execute_script("ROLLBACK");  // a transaction left open (aborted or waiting its turn)
  if (copy_pg_.connected()) co_await copy_pg_.execute_script("ROLLBACK");
  copy_backlogs_ = false;
  log_warn("a row above the checkpoint is already in the etcd table; backlogs are inserted with ON CONFLICT "
           "DO NOTHING instead of copied from now on",
           {{"component", "mirror"}, {"checkpoint", checkpoint_}, {"error", *pipe.refused}});
  failpoint("mirror.before_commit");
  auto rest = batches.statements(prefix(), fence_statement(), pipe.runs[pipe.committed].first);  // runs commit in order
  co_await pg_.pipeline(std::move(rest));
}

asio::awaitable<void> Mirror::copy_runs(const MirrorBatches& batches, std::size_t first_run, std::size_t stride,
                                        PgConnection& pg, CopyPipe& pipe) {
  // A run below the lowest failed one still commits; one above it must not.
  auto failed_before = [&pipe](std::size_t run) { return pipe.failed_run && *pipe.failed_run < run; };
  for (std::size_t i = first_run; i < pipe.runs.size() && !failed_before(i); i += stride) {
    std::exception_ptr failure;
    std::optional<std::string> refused;
    try {
      co_await copy_rows(pg, batches, pipe.runs[i].first, pipe.runs[i].second);
      while (pipe.committed < i && !failed_before(i)) co_await pipe.turn.wait();
      if (failed_before(i)) {
        co_await pg.execute_script("ROLLBACK");
        break;
      }
      failpoint("mirror.before_commit");
      auto statements = batches.after_copy(prefix(), fence_statement(), pipe.runs[i].first, pipe.runs[i].second);
      co_await pg.pipeline(std::move(statements));
      pipe.committed = i + 1;
    } catch (const SyncError& error) {
      if (error.sqlstate() == kUniqueViolation) refused = error.what();
      failure = std::current_exception();
    } catch (...) {
      failure = std::current_exception();
    }
    if (failure && (!pipe.failed_run || i < *pipe.failed_run)) {
      pipe.failed_run = i;
      pipe.failure = failure;
      pipe.refused = refused;
    }
    pipe.turn.notify_all();
    if (failure) break;
  }
}

asio::awaitable<void> Mirror::copy_rows(PgConnection& pg, const MirrorBatches& batches, std::size_t first,
                                        std::size_t end) {
  auto copy = copy_in_sql("etcd", "BEGIN; ");
  co_await pg.copy_start(std::move(copy));
  std::string chunk;
  for (std::size_t i = first; i < end; ++i) {
    for (const auto& row : batches.batches()[i].rows()) {
      append_copy_line(chunk, row);
      if (chunk.size() < kCopyChunkBytes) continue;
      co_await pg.copy_data(chunk);  // PostgreSQL works on this chunk while the next one is built
      chunk.clear();
    }
  }
  if (!chunk.empty()) co_await pg.copy_data(chunk);
  co_await pg.copy_end();
}

}  // namespace etcd_sync
