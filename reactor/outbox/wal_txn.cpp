#include "reactor/outbox/wal_txn.hpp"

#include "reactor/keys/keys.hpp"

#include <charconv>
#include <cstdio>

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

OutboxKeys outbox_keys(const std::string& election_prefix) {
  return {election_prefix + "outbox/barrier", election_prefix + "outbox/receipt"};
}

std::optional<std::string> reject_reason(const WalRow& row, const std::string& prefix,
                                         const std::string& election_prefix) {
  if (row.key.empty()) return "etcd does not accept an empty key";
  if (!key_in_prefix(row.key, prefix)) return "key is outside the synchronized prefix \"" + prefix + "\"";
  if (!election_prefix.empty() && row.key.starts_with(election_prefix))
    return "key is under [ha] election_prefix \"" + election_prefix +
           "\", which holds etcd-sync's own keys (leader election, barrier, receipts); etcd_wal cannot write there";
  return std::nullopt;
}

namespace {

constexpr std::string_view kReceiptVersion = "v1 ";

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

void add_read(const std::string& key, google::protobuf::RepeatedPtrField<etcdserverpb::RequestOp>& ops) {
  auto* range = ops.Add()->mutable_request_range();
  range->set_key(key);
  range->set_keys_only(true);
}

void add_receipt(const std::vector<const WalRow*>& rows, const TxnFence& fence,
                 google::protobuf::RepeatedPtrField<etcdserverpb::RequestOp>& ops) {
  auto* put = ops.Add()->mutable_request_put();
  put->set_key(fence.keys.receipt);
  put->set_value(receipt_value(rows));
}

void add_barrier_compare(etcdserverpb::TxnRequest& txn, const TxnFence& fence) {
  auto* compare = txn.add_compare();
  compare->set_key(fence.keys.barrier);
  compare->set_result(etcdserverpb::Compare::EQUAL);
  compare->set_target(etcdserverpb::Compare::MOD);
  compare->set_mod_revision(fence.barrier_revision);
}

/// The leader's compare and read, first of their lists (none without a leader key).
void add_leader_fence(etcdserverpb::TxnRequest& txn, const TxnFence& fence) {
  if (fence.leader_key.empty()) return;
  auto* compare = txn.add_compare();
  compare->set_key(fence.leader_key);
  compare->set_result(etcdserverpb::Compare::EQUAL);
  compare->set_target(etcdserverpb::Compare::CREATE);
  compare->set_create_revision(fence.epoch);
  auto* range = txn.add_failure()->mutable_request_range();
  range->set_key(fence.leader_key);
  range->set_keys_only(true);
}

/// Where the failure branch's reads of the rows' keys begin: after the leader key's and the barrier's.
std::size_t first_row_read(const TxnFence& fence) { return fence.leader_key.empty() ? 1 : 2; }

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
  // The key travels in the compare, the write and the read; the value once; the receipt entry.
  return 3 * row.key.size() + (row.value ? row.value->size() : 0) + 24;
}

WalOutcome conflict_outcome(const WalRow& row, const mvccpb::KeyValue* current, std::int64_t header_revision) {
  std::string now = current ? "etcd has mod_revision " + std::to_string(current->mod_revision())
                            : std::string("etcd has no such key");
  return WalOutcome{WalStatus::conflict, header_revision,
                    "conflict: row was based on " + describe_base(row) + " but " + now + " (etcd revision " +
                        std::to_string(header_revision) + "); etcd_wins kept etcd's value",
                    true, false, false};
}

void fnv1a(std::uint32_t& hash, std::string_view bytes) {
  for (unsigned char c : bytes) {
    hash ^= c;
    hash *= 16777619u;
  }
}

bool contains(const std::string& text, std::string_view needle) { return text.find(needle) != std::string::npos; }

}  // namespace

std::uint32_t row_fingerprint(const WalRow& row) {
  std::uint32_t hash = 2166136261u;
  fnv1a(hash, row.key);
  fnv1a(hash, std::string_view("\0", 1));
  if (row.value) {
    fnv1a(hash, "P");
    fnv1a(hash, *row.value);
  } else {
    fnv1a(hash, "D");
  }
  fnv1a(hash, std::string_view("\0", 1));
  fnv1a(hash, row.revision ? std::to_string(*row.revision) : std::string("-"));
  return hash;
}

