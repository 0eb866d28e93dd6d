#include "reactor/outbox/wal_txn.hpp"

#include "reactor/keys/keys.hpp"

namespace etcd_sync {

const char* to_string(WalStatus status) {
  switch (status) {
    case WalStatus::success: return "success";
    case WalStatus::conflict: return "conflict";
    case WalStatus::failed: return "failed";
    case WalStatus::retry: return "pending";
  }
  return "unknown";
}

std::optional<std::string> reject_reason(const WalRow& row, const std::string& prefix) {
  if (row.key.empty()) return "etcd does not accept an empty key";
  if (!key_in_prefix(row.key, prefix)) return "key is outside the synchronized prefix \"" + prefix + "\"";
  return std::nullopt;
}

namespace {

/// etcd's --max-txn-ops default (embed.DefaultMaxTxnOps).
constexpr int kMaxTxnOps = 128;

void add_write(const WalRow& row, google::protobuf::RepeatedPtrField<etcdserverpb::RequestOp>& ops) {
  auto* op = ops.Add();
  if (row.value) {
    auto* put = op->mutable_request_put();
    put->set_key(row.key);
    put->set_value(*row.value);
  } else {
    op->mutable_request_delete_range()->set_key(row.key);
  }
}

void add_read(const WalRow& row, google::protobuf::RepeatedPtrField<etcdserverpb::RequestOp>& ops) {
  auto* range = ops.Add()->mutable_request_range();
  range->set_key(row.key);
  range->set_keys_only(true);
}

bool expects_absent(const WalRow& row) { return !row.revision || row.base_is_tombstone; }

std::string describe_base(const WalRow& row) {
  return expects_absent(row) ? std::string("the key being absent") : "revision " + std::to_string(*row.revision);
}

/// Whether the row's compare holds against the key as a Range read it (nullptr: absent). etcd
/// compares a missing key as a zero KeyValue (etcdserver/apply.go applyCompare): version 0,
/// mod_revision 0.
bool compare_holds(const WalRow& row, const mvccpb::KeyValue* current) {
  if (expects_absent(row)) return current == nullptr;
  return (current ? current->mod_revision() : 0) == *row.revision;
}

/// The key as the Range at `index` of the answer read it, or nullptr when absent or unanswered.
const mvccpb::KeyValue* read_at(const etcdserverpb::TxnResponse& response, std::size_t index) {
  if (index >= static_cast<std::size_t>(response.responses_size())) return nullptr;
  const auto& op = response.responses(static_cast<int>(index));
  if (!op.has_response_range() || op.response_range().kvs_size() == 0) return nullptr;
  return &op.response_range().kvs(0);
}

std::size_t payload_bytes(const WalRow& row) {
  // The key travels in the compare, the write and the read; the value once.
  return 3 * row.key.size() + (row.value ? row.value->size() : 0);
}

WalOutcome conflict_outcome(const WalRow& row, const mvccpb::KeyValue* current, std::int64_t header_revision) {
  std::string now = current ? "etcd has mod_revision " + std::to_string(current->mod_revision())
                            : std::string("etcd has no such key");
  return WalOutcome{WalStatus::conflict, header_revision,
                    "conflict: row was based on " + describe_base(row) + " but " + now + " (etcd revision " +
                        std::to_string(header_revision) + "); etcd_wins kept etcd's value",
                    true, false};
}

}  // namespace

int max_rows_per_txn(ConflictResolution resolution) {
  return resolution == ConflictResolution::postgres_wins ? kMaxTxnOps / 2 : kMaxTxnOps;
}

std::vector<std::vector<std::size_t>> group_rows_for_txns(const std::vector<const WalRow*>& rows,
                                                          ConflictResolution resolution) {
  std::vector<std::vector<std::size_t>> groups;
  std::size_t bytes = 0;
  const auto max_rows = static_cast<std::size_t>(max_rows_per_txn(resolution));
  for (std::size_t i = 0; i < rows.size(); ++i) {
    std::size_t size = payload_bytes(*rows[i]);
    if (groups.empty() || groups.back().size() >= max_rows || bytes + size > kMaxTxnPayloadBytes) {
      groups.emplace_back();
      bytes = 0;
    }
    groups.back().push_back(i);
    bytes += size;
  }
  return groups;
}

etcdserverpb::TxnRequest build_txn(const std::vector<const WalRow*>& rows, ConflictResolution resolution) {
  etcdserverpb::TxnRequest txn;
  if (resolution == ConflictResolution::postgres_wins) {
    for (const auto* row : rows) add_read(*row, *txn.mutable_success());
    for (const auto* row : rows) add_write(*row, *txn.mutable_success());
    return txn;
  }
  for (const auto* row : rows) {
    auto* compare = txn.add_compare();
    compare->set_key(row->key);
    compare->set_result(etcdserverpb::Compare::EQUAL);
    if (expects_absent(*row)) {
      compare->set_target(etcdserverpb::Compare::VERSION);
      compare->set_version(0);
    } else {
      compare->set_target(etcdserverpb::Compare::MOD);
      compare->set_mod_revision(*row->revision);
    }
    add_write(*row, *txn.mutable_success());
    add_read(*row, *txn.mutable_failure());
  }
  return txn;
}

std::vector<std::optional<WalOutcome>> decide_txn(const std::vector<const WalRow*>& rows,
                                                  const etcdserverpb::TxnResponse& response,
                                                  ConflictResolution resolution) {
  const std::int64_t revision = response.header().revision();
  std::vector<std::optional<WalOutcome>> outcomes(rows.size());
  if (resolution == ConflictResolution::postgres_wins) {
    // Written unconditionally; a stale base is recorded as a resolved conflict, not an error.
    for (std::size_t i = 0; i < rows.size(); ++i)
      outcomes[i] = WalOutcome{WalStatus::success, revision, {}, !compare_holds(*rows[i], read_at(response, i)), false};
    return outcomes;
  }
  if (response.succeeded()) {
    for (auto& outcome : outcomes) outcome = WalOutcome{WalStatus::success, revision, {}, false, false};
    return outcomes;
  }
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const auto* current = read_at(response, i);
    if (rows.size() == 1 || !compare_holds(*rows[i], current)) outcomes[i] = conflict_outcome(*rows[i], current, revision);
  }
  return outcomes;
}

