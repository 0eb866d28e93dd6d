#include "test/chaos/evidence.hpp"

#include "reactor/outbox/wal_txn.hpp"
#include "test/chaos/writers.hpp"
#include "test/support/sync_fixture.hpp"

namespace etcd_sync::chaos {

namespace {

std::optional<std::int64_t> to_revision(const std::optional<std::string>& text) {
  if (!text) return std::nullopt;
  return std::stoll(*text);
}

std::int64_t scalar_or(Deployment& deployment, const std::string& sql, const std::vector<std::optional<std::string>>& params) {
  try {
    testing::PgClient db(deployment.conninfo() + " connect_timeout=2");
    const auto rows = db.exec_params(sql, params);
    if (rows.empty() || !rows[0][0]) return -1;
    return std::stoll(*rows[0][0]);
  } catch (const std::exception&) {
    return -1;
  }
}

}  // namespace

std::int64_t etcd_revision(Deployment& deployment) {
  testing::EtcdTestClient client(deployment.etcd_endpoints().front());
  return client.revision();
}

std::int64_t mirror_checkpoint(Deployment& deployment) {
  return scalar_or(deployment, "SELECT revision FROM etcd_sync_checkpoint WHERE prefix = $1",
                   {deployment.settings().prefix});
}

std::int64_t pending_rows(Deployment& deployment) {
  return scalar_or(deployment, "SELECT count(*) FROM etcd_wal WHERE status = 'pending'", {});
}

CheckInput collect_check_input(Deployment& deployment, const std::string& marker_prefix, std::optional<HaInput> ha) {
  CheckInput input;
  input.prefix = deployment.settings().prefix;
  input.election_prefix = deployment.settings().election_prefix;
  input.marker_prefix = marker_prefix;
  input.mode = deployment.settings().mode;
  input.ha = std::move(ha);
  if (input.ha) input.ha->campaign_prefix = deployment.campaign_prefix();

  const std::string receipt_key = outbox_keys(deployment.settings().election_prefix).receipt;
  testing::EtcdTestClient client(deployment.etcd_endpoints().front());
  const std::int64_t revision = client.revision();
  for (auto& entry : client.history("", 1, revision)) {
    if (entry.key == receipt_key) {
      if (entry.value) input.receipts.push_back(parse_receipt_event(entry.revision, std::move(*entry.value)));
      continue;
    }
    if (input.ha && entry.key.rfind(input.ha->campaign_prefix, 0) == 0) {
      input.ha->campaign_history.push_back({entry.key, entry.value, entry.revision});
      if (entry.key.rfind(input.prefix, 0) != 0) continue;  // (under the prefix too: the checker ignores it there)
    }
    if (entry.key.rfind(input.prefix, 0) != 0 && entry.key.rfind(marker_prefix, 0) != 0) continue;
    input.history.push_back({std::move(entry.key), std::move(entry.value), entry.revision});
  }

  testing::PgClient db(deployment.conninfo());
  for (const auto& row : db.exec_params(
           "SELECT key, coalesce(value, encode(value_bytes, 'escape')), revision, tombstone FROM etcd "
           "WHERE starts_with(key, $1) OR starts_with(key, $2) ORDER BY revision, key",
           {input.prefix, input.election_prefix})) {
    input.mirror.push_back({*row[0], row[1], std::stoll(*row[2]), *row[3] == "t"});
  }
  for (const auto& row : db.exec(std::string(
           "SELECT w.id, w.key, coalesce(w.value, encode(w.value_bytes, 'escape')), w.revision, w.status, w.retry_count, "
           "w.error_message, w.attempt_revision, b.base, b.id IS NOT NULL, b.statement, extract(epoch FROM pg_xact_commit_timestamp(b.xmin)) "
           "FROM etcd_wal w "
           "LEFT JOIN ") +
           kBaseTable + " b ON b.id = w.id ORDER BY w.id")) {
    WalRow wal;
    wal.id = std::stoll(*row[0]);
    wal.key = *row[1];
    wal.value = row[2];
    wal.revision = to_revision(row[3]);
    wal.status = *row[4];
    wal.retry_count = std::stoi(*row[5]);
    wal.error_message = row[6];
    wal.attempt_revision = to_revision(row[7]);
    wal.base = to_revision(row[8]);
    wal.base_known = *row[9] == "t";
    wal.statement = row[10].value_or("");
    if (row[11]) wal.committed_at = std::stod(*row[11]);
    input.wal.push_back(std::move(wal));
  }
  return input;
}

}  // namespace etcd_sync::chaos
