// The fault suite's checker: what etcd's own history and the two tables must say after a run of
// concurrent writers under faults (README, "Tests" and "Settled states of an `etcd_wal` row").
// Pure functions: data in, violations out; no servers (test/unit covers them).
//
// What the suite's writers guarantee, and the checker relies on:
// - every value is unique: "w-..." for etcd_wal rows, "e-..." for etcd-side puts;
// - every etcd-side delete is a Txn that also puts a marker key under `marker_prefix` whose value
//   is the deleted key, so the delete's revision is known even when the call's answer was lost;
// - nothing is compacted, so the history is complete from revision 1;
// - each etcd_wal row's base revision (its `revision` at INSERT, overwritten on success) is kept
//   by the writer beside the row.
// And what the outbox guarantees (reactor/outbox/wal_txn.hpp): every applied outbox Txn puts the
// receipt key, whose value names each row it carried by id and fingerprint, so every outbox write
// in etcd's history is tied to its rows, deletes included.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "reactor/outbox/wal_txn.hpp"

namespace etcd_sync::chaos {

enum class ConflictMode { etcd_wins, postgres_wins };

/// One event of etcd's history: a put (value set) or a delete (value nullopt) of one key at one
/// revision. One Txn may hold several events at the same revision (different keys).
struct EtcdEvent {
  std::string key;
  std::optional<std::string> value;
  std::int64_t revision = 0;
};

/// One row of the `etcd` table (value nullopt on a tombstone).
struct MirrorRow {
  std::string key;
  std::optional<std::string> value;
  std::int64_t revision = 0;
  bool tombstone = false;
};

/// One row of `etcd_wal` as it stands after the run, with the base it was inserted with.
struct WalRow {
  std::int64_t id = 0;
  std::string key;
  std::optional<std::string> value;      ///< nullopt: a delete
  std::optional<std::int64_t> revision;  ///< on success: the revision the write created
  std::string status;
  int retry_count = 0;
  std::optional<std::string> error_message;
  std::optional<std::int64_t> attempt_revision;
  std::optional<std::int64_t> base;  ///< the `revision` the row was inserted with (NULL: absent)
  bool base_known = true;            ///< false when the writer's record of the base is missing
  /// The writer's statement that inserted the row ("s-<stream>.<n>"; "" when unknown), and when
  /// its transaction committed (PostgreSQL's commit timestamp, seconds since 1970; nullopt when
  /// unknown). A row with a lower id can commit after one with a higher id: it is not visible
  /// when that one is claimed (F tells such a pair apart).
  std::string statement;
  std::optional<double> committed_at;
};

/// The fingerprint the outbox gives `row` in its receipts: etcd_sync::row_fingerprint of the row
/// as it was inserted (key, put or delete, value, base). nullopt when the base is not known.
std::optional<std::uint32_t> fingerprint(const WalRow& row);

/// One put of the outbox's receipt key ("<election_prefix>outbox/receipt"): one applied outbox Txn.
struct Receipt {
  std::int64_t revision = 0;
  std::string value;  ///< as etcd holds it
  /// etcd_sync::parse_receipt(value): the rows the Txn carried; nullopt when it is no receipt.
  std::optional<std::vector<etcd_sync::ReceiptEntry>> entries;
};

/// A receipt at `revision` with `value` parsed.
Receipt parse_receipt_event(std::int64_t revision, std::string value);

/// The prefix an etcd_wal success that deleted nothing has as its error_message (wal_txn.cpp,
/// applied_outcome).
inline constexpr const char* kNothingDeleted = "nothing to delete";

/// One campaign key in etcd (<election_prefix>campaign/<instance_id>, bound to its lease).
struct CampaignKey {
  std::string instance_id;
  std::int64_t create_revision = 0;  ///< the epoch its instance leads with
  std::int64_t lease = 0;
};

/// One row of etcd_sync_service.
struct InstanceRow {
  std::string instance_id;
  std::string state;     ///< starting | running | stopped
  std::string role;      ///< leader | standby ("" when NULL)
  std::string ha_state;  ///< the elector's state as the instance describes it
  std::optional<std::int64_t> epoch;
  std::int64_t pid = 0;
  double heartbeat_age_seconds = 1e9;  ///< now() - heartbeat_at as PostgreSQL sees it
};

/// The row of etcd_sync_leader: the epoch PostgreSQL lets write, and whose it is.
struct LeaderRow {
  std::int64_t epoch = 0;
  std::string instance_id;
};

/// One look at who leads: etcd's campaign keys, etcd_sync_leader and etcd_sync_service.
struct HaSnapshot {
  std::vector<CampaignKey> keys;  ///< by create_revision: the first is the leader's
  std::optional<LeaderRow> leader_row;
  std::vector<InstanceRow> rows;
  std::string error;  ///< what could not be read (etcd or PostgreSQL did not answer); empty when all was
};

/// An etcd-sync process of the run: its instance_id and the pid it runs as now.
struct ExpectedInstance {
  std::string instance_id;
  std::int64_t pid = 0;
};

/// How fresh an instance's heartbeat must be to count as live (it beats every second).
inline constexpr double kFreshHeartbeatSeconds = 3.0;

/// nullopt when `snapshot` shows exactly one leader that every side agrees on: each of
/// `instances` has a fresh running row written by its current pid; exactly one fresh row has role
/// leader; etcd_sync_leader names it with the epoch its row has; etcd's lowest campaign key is its,
/// created at that epoch; and every instance has a campaign key. Else what is off, in one line.
std::optional<std::string> ha_unsettled(const HaSnapshot& snapshot, const std::vector<ExpectedInstance>& instances);

/// etcd_sync_leader as sampled during the run (a change of epoch or instance_id per sample).
struct EpochSample {
  double at_seconds = 0;  ///< since the run began
  std::int64_t epoch = 0;
  std::string instance_id;
};

/// An instance's log saying it leads ("leading", after taking the epoch over in PostgreSQL).
struct LeadRecord {
  std::string instance_id;
  std::int64_t epoch = 0;
  std::string time;  ///< the log line's timestamp, for the reader
};

/// What high availability is judged on (check H).
struct HaInput {
  std::string campaign_prefix;                ///< <election_prefix>campaign/
  std::vector<EtcdEvent> campaign_history;    ///< etcd's events under campaign_prefix, in revision order
  std::vector<EpochSample> epoch_samples;     ///< in sampling order
  std::vector<LeadRecord> leads;              ///< every instance's, each instance's in its log's order
  std::optional<HaSnapshot> final_snapshot;   ///< the look once settled (before the final SIGTERMs)
  std::vector<ExpectedInstance> instances;    ///< the processes running at that look
};

/// Everything the checker looks at.
struct CheckInput {
  std::string prefix;         ///< the synchronized prefix, e.g. "/chaos/"
  std::string election_prefix;  ///< [ha] election_prefix: etcd-sync's own keys, never mirrored (empty: none)
  std::string marker_prefix;  ///< where etcd-side deletes put their markers, e.g. "/chaos-meta/del/"
  ConflictMode mode = ConflictMode::etcd_wins;
  std::vector<EtcdEvent> history;  ///< etcd's events from revision 1, in revision order (any keys)
  std::vector<Receipt> receipts;   ///< every put of the outbox's receipt key from revision 1
  std::vector<MirrorRow> mirror;   ///< the `etcd` table
  std::vector<WalRow> wal;         ///< the `etcd_wal` table, any order
  std::optional<HaInput> ha;       ///< leadership; nullopt: check H is skipped
};

/// The checks, by the letters README "Tests" gives them (A-H, R), and the status check (S).
enum class Check : char {
  mirror_is_history = 'A',        ///< `etcd` equals etcd's history under the prefix, event by event
  nothing_pending = 'B',          ///< no row is left pending
  success_applied_once = 'C',     ///< a success row's write is in etcd exactly once, at its revision
                                  ///< (and under etcd_wins on top of its base); a delete that
                                  ///< deleted nothing has no revision and no event (see R)
  settled_never_applied = 'D',    ///< no conflict or failed row's write reached etcd
  no_write_without_success = 'E', ///< every outbox write in etcd belongs to a success row
  success_in_id_order = 'F',      ///< success rows of one key reached etcd in id order; where
                                  ///< the earlier row committed after the later one (a late
                                  ///< commit: it was not visible when the later one was claimed)
                                  ///< it is a note, not a violation
  nothing_failed = 'G',           ///< no row failed; under postgres_wins none is a conflict
  high_availability = 'H',        ///< the epoch row only grows; each epoch led is its instance's
                                  ///< campaign key's create_revision, led once; at the end exactly
                                  ///< one live instance leads, and etcd and PostgreSQL agree on it
  receipts = 'R',                 ///< each success row is named by exactly one receipt, at its
                                  ///< revision (a delete that deleted nothing: where the key was
                                  ///< absent); no other row is named; every entry names a row
  known_status = 'S',             ///< every status is pending, success, conflict or failed
};

/// All checks in report order.
const std::vector<Check>& all_checks();
/// One line saying what `check` demands.
const char* describe(Check check);

/// One broken rule, with what is needed to debug it: the row, the key, the revisions and the
/// key's events around them.
struct Violation {
  Check check;
  std::string kind;     ///< what went wrong, in a few words ("no delete at its revision"), for counts
  std::string message;  ///< the details
};

struct CheckReport {
  std::vector<Violation> violations;
  /// What looks like a violation but the product cannot avoid (a late commit under F): printed,
  /// not failing the run.
  std::vector<Violation> notes;
  /// Number of rows, events and so on looked at, for the summary ("rows 1234 ...").
  std::map<std::string, std::size_t> totals;

  bool ok() const { return violations.empty(); }
  std::size_t count(Check check) const;
  /// One line per check: letter, count, what it demands; below it the count of each kind; then
  /// the totals.
  std::string summary() const;
};

/// Runs every check (H only with input.ha). Keys under input.election_prefix are etcd-sync's own:
/// never compared as history, and a row of them in the etcd table is a violation of A. A delete event is the etcd side's when its marker is at its revision, the
/// outbox's when the receipt at its revision names a delete row of that key (whose status C, D or
/// E then judges); any other delete counts under E, naming the key's delete rows whose base fits
/// as suspects.
CheckReport check_run(const CheckInput& input);

/// A row's status is pending, success, conflict or failed (README, "Settled states of an
/// `etcd_wal` row").
bool is_known_status(const std::string& status);

}  // namespace etcd_sync::chaos