bool worth_retrying(const SyncError& error) {
  return error.kind() == ErrorKind::transient || error.kind() == ErrorKind::cancelled;
}

WalOutcome decide_error(const WalRow& row, const SyncError& error, int max_attempts) {
  WalOutcome outcome;
  outcome.error_message = error.what();
  if (worth_retrying(error)) {
    outcome.transient = true;
    int attempts = row.retry_count + 1;
    if (attempts < max_attempts) {
      outcome.status = WalStatus::retry;
      return outcome;
    }
    outcome.status = WalStatus::failed;
    outcome.error_message = "gave up after " + std::to_string(attempts) + " attempts: " + outcome.error_message;
    return outcome;
  }
  outcome.status = WalStatus::failed;
  return outcome;
}

std::optional<WalOutcome> decide_unknown_attempt(const WalRow& row, const std::optional<mvccpb::KeyValue>& current,
                                                 std::int64_t header_revision, ConflictResolution resolution) {
  if (!row.attempt_revision) return std::nullopt;
  std::int64_t before = *row.attempt_revision;
  // The key still sits at the row's base revision: nothing was written to it since the writer read
  // that revision, so the attempt (which came later) did not take effect. attempt_revision is the
  // outbox's last view of etcd's revision and may lag behind the base; this check does not.
  if (current && row.revision && !row.base_is_tombstone && current->mod_revision() == *row.revision)
    return std::nullopt;
  if (!row.value) {
    // A delete: if the key is gone now, the desired state holds; a repeat would change nothing.
    if (!current) return WalOutcome{WalStatus::success, header_revision, {}, false, false};
    if (current->mod_revision() <= before) return std::nullopt;
  } else {
    if (!current || current->mod_revision() <= before) return std::nullopt;  // nothing happened since
    if (current->value() == *row.value) return WalOutcome{WalStatus::success, current->mod_revision(), {}, false, false};
  }
  // The key changed after the interrupted attempt, and not to this row's value.
  if (resolution == ConflictResolution::postgres_wins) return std::nullopt;  // apply again, unconditionally
  return WalOutcome{WalStatus::conflict, header_revision,
                    "conflict: the key changed in etcd (mod_revision " + std::to_string(current->mod_revision()) +
                        ") while an interrupted attempt based on " + describe_base(row) +
                        " was in doubt; etcd_wins kept etcd's value",
                    true, false};
}

}  // namespace etcd_sync
