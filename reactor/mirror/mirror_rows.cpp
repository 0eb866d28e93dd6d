#include "reactor/mirror/mirror_rows.hpp"

#include "reactor/keys/pg_text.hpp"

#include <algorithm>

namespace etcd_sync {

std::optional<MirrorRow> make_row(std::string key, std::string value, std::int64_t revision, bool tombstone,
                                  RejectedKey& rejected) {
  if (!is_text(key)) {
    const char* reason = key.find('\0') != std::string::npos ? "key contains a NUL byte" : "key is not valid UTF-8";
    rejected = {std::move(key), tombstone ? std::nullopt : std::optional<std::string>(std::move(value)), revision,
                tombstone, reason};
    return std::nullopt;
  }
  MirrorRow row{std::move(key), std::nullopt, std::nullopt, revision, tombstone, std::nullopt};
  if (!tombstone) {
    if (is_text(value))
      row.value = std::move(value);
    else
      row.value_bytes = std::move(value);
  }
  return row;
}

namespace {

std::optional<MirrorRow> with_meta(std::optional<MirrorRow> row, const mvccpb::KeyValue& kv, bool tombstone) {
  if (row && !tombstone) row->meta = KeyMeta{kv.create_revision(), kv.version(), kv.lease()};
  return row;
}

}  // namespace

std::optional<MirrorRow> make_row(const mvccpb::KeyValue& kv, bool tombstone, RejectedKey& rejected) {
  return with_meta(make_row(kv.key(), kv.value(), kv.mod_revision(), tombstone, rejected), kv, tombstone);
}

std::optional<MirrorRow> make_row(mvccpb::KeyValue&& kv, bool tombstone, RejectedKey& rejected) {
  const std::int64_t revision = kv.mod_revision();
  auto row = make_row(std::move(*kv.mutable_key()), std::move(*kv.mutable_value()), revision, tombstone, rejected);
  return with_meta(std::move(row), kv, tombstone);
}

void MirrorBatch::add_event(mvccpb::Event event) {
  const bool tombstone = event.type() == mvccpb::Event::DELETE;
  const std::int64_t revision = event.kv().mod_revision();
  RejectedKey rejected;
  if (auto row = make_row(std::move(*event.mutable_kv()), tombstone, rejected))
    rows_.push_back(std::move(*row));
  else
    rejected_.push_back(std::move(rejected));
  (tombstone ? deletes_ : puts_) += 1;
  revision_ = std::max(revision_, revision);
}

void MirrorBatch::advance_to(std::int64_t revision) { revision_ = std::max(revision_, revision); }

void MirrorBatches::add_event(mvccpb::Event event) {
  const std::int64_t revision = event.kv().mod_revision();
  bool new_revision = batches_.empty() || revision > batches_.back().revision();
  if (batches_.empty() || (new_revision && batches_.back().events() >= max_events_)) batches_.emplace_back();
  batches_.back().add_event(std::move(event));
}

void MirrorBatches::advance_to(std::int64_t revision) {
  if (batches_.empty()) batches_.emplace_back();
  batches_.back().advance_to(revision);
}

std::size_t MirrorBatches::events() const {
  std::size_t n = 0;
  for (const auto& batch : batches_) n += batch.events();
  return n;
}

std::vector<PgStatement> MirrorBatches::statements(const std::string& prefix, const std::optional<PgStatement>& fence,
                                                   std::size_t first, std::size_t end) const {
  std::vector<PgStatement> out;
  end = std::min(end, batches_.size());
  const bool wrap = end - std::min(first, end) > 1;
  for (std::size_t i = first; i < end; ++i) {
    if (wrap) out.push_back({"BEGIN", {}, true});
    auto statements = batches_[i].statements(prefix, fence);
    out.insert(out.end(), std::make_move_iterator(statements.begin()), std::make_move_iterator(statements.end()));
    if (wrap) out.push_back({"COMMIT", {}, true});
  }
  return out;
}

std::vector<std::pair<std::size_t, std::size_t>> MirrorBatches::copy_runs(std::size_t max_events) const {
  std::vector<std::pair<std::size_t, std::size_t>> runs;
  std::size_t held = 0;
  for (std::size_t i = 0; i < batches_.size(); ++i) {
    const std::size_t events = batches_[i].events();
    if (runs.empty() || held + events > max_events) {
      runs.push_back({i, i + 1});
      held = events;
    } else {
      runs.back().second = i + 1;
      held += events;
    }
  }
  return runs;
}

std::vector<PgStatement> MirrorBatches::after_copy(const std::string& prefix, const std::optional<PgStatement>& fence,
                                                   std::size_t first, std::size_t end) const {
  std::vector<PgStatement> out;
  std::int64_t revision = 0;
  for (std::size_t i = first; i < end && i < batches_.size(); ++i) {
    append_rejected_inserts(batches_[i].rejected(), out);
    revision = std::max(revision, batches_[i].revision());
  }
  out.push_back(checkpoint_statement(prefix, revision));
  if (fence) out.push_back(*fence);
  out.push_back({"COMMIT", {}, true});
  return out;
}

std::string copy_in_sql(const std::string& table, const std::string& before) {
  return before + "COPY " + table + " (" + kCopyColumns + ") FROM STDIN";
}

void append_copy_line(std::string& chunk, const MirrorRow& row) {
  append_copy_text(chunk, row.key);
  chunk += '\t';
  if (row.value)
    append_copy_text(chunk, *row.value);
  else
    chunk += "\\N";
  chunk += '\t';
  if (row.value_bytes)
    append_copy_bytea(chunk, *row.value_bytes);
  else
    chunk += "\\N";
  chunk += '\t';
  chunk += std::to_string(row.revision);
  chunk += row.tombstone ? "\tt" : "\tf";
  for (std::int64_t field : {row.meta ? row.meta->create_revision : 0, row.meta ? row.meta->version : 0,
                             row.meta ? row.meta->lease : 0}) {
    chunk += '\t';
    if (row.meta)
      chunk += std::to_string(field);
    else
      chunk += "\\N";
  }
  chunk += '\n';
}

void append_row_inserts(const std::vector<MirrorRow>& rows, std::vector<PgStatement>& out) {
  if (rows.empty()) return;
  std::vector<std::optional<std::string>> keys, values, value_bytes, revisions, tombstones, creates, versions, leases;
  auto meta = [](const MirrorRow& row, std::int64_t KeyMeta::*field) -> std::optional<std::string> {
    if (!row.meta) return std::nullopt;
    return std::to_string((*row.meta).*field);
  };
  for (const auto& row : rows) {
    keys.push_back(row.key);
    values.push_back(row.value);
    value_bytes.push_back(row.value_bytes ? std::optional(bytea_hex(*row.value_bytes)) : std::nullopt);
    revisions.push_back(std::to_string(row.revision));
    tombstones.push_back(row.tombstone ? "t" : "f");
    creates.push_back(meta(row, &KeyMeta::create_revision));
    versions.push_back(meta(row, &KeyMeta::version));
    leases.push_back(meta(row, &KeyMeta::lease));
  }
  out.push_back({"INSERT INTO etcd (key, value, value_bytes, revision, tombstone, create_revision, version, lease) "
                 "SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[], $4::bigint[], $5::boolean[], "
                 "                     $6::bigint[], $7::bigint[], $8::bigint[]) "
                 "ON CONFLICT (key, revision) DO NOTHING",
                 {PgParam::text(pg_array(keys)), PgParam::text(pg_array(values)), PgParam::text(pg_array(value_bytes)),
                  PgParam::text(pg_array(revisions)), PgParam::text(pg_array(tombstones)),
                  PgParam::text(pg_array(creates)), PgParam::text(pg_array(versions)), PgParam::text(pg_array(leases))},
                 true});
}

void append_rejected_inserts(const std::vector<RejectedKey>& rejected, std::vector<PgStatement>& out) {
  for (const auto& r : rejected) {
    out.push_back({"INSERT INTO etcd_sync_rejected (key_bytes, revision, tombstone, value_bytes, reason) "
                   "VALUES ($1::bytea, $2::bigint, $3::boolean, $4::bytea, $5) "
                   "ON CONFLICT (key_bytes, revision) DO NOTHING",
                   {PgParam::bytes(r.key_bytes), PgParam::int64(r.revision),
                    PgParam::text(r.tombstone ? "true" : "false"),
                    r.value_bytes ? PgParam::bytes(*r.value_bytes) : PgParam::null(), PgParam::text(r.reason)}});
  }
}

PgStatement checkpoint_statement(const std::string& prefix, std::int64_t revision) {
  return {"INSERT INTO etcd_sync_checkpoint (prefix, revision) VALUES ($1, $2::bigint) "
          "ON CONFLICT (prefix) DO UPDATE SET revision = greatest(etcd_sync_checkpoint.revision, EXCLUDED.revision), "
          "updated_at = now()",
          {PgParam::text(prefix), PgParam::int64(revision)},
          true};
}

std::vector<PgStatement> MirrorBatch::statements(const std::string& prefix, const std::optional<PgStatement>& fence) const {
  std::vector<PgStatement> out;
  append_row_inserts(rows_, out);
  append_rejected_inserts(rejected_, out);
  out.push_back(checkpoint_statement(prefix, revision_));
  if (fence) out.push_back(*fence);
  return out;
}

}  // namespace etcd_sync
