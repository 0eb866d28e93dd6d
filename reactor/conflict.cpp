#include "reactor/conflict.hpp"

#include "reactor/keys.hpp"

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

bool expects_absent(const WalRow& row) { return !row.revision || row.base_is_tombstone; }

std::string describe_base(const WalRow& row) {
  return expects_absent(row) ? std::string("the key being absent") : "revision " + std::to_string(*row.revision);
}

}  // namespace

etcdserverpb::TxnRequest build_txn(const WalRow& row, ConflictResolution resolution) {
  etcdserverpb::TxnRequest txn;
  auto* compare = txn.add_compare();
  compare->set_key(row.key);
  compare->set_result(etcdserverpb::Compare::EQUAL);
  if (expects_absent(row)) {
    compare->set_target(etcdserverpb::Compare::VERSION);
    compare->set_version(0);
  } else {
    compare->set_target(etcdserverpb::Compare::MOD);
    compare->set_mod_revision(*row.revision);
  }
  add_write(row, *txn.mutable_success());
  if (resolution == ConflictResolution::postgres_wins) {
    add_write(row, *txn.mutable_failure());
  }
  // Both branches also read the key, so a conflict can name etcd's revision.
  for (auto* ops : {txn.mutable_success(), txn.mutable_failure()}) {
    auto* range = ops->Add()->mutable_request_range();
    range->set_key(row.key);
    range->set_keys_only(true);
  }
  return txn;
}

WalOutcome decide_txn(const WalRow& row, const etcdserverpb::TxnResponse& response, ConflictResolution resolution) {
  WalOutcome outcome;
  outcome.revision = response.header().revision();
  if (response.succeeded()) return outcome;
  std::string current = "etcd has no such key";
  for (const auto& op : response.responses()) {
    if (op.has_response_range() && op.response_range().kvs_size() > 0) {
      current = "etcd has mod_revision " + std::to_string(op.response_range().kvs(0).mod_revision());
      break;
    }
  }
  outcome.conflict_resolved = true;
  if (resolution == ConflictResolution::postgres_wins) {
    // The write went through unconditionally; the stale base is recorded, not an error.
    return outcome;
  }
  outcome.status = WalStatus::conflict;
  outcome.error_message = "conflict: row was based on " + describe_base(row) + " but " + current +
                          " (etcd revision " + std::to_string(outcome.revision) +
                          "); etcd_wins kept etcd's value";
  return outcome;
}

WalOutcome decide_error(const WalRow& row, const SyncError& error, int max_attempts) {
  WalOutcome outcome;
  outcome.error_message = error.what();
  if (error.kind() == ErrorKind::transient || error.kind() == ErrorKind::cancelled) {
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
