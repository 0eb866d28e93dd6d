// The Mirror when etcd goes back in time (restored from a snapshot): README "When a server goes
// back in time". The decisions are pure (timeline.hpp); this file does their reads and writes.

#include "reactor/keys/keys.hpp"
#include "reactor/loop/logging.hpp"
#include "reactor/mirror/mirror.hpp"

#include <algorithm>

namespace etcd_sync {

namespace {

constexpr int kRowsProbed = 8;  // rows of one revision asked about: one Txn may write many keys

// Plain functions (g++ 12 and class temporaries in coroutines).
etcdserverpb::RangeRequest key_at_request(const std::string& key, std::int64_t revision) {
  etcdserverpb::RangeRequest request;
  request.set_key(key);
  request.set_revision(revision);
  return request;
}

etcdserverpb::RangeRequest newest_key_request(const KeyRange& range) {
  etcdserverpb::RangeRequest request;
  request.set_key(range.key);
  request.set_range_end(range.range_end);
  request.set_limit(1);
  request.set_keys_only(true);
  return request;
}

/// The key a Range of one key found, or nullptr.
const mvccpb::KeyValue* first_kv(const etcdserverpb::RangeResponse& response) {
  return response.kvs_size() > 0 ? &response.kvs(0) : nullptr;
}

/// Cell (0, column) as a number, nullopt when NULL.
std::optional<std::int64_t> optional_int64(const PgResult& result, int column) {
  if (result.is_null(0, column)) return std::nullopt;
  return result.int64(0, column);
}

LogFields rewind_fields(const std::optional<std::string>& recorded, std::uint64_t cluster_id, std::int64_t checkpoint,
                        std::int64_t revision, const std::string& reason) {
  return {{"component", "mirror"},
          {"reason", reason},
          {"old_cluster_id", recorded ? *recorded : std::string("unknown")},
          {"new_cluster_id", cluster_id_text(cluster_id)},
          {"checkpoint", checkpoint},
          {"etcd_revision", revision}};
}

}  // namespace

asio::awaitable<std::int64_t> Mirror::check_timeline(std::int64_t checkpoint) {
  auto request = newest_key_request(prefix_range(config_->etcd.prefix));
  auto now = co_await etcd_.range(request);  // linearizable: a member that lags catches up first
  status_.working(Peer::etcd);
  const std::uint64_t cluster_id = now.header().cluster_id();
  const std::int64_t revision = now.header().revision();
  const auto sign = read_timeline(recorded_cluster_, checkpoint, cluster_id, revision);
  std::string reason;
  if (sign == TimelineSign::new_cluster) {
    reason = "etcd has another cluster id than the checkpoint's";
  } else if (sign == TimelineSign::behind) {
    reason = "etcd's revision is below the checkpoint";
  } else {
    if (sign == TimelineSign::unrecorded) {
      co_await pg_.query("UPDATE etcd_sync_checkpoint SET etcd_cluster_id = $2 WHERE prefix = $1",
                         pg_params(PgParam::text(prefix()), PgParam::text(cluster_id_text(cluster_id))));
      recorded_cluster_ = cluster_id_text(cluster_id);
    }
    // A restore made with the same cluster token keeps the cluster id, and etcd's revision may
    // pass the checkpoint again before etcd-sync looks: the last mirrored rows tell.
    auto last = co_await mirrored_rows_at_or_below(std::min(checkpoint, revision));
    if (last.empty()) co_return checkpoint;
    const auto held = co_await held_by_etcd(last);
    if (held != RowsInHistory::differ) co_return checkpoint;
    reason = "etcd's history no longer holds the last mirrored revision " + std::to_string(last.front().revision);
  }
  const std::int64_t kept = co_await rewind(checkpoint, revision, cluster_id, reason);
  co_return kept;
}

asio::awaitable<std::vector<MirroredRow>> Mirror::mirrored_rows_at_or_below(std::int64_t revision) {
  auto result = co_await pg_.query(
      "SELECT e.key, e.value, e.value_bytes, e.revision, e.tombstone, e.create_revision, e.version, e.lease "
      "FROM (SELECT max(revision) AS revision FROM etcd WHERE revision <= $2 AND NOT tombstone "
      "      AND ($1 = '' OR starts_with(key, $1))) m "
      "JOIN LATERAL (SELECT * FROM etcd WHERE revision = m.revision AND NOT tombstone AND ($1 = '' OR starts_with(key, $1)) "
      "              ORDER BY key LIMIT " + std::to_string(kRowsProbed) + ") e ON true",
      pg_params(PgParam::text(prefix()), PgParam::int64(revision)));
  std::vector<MirroredRow> rows;
  for (int i = 0; i < result.rows(); ++i) {
    MirroredRow row;
    row.key = std::string(result.text(i, 0));
    if (!result.is_null(i, 1))
      row.value = std::string(result.text(i, 1));
    else if (!result.is_null(i, 2))
      row.value = result.bytea(i, 2);
    row.revision = result.int64(i, 3);
    row.tombstone = result.boolean(i, 4);
    if (!result.is_null(i, 5)) row.create_revision = result.int64(i, 5);
    if (!result.is_null(i, 6)) row.version = result.int64(i, 6);
    if (!result.is_null(i, 7)) row.lease = result.int64(i, 7);
    rows.push_back(std::move(row));
  }
  co_return rows;
}

asio::awaitable<RowsInHistory> Mirror::held_by_etcd(const std::vector<MirroredRow>& rows) {
  for (const auto& row : rows) {
    try {
      auto at_request = key_at_request(row.key, row.revision);
      auto at = co_await etcd_.range(at_request);
      const bool held = history_holds_put(row, first_kv(at));
      if (!held) co_return RowsInHistory::differ;
    } catch (const SyncError& error) {
      if (error.kind() != ErrorKind::compacted) throw;
      co_return RowsInHistory::compacted;
    }
  }
  co_return RowsInHistory::held;
}

asio::awaitable<std::vector<std::optional<std::string>>> Mirror::wal_writes_taken_away(std::int64_t kept) {
  auto rows = co_await pg_.query(
      "SELECT id, key, revision, coalesce(convert_to(value, 'UTF8'), value_bytes), value IS NULL AND value_bytes IS NULL "
      "FROM etcd_wal WHERE status = 'success' AND revision > $2 AND ($1 = '' OR starts_with(key, $1)) ORDER BY id",
      pg_params(PgParam::text(prefix()), PgParam::int64(kept)));
  std::vector<std::optional<std::string>> ids;
  for (int i = 0; i < rows.rows(); ++i) {
    throw_if_stopping();
    MirroredRow row;
    row.key = std::string(rows.text(i, 1));
    row.revision = rows.int64(i, 2);
    const bool is_delete = rows.boolean(i, 4);
    if (!is_delete) row.value = rows.bytea(i, 3);
    bool held = false;
    try {
      auto at_request = key_at_request(row.key, row.revision);
      auto at = co_await etcd_.range(at_request);
      if (!is_delete) {
        held = history_holds_put(row, first_kv(at));
      } else {
        auto before_request = key_at_request(row.key, row.revision - 1);
        auto before = co_await etcd_.range(before_request);
        held = history_holds_delete(first_kv(before), first_kv(at));
      }
    } catch (const SyncError& error) {
      const bool future = std::string_view(error.what()).find("future revision") != std::string_view::npos;
      if (error.kind() == ErrorKind::compacted) held = true;  // cannot tell: left as it is
      else if (!future) throw;
    }
    if (!held) ids.push_back(std::string(rows.text(i, 0)));
  }
  co_return ids;
}

asio::awaitable<std::int64_t> Mirror::rewind(std::int64_t checkpoint, std::int64_t revision,
                                              std::uint64_t cluster_id, const std::string& reason) {
  const auto detected = std::chrono::steady_clock::now();
  status_.set(MirrorState::rewinding);
  log_error("etcd went back in time", rewind_fields(recorded_cluster_, cluster_id, checkpoint, revision, reason));
  ++stats_.etcd_rollbacks;

  KeptThroughSearch search(std::min(checkpoint, revision));
  while (auto probe = search.next()) {
    throw_if_stopping();
    auto rows = co_await mirrored_rows_at_or_below(*probe);
    std::int64_t rows_at = 0;
    auto what = RowsInHistory::held;
    if (!rows.empty()) {
      rows_at = rows.front().revision;
      what = co_await held_by_etcd(rows);
    }
    search.result(*probe, rows_at, what);
  }
  const std::int64_t kept = search.kept_through();
  const auto taken_away = co_await wal_writes_taken_away(kept);

  // One transaction: the record, the rows set apart, the checkpoint moved back, fenced.
  const std::string rollback_id = "currval(pg_get_serial_sequence('etcd_sync_rollbacks', 'id'))";
  std::vector<PgStatement> statements;
  statements.push_back(
      {"INSERT INTO etcd_sync_rollbacks (prefix, reason, old_cluster_id, new_cluster_id, checkpoint, etcd_revision, "
       "kept_through, rows_abandoned, wal_taken_away) "
       "VALUES ($1, $2, $3, $4, $5::bigint, $6::bigint, $7::bigint, 0, $8::bigint) RETURNING id",
       {PgParam::text(prefix()), PgParam::text(reason), PgParam::optional(recorded_cluster_),
        PgParam::text(cluster_id_text(cluster_id)), PgParam::int64(checkpoint), PgParam::int64(revision),
        PgParam::int64(kept), PgParam::int64(static_cast<std::int64_t>(taken_away.size()))}});
  // A success whose write the restore took away says so; it is not sent again (README "When a
  // server goes back in time").
  statements.push_back(
      {"UPDATE etcd_wal SET error_message = 'taken away by an etcd restore (etcd_sync_rollbacks id ' || " +
           rollback_id + " || '): etcd went back to before this write, and its history no longer holds it at "
           "revision ' || revision || '; it is not sent again' WHERE id = ANY($1::bigint[]) AND status = 'success'",
       {PgParam::text(pg_array(taken_away))}});
  statements.push_back(
      {"WITH moved AS (DELETE FROM etcd WHERE revision > $2::bigint AND ($1 = '' OR starts_with(key, $1)) RETURNING *) "
       "INSERT INTO etcd_abandoned (rollback_id, ts, key, value, revision, tombstone, value_bytes, create_revision, "
       "version, lease) SELECT " + rollback_id + ", ts, key, value, revision, tombstone, value_bytes, "
       "create_revision, version, lease FROM moved",
       {PgParam::text(prefix()), PgParam::int64(kept)}});
  statements.push_back(
      {"WITH moved AS (DELETE FROM etcd_sync_rejected WHERE revision > $2::bigint "
       "AND ($1 = '' OR position(convert_to($1, 'UTF8') IN key_bytes) = 1) RETURNING *) "
       "INSERT INTO etcd_abandoned (rollback_id, ts, key_bytes, revision, tombstone, value_bytes, rejected_reason) "
       "SELECT " + rollback_id + ", ts, key_bytes, revision, tombstone, value_bytes, reason FROM moved",
       {PgParam::text(prefix()), PgParam::int64(kept)}});
  statements.push_back({"UPDATE etcd_sync_rollbacks SET rows_abandoned = "
                        "(SELECT count(*) FROM etcd_abandoned WHERE rollback_id = " + rollback_id + ") "
                        "WHERE id = " + rollback_id,
                        {}});
  statements.push_back({"UPDATE etcd_sync_checkpoint SET revision = $2::bigint, etcd_cluster_id = $3, "
                        "updated_at = now() WHERE prefix = $1",
                        {PgParam::text(prefix()), PgParam::int64(kept), PgParam::text(cluster_id_text(cluster_id))}});
  fencing_.append(statements);
  co_await pg_.execute_script("BEGIN");
  auto results = co_await pg_.pipeline(std::move(statements));
  co_await pg_.execute_script("COMMIT");
  status_.working(Peer::postgresql);

  const std::int64_t id = results[0].int64(0, 0);
  const std::int64_t moved = results[2].affected() + results[3].affected();
  recorded_cluster_ = cluster_id_text(cluster_id);
  checkpoint_ = kept;
  stats_.mirrored_revision = kept;
  stats_.etcd_revision = revision;
  rewind_ = Rewind{id, revision, detected};
  LogFields fields{{"component", "mirror"},
                   {"rollback_id", id},
                   {"kept_through", kept},
                   {"rows_abandoned", moved},
                   {"wal_taken_away", static_cast<std::int64_t>(taken_away.size())},
                   {"probes", search.probes()},
                   {"etcd_revision", revision}};
  if (search.unproven()) {
    fields.push_back({"compacted_through", search.compacted_through()});
    log_warn("etcd compacted the history that would prove the rows below; they are set apart as well, and the "
             "mirror resynchronizes from a snapshot",
             fields);
  }
  log_warn("rows of the abandoned etcd timeline moved to etcd_abandoned; mirroring again from the revision etcd "
           "still holds",
           fields);
  co_return kept;
}

asio::awaitable<void> Mirror::check_postgres_timeline(std::int64_t checkpoint) {
  LogFields fields{{"component", "mirror"}};
  std::vector<std::string> signs;
  if (checkpoint_ > checkpoint) {
    // This process committed checkpoint_; PostgreSQL now has less: it lost committed transactions.
    signs.push_back("its checkpoint is below the one this process committed");
    fields.push_back({"committed_checkpoint", checkpoint_});
    fields.push_back({"checkpoint", checkpoint});
  }
  std::optional<PgResult> identity;
  if (!pg_identity_refused_) {
    try {
      identity = co_await pg_.query(
          "SELECT (SELECT system_identifier::text FROM pg_control_system()), "
          "  (SELECT timeline_id FROM pg_control_checkpoint()), pg_system_identifier, pg_timeline "
          "FROM etcd_sync_checkpoint WHERE prefix = $1",
          pg_params(PgParam::text(prefix())));
    } catch (const SyncError& error) {
      if (error.sqlstate() != "42501") throw;  // insufficient_privilege: PostgreSQL docs, Appendix A
      pg_identity_refused_ = true;
      log_info("this role may not read PostgreSQL's system identifier and timeline (pg_control_system, "
               "pg_control_checkpoint: superuser or pg_monitor); a timeline change is not looked for",
               {{"component", "mirror"}, {"error", error.what()}});
    }
  }
  bool record = false;
  if (identity && identity->rows() == 1 && !identity->is_null(0, 0)) {
    const std::string system(identity->text(0, 0));
    const std::int64_t timeline = identity->int64(0, 1);
    const auto recorded_system = identity->optional_text(0, 2);
    const auto recorded_timeline = optional_int64(*identity, 3);
    record = recorded_system != system || recorded_timeline != timeline;
    if (recorded_system && *recorded_system != system) signs.push_back("its system identifier changed");
    if (recorded_timeline && *recorded_timeline != timeline) signs.push_back("it is on another timeline");
    if (recorded_system) fields.push_back({"old_system_identifier", *recorded_system});
    fields.push_back({"new_system_identifier", system});
    if (recorded_timeline) fields.push_back({"old_timeline", *recorded_timeline});
    fields.push_back({"new_timeline", timeline});
  }
  if (!signs.empty()) {
    std::string reason;
    for (const auto& sign : signs) reason += (reason.empty() ? "" : "; ") + sign;
    fields.insert(fields.begin() + 1, {"reason", reason});
    log_error("PostgreSQL went back in time; the mirror goes on from the checkpoint PostgreSQL has", fields);
    ++stats_.postgresql_rollbacks;
  }
  if (record)
    co_await pg_.query("UPDATE etcd_sync_checkpoint SET pg_system_identifier = (SELECT system_identifier::text FROM "
                       "pg_control_system()), pg_timeline = (SELECT timeline_id FROM pg_control_checkpoint()) "
                       "WHERE prefix = $1",
                       pg_params(PgParam::text(prefix())));
}

asio::awaitable<std::optional<std::string>> Mirror::rows_newer_than_etcd() {
  // In one timeline a key's mod_revision at the snapshot is at least the revision of every row
  // mirrored for it (each row is a change of the key at or before the snapshot).
  auto result = co_await pg_.query(
      "SELECT s.key, s.revision, l.revision FROM etcd_sync_snapshot s "
      "JOIN LATERAL (SELECT revision FROM etcd WHERE key = s.key ORDER BY revision DESC LIMIT 1) l ON true "
      "WHERE l.revision > s.revision LIMIT 1");
  if (result.rows() == 0) co_return std::nullopt;
  co_return "the mirror has a row of " + std::string(result.text(0, 0)) + " at revision " +
      std::string(result.text(0, 2)) + ", newer than etcd's mod_revision " + std::string(result.text(0, 1));
}

asio::awaitable<void> Mirror::note_caught_up() {
  if (!rewind_ || checkpoint_ < rewind_->etcd_revision || dry_run_) co_return;
  co_await pg_.query("UPDATE etcd_sync_rollbacks SET caught_up_at = now() WHERE id = $1",
                     pg_params(PgParam::int64(rewind_->id)));
  const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                          rewind_->detected);
  log_info("the mirror caught up with etcd after it went back in time",
           {{"component", "mirror"}, {"rollback_id", rewind_->id}, {"revision", checkpoint_},
            {"took_ms", static_cast<std::int64_t>(took.count())}});
  rewind_.reset();
}

std::optional<SyncError> Mirror::timeline_suspect(const etcdserverpb::ResponseHeader& header) {
  const auto sign = read_timeline(recorded_cluster_, checkpoint_, header.cluster_id(), header.revision());
  if (sign != TimelineSign::new_cluster && sign != TimelineSign::behind) return std::nullopt;
  timeline_suspect_ = true;
  std::string message = sign == TimelineSign::new_cluster
                            ? "a watch response from etcd cluster " + cluster_id_text(header.cluster_id()) +
                                  ", not the checkpoint's " + recorded_cluster_.value_or("")
                            : "a watch response at revision " + std::to_string(header.revision()) +
                                  ", below the checkpoint " + std::to_string(checkpoint_);
  return SyncError(ErrorKind::transient, message, Peer::etcd);
}

}  // namespace etcd_sync