std::string receipt_value(const std::vector<const WalRow*>& rows) {
  std::string out(kReceiptVersion);
  char hex[16];
  for (std::size_t i = 0; i < rows.size(); ++i) {
    if (i > 0) out += ',';
    out += std::to_string(rows[i]->id);
    std::snprintf(hex, sizeof hex, ":%08x", row_fingerprint(*rows[i]));
    out += hex;
  }
  return out;
}

std::optional<std::vector<ReceiptEntry>> parse_receipt(std::string_view value) {
  if (!value.starts_with(kReceiptVersion)) return std::nullopt;
  value.remove_prefix(kReceiptVersion.size());
  std::vector<ReceiptEntry> entries;
  while (!value.empty()) {
    auto comma = value.find(',');
    std::string_view entry = value.substr(0, comma);
    value = comma == std::string_view::npos ? std::string_view{} : value.substr(comma + 1);
    auto colon = entry.find(':');
    if (colon == std::string_view::npos) return std::nullopt;
    ReceiptEntry parsed;
    auto id = std::from_chars(entry.data(), entry.data() + colon, parsed.id);
    auto fp = std::from_chars(entry.data() + colon + 1, entry.data() + entry.size(), parsed.fingerprint, 16);
    if (id.ec != std::errc() || id.ptr != entry.data() + colon || fp.ec != std::errc() ||
        fp.ptr != entry.data() + entry.size())
      return std::nullopt;
    entries.push_back(parsed);
  }
  return entries;
}

int max_rows_per_txn(ConflictResolution resolution) {
  // etcd_wins: compares = rows + 2 (leader, barrier), success = rows + 1 (receipt), failure = rows + 2.
  // postgres_wins: success = 2 * rows + 1 (reads, writes, receipt).
  return resolution == ConflictResolution::postgres_wins ? (kMaxTxnOps - 1) / 2 : kMaxTxnOps - 2;
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

etcdserverpb::TxnRequest barrier_txn(const TxnFence& fence) {
  etcdserverpb::TxnRequest txn;
  add_leader_fence(txn, fence);
  auto* put = txn.add_success()->mutable_request_put();
  put->set_key(fence.keys.barrier);
  put->set_value("etcd-sync outbox barrier");
  return txn;
}

bool deposed(const etcdserverpb::TxnResponse& response, const TxnFence& fence) {
  if (response.succeeded() || fence.leader_key.empty()) return false;
  const auto* leader = read_at(response, 0);
  return !leader || leader->create_revision() != fence.epoch;
}

etcdserverpb::TxnRequest build_txn(const std::vector<const WalRow*>& rows, ConflictResolution resolution,
                                   const TxnFence& fence) {
  etcdserverpb::TxnRequest txn;
  add_leader_fence(txn, fence);
  add_barrier_compare(txn, fence);
  add_read(fence.keys.barrier, *txn.mutable_failure());
  if (resolution == ConflictResolution::postgres_wins) {
    for (const auto* row : rows) add_read(row->key, *txn.mutable_success());
    for (const auto* row : rows) add_write(*row, *txn.mutable_success());
    add_receipt(rows, fence, *txn.mutable_success());
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
    add_read(row->key, *txn.mutable_failure());
  }
  add_receipt(rows, fence, *txn.mutable_success());
  return txn;
}

WalOutcome applied_outcome(const WalRow& row, std::int64_t revision, std::optional<bool> key_existed) {
  WalOutcome outcome{WalStatus::success, revision, {}, false, false, false};
  if (row.value) return outcome;
  const bool existed = key_existed.value_or(!expects_absent(row));
  if (!existed) {
    outcome.revision = 0;
    outcome.nothing_deleted = true;
    outcome.error_message = "nothing to delete: the key was already absent when the delete was applied (etcd revision " +
                            std::to_string(revision) + ")";
  }
  return outcome;
}

TxnVerdict decide_txn(const std::vector<const WalRow*>& rows, const etcdserverpb::TxnResponse& response,
                      ConflictResolution resolution, const TxnFence& fence) {
  const std::int64_t revision = response.header().revision();
  TxnVerdict verdict;
  verdict.outcomes.resize(rows.size());
  if (deposed(response, fence)) {
    verdict.deposed = true;
    return verdict;
  }
  if (!response.succeeded()) {
    // The failure branch reads the barrier next: if it moved, no row's compare was looked at.
    // postgres_wins compares nothing else, so its failure is always the barrier's.
    const auto* barrier = read_at(response, first_row_read(fence) - 1);
    const std::int64_t barrier_now = barrier ? barrier->mod_revision() : 0;
    if (barrier_now != fence.barrier_revision || resolution == ConflictResolution::postgres_wins) {
      verdict.fenced = true;
      verdict.barrier_revision = barrier_now;
      return verdict;
    }
  }
  if (resolution == ConflictResolution::postgres_wins) {
    // Written unconditionally (but for the barrier); a stale base is a resolved conflict, not an error.
    for (std::size_t i = 0; i < rows.size(); ++i) {
      const auto* current = read_at(response, i);
      auto outcome = applied_outcome(*rows[i], revision, current != nullptr);
      outcome.conflict_resolved = !compare_holds(*rows[i], current);
      verdict.outcomes[i] = std::move(outcome);
    }
    return verdict;
  }
  if (response.succeeded()) {
    for (std::size_t i = 0; i < rows.size(); ++i) verdict.outcomes[i] = applied_outcome(*rows[i], revision, std::nullopt);
    return verdict;
  }
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const auto* current = read_at(response, i + first_row_read(fence));  // after the fences' reads
    if (rows.size() == 1 || !compare_holds(*rows[i], current))
      verdict.outcomes[i] = conflict_outcome(*rows[i], current, revision);
  }
  return verdict;
}

TxnErrorKind classify_txn_error(const SyncError& error) {
  switch (error.kind()) {
    case ErrorKind::transient:
    case ErrorKind::cancelled:
    case ErrorKind::fenced:
      return TxnErrorKind::outage;
    case ErrorKind::permission_denied:
      return TxnErrorKind::row_permanent;
    case ErrorKind::compacted:
      return TxnErrorKind::row_transient;
    case ErrorKind::permanent:
      break;
  }
  const std::string text = error.what();
  // etcd's own refusals of a request (api/v3rpc/rpctypes/error.go) and gRPC's size limit.
  for (std::string_view refusal : {"request is too large", "larger than max", "too many operations",
                                   "duplicate key", "key is not provided", "permission denied"})
    if (contains(text, refusal)) return TxnErrorKind::row_permanent;
  return TxnErrorKind::row_transient;
}

WalOutcome decide_row_error(const WalRow& row, const SyncError& error, int max_attempts) {
  WalOutcome outcome;
  const std::string text = error.what();
  if (classify_txn_error(error) == TxnErrorKind::row_permanent) {
    outcome.status = WalStatus::failed;
    const std::size_t bytes = row.key.size() + (row.value ? row.value->size() : 0);
    if (contains(text, "too large") || contains(text, "larger than max")) {
      outcome.error_message = "etcd refused the write as too large: etcd accepts requests of at most its "
                              "--max-request-bytes (1.5 MiB unless configured otherwise), and this row's key and "
                              "value are " + std::to_string(bytes) + " bytes (" + text + ")";
    } else if (error.kind() == ErrorKind::permission_denied || contains(text, "permission denied")) {
      outcome.error_message = "etcd denied permission to write key \"" + row.key +
                              "\": the etcd role etcd-sync runs as needs readwrite permission on it (" + text + ")";
    } else if (contains(text, "too many operations")) {
      outcome.error_message = "etcd refused the Txn as having too many operations: etcd-sync needs --max-txn-ops of "
                              "at least 3 to write one row (" + text + ")";
    } else {
      outcome.error_message = "etcd refused the write: " + text;
    }
    return outcome;
  }
  outcome.transient = true;
  outcome.error_message = text;
  const int attempts = row.retry_count + 1;
  if (attempts < max_attempts) {
    outcome.status = WalStatus::retry;
    return outcome;
  }
  outcome.status = WalStatus::failed;
  outcome.error_message = "gave up after " + std::to_string(attempts) + " attempts: " + text;
  return outcome;
}

}  // namespace etcd_sync
