#include "test/chaos/checker.hpp"

#include <algorithm>
#include <cstdio>
#include <set>
#include <sstream>
#include <utility>

namespace etcd_sync::chaos {
namespace {

bool starts_with(const std::string& text, const std::string& prefix) {
  return text.compare(0, prefix.size(), prefix) == 0;
}

std::string show(const std::optional<std::int64_t>& revision) {
  return revision ? std::to_string(*revision) : std::string("NULL");
}

std::string show_value(const std::optional<std::string>& value) {
  return value ? "put " + *value : std::string("delete");
}

std::string hex(std::uint32_t value) {
  char text[16];
  std::snprintf(text, sizeof text, "%08x", value);
  return text;
}

/// A key under [ha] election_prefix: etcd-sync's own (campaign keys, the outbox's barrier and
/// receipt), never mirrored, even when the synchronized prefix covers it.
bool is_own_key(const CheckInput& input, const std::string& key) {
  return !input.election_prefix.empty() && starts_with(key, input.election_prefix);
}

/// A success delete that found the key already absent: no revision, no event (wal_txn.hpp).
bool deleted_nothing(const WalRow& row) {
  return row.status == "success" && !row.value && !row.revision && row.error_message &&
         starts_with(*row.error_message, kNothingDeleted);
}

bool is_settled_unapplied(const WalRow& row) { return row.status == "conflict" || row.status == "failed"; }

/// The run's history and rows, indexed the ways the checks look them up.
class Evidence {
 public:
  explicit Evidence(const CheckInput& input) : ha_(input.ha ? &*input.ha : nullptr) {
    for (const auto& event : input.history) {
      if (starts_with(event.key, input.marker_prefix)) {
        if (event.value) etcd_side_deletes_[event.revision].insert(*event.value);
        continue;
      }
      if (!starts_with(event.key, input.prefix) || is_own_key(input, event.key)) continue;
      by_key_[event.key].push_back(&event);
      at_[{event.key, event.revision}] = &event;
      if (event.value) puts_by_value_[*event.value].push_back(&event);
    }
    for (auto& [key, events] : by_key_) {
      std::stable_sort(events.begin(), events.end(),
                       [](const EtcdEvent* a, const EtcdEvent* b) { return a->revision < b->revision; });
    }
    for (const auto& row : input.wal) {
      if (row.value) rows_by_value_[*row.value].push_back(&row);
      rows_by_key_[row.key].push_back(&row);
      rows_by_id_[row.id].push_back(&row);
      if (!row.value && row.status == "success" && row.revision) success_deletes_[{row.key, *row.revision}].push_back(&row);
    }
    for (auto& [key, rows] : rows_by_key_) {
      std::sort(rows.begin(), rows.end(), [](const WalRow* a, const WalRow* b) { return a->id < b->id; });
    }
    for (const auto& receipt : input.receipts) {
      receipt_at_[receipt.revision].push_back(&receipt);
      if (!receipt.entries) continue;
      for (const auto& entry : *receipt.entries) {
        for (const auto* row : rows_with_id(entry.id)) {
          const auto print = fingerprint(*row);
          if (print && *print != entry.fingerprint) continue;  // another row (or a stray entry)
          named_by_[row].push_back(receipt.revision);
          named_at_[receipt.revision].push_back(row);
        }
      }
    }
    for (auto& [row, revisions] : named_by_) std::sort(revisions.begin(), revisions.end());
  }

  const EtcdEvent* at(const std::string& key, std::int64_t revision) const {
    const auto it = at_.find({key, revision});
    return it == at_.end() ? nullptr : it->second;
  }
  /// The key's last event before `revision`, or nullptr.
  const EtcdEvent* before(const std::string& key, std::int64_t revision) const {
    const EtcdEvent* last = nullptr;
    for (const auto* event : events_of(key)) {
      if (event->revision >= revision) break;
      last = event;
    }
    return last;
  }
  const std::vector<const EtcdEvent*>& events_of(const std::string& key) const {
    static const std::vector<const EtcdEvent*> none;
    const auto it = by_key_.find(key);
    return it == by_key_.end() ? none : it->second;
  }
  const std::vector<const EtcdEvent*>& puts_of(const std::string& value) const {
    static const std::vector<const EtcdEvent*> none;
    const auto it = puts_by_value_.find(value);
    return it == puts_by_value_.end() ? none : it->second;
  }
  const std::vector<const WalRow*>& rows_with_value(const std::string& value) const {
    static const std::vector<const WalRow*> none;
    const auto it = rows_by_value_.find(value);
    return it == rows_by_value_.end() ? none : it->second;
  }
  const std::vector<const WalRow*>& rows_of(const std::string& key) const {
    static const std::vector<const WalRow*> none;
    const auto it = rows_by_key_.find(key);
    return it == rows_by_key_.end() ? none : it->second;
  }
  const std::vector<const WalRow*>& success_deletes_at(const std::string& key, std::int64_t revision) const {
    static const std::vector<const WalRow*> none;
    const auto it = success_deletes_.find({key, revision});
    return it == success_deletes_.end() ? none : it->second;
  }
  const std::vector<const WalRow*>& rows_with_id(std::int64_t id) const {
    static const std::vector<const WalRow*> none;
    const auto it = rows_by_id_.find(id);
    return it == rows_by_id_.end() ? none : it->second;
  }
  /// The revisions of the receipts naming `row` (its id and fingerprint; the id alone when the
  /// base is unknown), ascending.
  const std::vector<std::int64_t>& receipts_naming(const WalRow& row) const {
    static const std::vector<std::int64_t> none;
    const auto it = named_by_.find(&row);
    return it == named_by_.end() ? none : it->second;
  }
  /// The rows the receipt (or receipts) at `revision` name.
  const std::vector<const WalRow*>& rows_named_at(std::int64_t revision) const {
    static const std::vector<const WalRow*> none;
    const auto it = named_at_.find(revision);
    return it == named_at_.end() ? none : it->second;
  }
  /// The delete rows of `key` the receipt at `revision` names: the outbox Txn that holds a delete of
  /// `key` at `revision`, if any, carried exactly these.
  std::vector<const WalRow*> delete_rows_named_at(const std::string& key, std::int64_t revision) const {
    std::vector<const WalRow*> out;
    for (const auto* row : rows_named_at(revision))
      if (row->key == key && !row->value) out.push_back(row);
    return out;
  }
  bool has_receipt_at(std::int64_t revision) const { return receipt_at_.count(revision) > 0; }

  /// "receipt at r12 names rows 4 (/c/a delete, success rev 12), 7 (...)", or that there is none.
  std::string receipt_text(std::int64_t revision) const {
    const auto it = receipt_at_.find(revision);
    if (it == receipt_at_.end()) return "    no receipt at r" + std::to_string(revision) + "\n";
    std::string out;
    for (const auto* receipt : it->second) {
      out += "    receipt at r" + std::to_string(revision) + ": \"" + receipt->value + "\"";
      std::string rows;
      for (const auto* row : rows_named_at(revision)) {
        rows += (rows.empty() ? "" : ", ") + std::to_string(row->id) + " (" + row->key + " " + show_value(row->value) +
                ", " + row->status + " rev " + show(row->revision) + ")";
      }
      out += rows.empty() ? std::string(" names no row of etcd_wal\n") : " names rows " + rows + "\n";
    }
    return out;
  }

  /// Whose campaign key was the lowest just before `revision` (the only instance whose fenced
  /// outbox Txn could apply there), as "chaos-1 (epoch 42)"; "none" when no key was; "" without
  /// HA input.
  std::string leader_at(std::int64_t revision) const {
    if (ha_ == nullptr) return "";
    std::map<std::string, std::int64_t> alive;  // key -> create_revision
    for (const auto& event : ha_->campaign_history) {
      if (event.revision >= revision) break;
      if (!event.value) {
        alive.erase(event.key);
      } else {
        alive.emplace(event.key, event.revision);  // a key is created once, never updated
      }
    }
    const std::pair<const std::string, std::int64_t>* lowest = nullptr;
    for (const auto& entry : alive)
      if (lowest == nullptr || entry.second < lowest->second) lowest = &entry;
    if (lowest == nullptr) return "none";
    return lowest->first.substr(std::min(lowest->first.size(), ha_->campaign_prefix.size())) + " (epoch " +
           std::to_string(lowest->second) + ")";
  }

  bool is_etcd_side_delete(const std::string& key, std::int64_t revision) const {
    const auto it = etcd_side_deletes_.find(revision);
    return it != etcd_side_deletes_.end() && it->second.count(key) > 0;
  }
  const std::map<std::string, std::vector<const EtcdEvent*>>& keys() const { return by_key_; }

  /// Who wrote `event`, as far as the evidence tells.
  std::string origin(const EtcdEvent& event) const {
    if (!event.value) {
      std::string who;
      if (is_etcd_side_delete(event.key, event.revision)) who = "etcd-side delete";
      for (const auto* row : delete_rows_named_at(event.key, event.revision))
        who += (who.empty() ? "" : " + ") + std::string("row ") + std::to_string(row->id) + " " + row->status + " rev " +
               show(row->revision) + " (receipt)";
      return who.empty() ? "unattributed" : who;
    }
    if (starts_with(*event.value, "e-")) return "etcd-side put";
    std::string who;
    for (const auto* row : rows_with_value(*event.value))
      who += (who.empty() ? "" : ", ") + std::string("row ") + std::to_string(row->id) + " " + row->status +
             " rev " + show(row->revision);
    return who.empty() ? "no row has this value" : who;
  }

  /// The key's events around `revision` (up to `radius` either side), one per line, each with
  /// its origin; a line marks where `revision` falls.
  std::string context(const std::string& key, std::optional<std::int64_t> revision, std::size_t radius = 3) const {
    const auto& events = events_of(key);
    std::ostringstream out;
    out << "    events of " << key << (revision ? " around revision " + std::to_string(*revision) : std::string());
    if (revision && ha_ != nullptr) out << " (the leader's campaign key there: " << leader_at(*revision) << ")";
    out << ":";
    if (events.empty()) return out.str() + " none\n";
    out << "\n";
    std::size_t centre = events.size();
    if (revision) {
      centre = 0;
      while (centre < events.size() && events[centre]->revision < *revision) ++centre;
    }
    const std::size_t from = centre > radius ? centre - radius : 0;
    const std::size_t to = std::min(events.size(), centre + radius + 1);
    if (from > 0) out << "      ... " << from << " earlier\n";
    bool marked = !revision;
    for (std::size_t i = from; i < to; ++i) {
      if (!marked && events[i]->revision >= *revision) {
        if (events[i]->revision != *revision) out << "      -> (no event of this key at " << *revision << ")\n";
        marked = true;
      }
      out << (revision && events[i]->revision == *revision ? "      -> " : "         ") << "r" << events[i]->revision
          << " " << show_value(events[i]->value) << "  [" << origin(*events[i]) << "]\n";
    }
    if (!marked) out << "      -> (no event of this key at " << *revision << ")\n";
    if (to < events.size()) out << "      ... " << events.size() - to << " later\n";
    return out.str();
  }

 private:
  const HaInput* ha_;
  std::map<std::string, std::vector<const EtcdEvent*>> by_key_;
  std::map<std::pair<std::string, std::int64_t>, const EtcdEvent*> at_;
  std::map<std::string, std::vector<const EtcdEvent*>> puts_by_value_;
  std::map<std::int64_t, std::set<std::string>> etcd_side_deletes_;  ///< revision -> keys deleted there
  std::map<std::string, std::vector<const WalRow*>> rows_by_value_;
  std::map<std::string, std::vector<const WalRow*>> rows_by_key_;
  std::map<std::pair<std::string, std::int64_t>, std::vector<const WalRow*>> success_deletes_;
  std::map<std::int64_t, std::vector<const WalRow*>> rows_by_id_;
  std::map<std::int64_t, std::vector<const Receipt*>> receipt_at_;
  std::map<const WalRow*, std::vector<std::int64_t>> named_by_;
  std::map<std::int64_t, std::vector<const WalRow*>> named_at_;
};

std::string describe_row(const WalRow& row) {
  std::ostringstream out;
  out << "row " << row.id << " (" << row.key << ", " << show_value(row.value) << ", status " << row.status
      << ", revision " << show(row.revision) << ", base " << (row.base_known ? show(row.base) : "unknown")
      << ", attempt_revision " << show(row.attempt_revision) << ", retry_count " << row.retry_count;
  if (row.error_message) out << ", error_message \"" << *row.error_message << "\"";
  out << ")";
  return out.str();
}

class Checker {
 public:
  explicit Checker(const CheckInput& input) : input_(input), evidence_(input) {}

  CheckReport run() {
    check_mirror();
    for (const auto& row : input_.wal) {
      if (!is_known_status(row.status)) add(Check::known_status, "unknown status", describe_row(row) + ": unknown status");
      if (row.status == "pending") add(Check::nothing_pending, "pending", describe_row(row) + " is still pending");
      if (row.status == "success") check_success(row);
      if (row.status == "conflict" || row.status == "failed") check_settled_unapplied(row);
      if (row.status == "failed") {
        add(Check::nothing_failed, "failed", describe_row(row) + " failed, although every row is valid and nothing is compacted\n" +
                                       evidence_.context(row.key, row.attempt_revision));
      }
      if (row.status == "conflict" && input_.mode == ConflictMode::postgres_wins) {
        add(Check::nothing_failed, "conflict under postgres_wins", describe_row(row) + " is a conflict under postgres_wins\n" +
                                       evidence_.context(row.key, row.attempt_revision));
      }
    }
    check_outbox_writes();
    check_id_order();
    check_receipts();
    if (input_.ha) check_ha(*input_.ha);
    report_.totals["etcd events"] = input_.history.size();
    report_.totals["receipts"] = input_.receipts.size();
    report_.totals["etcd table rows"] = input_.mirror.size();
    report_.totals["etcd_wal rows"] = input_.wal.size();
    for (const auto& row : input_.wal) ++report_.totals["rows " + row.status];
    report_.totals["rows success that deleted nothing"] =
        static_cast<std::size_t>(std::count_if(input_.wal.begin(), input_.wal.end(), deleted_nothing));
    return std::move(report_);
  }

 private:
  void add(Check check, std::string kind, std::string message) {
    report_.violations.push_back({check, std::move(kind), std::move(message)});
  }

  // (A) The `etcd` table against etcd's history under the prefix, event by event.
  void check_mirror() {
    std::map<std::pair<std::string, std::int64_t>, const MirrorRow*> rows;
    for (const auto& row : input_.mirror) {
      if (is_own_key(input_, row.key)) {
        add(Check::mirror_is_history, "election key mirrored",
            "the etcd table holds etcd-sync's own key " + row.key + " at revision " + std::to_string(row.revision) +
                " (under [ha] election_prefix " + input_.election_prefix + ", never mirrored)");
        continue;
      }
      if (!rows.emplace(std::make_pair(row.key, row.revision), &row).second)
        add(Check::mirror_is_history, "duplicate row", "the etcd table holds (" + row.key + ", " + std::to_string(row.revision) + ") twice");
    }
    std::size_t events = 0;
    for (const auto& [key, key_events] : evidence_.keys()) {
      for (const auto* event : key_events) {
        ++events;
        const auto it = rows.find({key, event->revision});
        if (it == rows.end()) {
          add(Check::mirror_is_history, "missing row", "etcd's " + show_value(event->value) + " of " + key + " at revision " +
                                            std::to_string(event->revision) + " is missing from the etcd table\n" +
                                            evidence_.context(key, event->revision));
          continue;
        }
        const MirrorRow& row = *it->second;
        const bool same = event->value ? (!row.tombstone && row.value == event->value) : row.tombstone;
        if (!same) {
          add(Check::mirror_is_history, "different row",
              "the etcd table has " + std::string(row.tombstone ? "a tombstone" : "put " + row.value.value_or("<NULL>")) +
                  " for " + key + " at revision " + std::to_string(event->revision) + ", etcd has " +
                  show_value(event->value) + "\n" + evidence_.context(key, event->revision));
        }
        rows.erase(it);
      }
    }
    for (const auto& [where, row] : rows) {
      add(Check::mirror_is_history, "extra row", "the etcd table has " +
                                        std::string(row->tombstone ? "a tombstone" : "put " + row->value.value_or("<NULL>")) +
                                        " for " + where.first + " at revision " + std::to_string(where.second) +
                                        ", which is no event of etcd's history\n" +
                                        evidence_.context(where.first, where.second));
    }
  }

  // (C) A success row's write is in etcd exactly once, at its revision, and under etcd_wins on
  // top of its base.
  void check_success(const WalRow& row) {
    if (deleted_nothing(row)) {
      // No event to look at: R checks that its receipt is where the key was absent; under
      // etcd_wins it also applied on its base ("absent") there.
      const auto& receipts = evidence_.receipts_naming(row);
      if (input_.mode == ConflictMode::etcd_wins && receipts.size() == 1) check_on_top_of_base(row, receipts.front());
      return;
    }
    if (!row.revision) {
      add(Check::success_applied_once, "no revision",
          describe_row(row) + " is success without a revision, and is no delete that says it deleted nothing\n" +
              evidence_.context(row.key, std::nullopt));
      return;
    }
    const std::int64_t revision = *row.revision;
    const EtcdEvent* event = evidence_.at(row.key, revision);
    if (row.value) {
      const auto& puts = evidence_.puts_of(*row.value);
      if (puts.size() > 1) {
        std::string where;
        for (const auto* put : puts) where += " " + put->key + "@" + std::to_string(put->revision);
        add(Check::success_applied_once, "value applied more than once", describe_row(row) + ": its value reached etcd " + std::to_string(puts.size()) +
                                             " times:" + where + "\n" + evidence_.context(row.key, revision));
      }
      if (event == nullptr || event->value != row.value) {
        std::string found = event == nullptr ? "no event of the key" : show_value(event->value);
        if (!puts.empty()) found += "; the value is at " + puts.front()->key + "@" + std::to_string(puts.front()->revision);
        add(Check::success_applied_once, "value not at its revision", describe_row(row) + ": etcd has " + found + " at revision " +
                                             std::to_string(revision) + "\n" + evidence_.context(row.key, revision));
        return;
      }
    } else {
      if (event == nullptr || event->value) {
        const EtcdEvent* previous = evidence_.before(row.key, revision);
        const bool was_gone = event == nullptr && (previous == nullptr || !previous->value);
        add(Check::success_applied_once,
            was_gone ? "no delete at its revision (the key was already gone)" : "no delete at its revision",
            describe_row(row) + ": no delete of the key at revision " + std::to_string(revision) + " (etcd has " +
                (event == nullptr ? std::string("no event of the key") : show_value(event->value)) + ")\n" +
                evidence_.context(row.key, revision));
        return;
      }
      if (evidence_.is_etcd_side_delete(row.key, revision)) {
        add(Check::success_applied_once, "claims an etcd-side delete", describe_row(row) + ": the delete at revision " + std::to_string(revision) +
                                             " is an etcd-side writer's (its marker has that revision)\n" +
                                             evidence_.context(row.key, revision));
        return;
      }
      const auto& claims = evidence_.success_deletes_at(row.key, revision);
      if (claims.size() > 1 && claims.front() == &row) {
        std::string ids;
        for (const auto* claim : claims) ids += " " + std::to_string(claim->id);
        add(Check::success_applied_once, "one delete claimed by several rows", "success delete rows" + ids + " all claim the one delete of " + row.key +
                                             " at revision " + std::to_string(revision) + "\n" +
                                             evidence_.context(row.key, revision));
      }
    }
    if (input_.mode == ConflictMode::etcd_wins) check_on_top_of_base(row, revision);
  }

  void check_on_top_of_base(const WalRow& row, std::int64_t revision) {
    if (!row.base_known) {
      add(Check::success_applied_once, "base unknown", describe_row(row) + ": its base was not recorded, so etcd_wins cannot be checked");
      return;
    }
    const EtcdEvent* previous = evidence_.before(row.key, revision);
    if (!base_fits(row, previous)) {
      add(Check::success_applied_once, "not on its base",
          describe_row(row) + ": under etcd_wins it applied on top of " +
              (previous == nullptr ? std::string("nothing (key absent)")
                                   : show_value(previous->value) + " at revision " + std::to_string(previous->revision)) +
              ", not on its base " + (base_means_absent(row) ? std::string("(absent)") : std::to_string(*row.base)) + "\n" +
              evidence_.context(row.key, revision));
    }
  }

  // (D) A conflict or failed row's write never reached etcd: a put by its value, a delete by a
  // receipt naming it at a delete of its key.
  void check_settled_unapplied(const WalRow& row) {
    if (!row.value) {
      for (const auto revision : evidence_.receipts_naming(row)) {
        const EtcdEvent* event = evidence_.at(row.key, revision);
        if (event == nullptr || event->value) continue;  // named, nothing deleted: R's
        add(Check::settled_never_applied, "delete reached etcd",
            describe_row(row) + ": it deleted the key at revision " + std::to_string(revision) + " (its receipt is there)\n" +
                evidence_.receipt_text(revision) + evidence_.context(row.key, revision));
      }
      return;
    }
    const auto& puts = evidence_.puts_of(*row.value);
    if (puts.empty()) return;
    std::string where;
    for (const auto* put : puts) where += " " + put->key + "@" + std::to_string(put->revision);
    add(Check::settled_never_applied, "value reached etcd", describe_row(row) + ": its value reached etcd at" + where + "\n" +
                                          evidence_.context(puts.front()->key, puts.front()->revision));
  }

  // (E) Every outbox write in etcd belongs to a success row: "w-" puts by value, deletes by the
  // receipt at their revision (an etcd-side delete has its marker there instead).
  void check_outbox_writes() {
    for (const auto& [key, events] : evidence_.keys()) {
      for (const auto* event : events) {
        if (event->value) {
          if (starts_with(*event->value, "e-")) continue;
          const auto& rows = evidence_.rows_with_value(*event->value);
          const bool settled_unapplied = std::any_of(rows.begin(), rows.end(), [](const WalRow* row) {
            return row->status == "conflict" || row->status == "failed";
          });
          const bool success = std::any_of(rows.begin(), rows.end(), [](const WalRow* row) { return row->status == "success"; });
          if (success || settled_unapplied) continue;  // C or D judges it
          add(Check::no_write_without_success, "outbox put without a success row",
              "put " + *event->value + " of " + key + " at revision " + std::to_string(event->revision) +
                  (rows.empty() ? std::string(": no etcd_wal row has this value")
                                : ": its " + describe_row(*rows.front()) + " is not success") +
                  "\n" + evidence_.context(key, event->revision));
          continue;
        }
        const bool etcd_side = evidence_.is_etcd_side_delete(key, event->revision);
        const auto rows = evidence_.delete_rows_named_at(key, event->revision);
        if (etcd_side && !rows.empty()) {
          add(Check::no_write_without_success, "delete with both a marker and a receipt",
              "delete of " + key + " at revision " + std::to_string(event->revision) +
                  " has an etcd-side marker and a receipt naming a delete row of the key\n" +
                  evidence_.receipt_text(event->revision) + evidence_.context(key, event->revision));
          continue;
        }
        if (etcd_side) continue;
        if (!rows.empty()) {
          const auto* row = rows.front();
          if (row->status == "success" && row->revision == event->revision) continue;
          if (row->status == "success" || is_settled_unapplied(*row)) continue;  // R, or D, judges it
          add(Check::no_write_without_success, "outbox delete without a success row",
              "delete of " + key + " at revision " + std::to_string(event->revision) + ": its " + describe_row(*row) +
                  " is not success\n" + evidence_.receipt_text(event->revision) + evidence_.context(key, event->revision));
          continue;
        }
        const std::string suspects = delete_suspects(key, *event);
        const bool receipt = evidence_.has_receipt_at(event->revision);
        add(Check::no_write_without_success,
            receipt ? "unattributed delete (its receipt names no delete row of the key)"
                    : "unattributed delete (no receipt at its revision)",
            "delete of " + key + " at revision " + std::to_string(event->revision) +
                " has no etcd-side marker and no receipt naming a delete row of the key" + suspects + "\n" +
                evidence_.receipt_text(event->revision) + evidence_.context(key, event->revision));
      }
    }
  }

  /// The rows that may have made an unattributed delete of `key`: success delete rows of the key
  /// whose own revision holds no delete of it, and non-success delete rows whose base fits the
  /// key's previous event (as the Txn's compare would have); others only counted past a few.
  std::string delete_suspects(const std::string& key, const EtcdEvent& event) const {
    const EtcdEvent* previous = evidence_.before(key, event.revision);
    std::string likely, others;
    std::size_t other_count = 0;
    for (const auto* row : evidence_.rows_of(key)) {
      if (row->value) continue;
      if (deleted_nothing(*row)) {
        likely += "\n      suspect (success that says it deleted nothing): " + describe_row(*row);
      } else if (row->status == "success") {
        const EtcdEvent* own = row->revision ? evidence_.at(key, *row->revision) : nullptr;
        if (own == nullptr || own->value) likely += "\n      suspect (success, but no delete at its revision): " + describe_row(*row);
      } else if (base_fits(*row, previous)) {
        likely += "\n      suspect (its base fits the previous event): " + describe_row(*row);
      } else if (++other_count <= 3) {
        others += "\n      suspect: " + describe_row(*row);
      }
    }
    if (other_count > 3) others += "\n      ... and " + std::to_string(other_count - 3) + " more non-success delete rows of the key";
    return likely + others;
  }

  /// Whether `row` would have applied on top of `previous` (the key's last event before it, or
  /// nullptr) under etcd_wins: previous is its base, or the base says absent and the key is.
  bool base_fits(const WalRow& row, const EtcdEvent* previous) const {
    if (!row.base_known) return false;
    return base_means_absent(row) ? (previous == nullptr || !previous->value)
                                  : (previous != nullptr && previous->revision == *row.base);
  }

  /// NULL, or a base naming a tombstone's revision, means "the key is absent" (README, the
  /// outbox's compare: version == 0).
  bool base_means_absent(const WalRow& row) const {
    if (!row.base) return true;
    const EtcdEvent* base_event = evidence_.at(row.key, *row.base);
    return base_event != nullptr && !base_event->value;
  }

  /// Where a success row took effect: its revision, or for a delete that deleted nothing the
  /// revision of its (one) receipt.
  std::optional<std::int64_t> applied_at(const WalRow& row) const {
    if (row.revision) return row.revision;
    const auto& receipts = evidence_.receipts_naming(row);
    if (deleted_nothing(row) && receipts.size() == 1) return receipts.front();
    return std::nullopt;
  }

  // (F) Success rows of one key reached etcd in id order (a delete that deleted nothing at its
  // receipt's revision).
  void check_id_order() {
    std::map<std::string, std::vector<std::pair<const WalRow*, std::int64_t>>> successes;
    for (const auto& row : input_.wal) {
      if (row.status != "success") continue;
      if (const auto at = applied_at(row)) successes[row.key].push_back({&row, *at});
    }
    for (auto& [key, rows] : successes) {
      std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.first->id < b.first->id; });
      for (std::size_t i = 1; i < rows.size(); ++i) {
        if (rows[i].second > rows[i - 1].second) continue;
        const bool same = rows[i].second == rows[i - 1].second;
        const WalRow& earlier = *rows[i - 1].first;
        const WalRow& later = *rows[i].first;
        // Both committed (they succeeded); the earlier one after the later one: when the later
        // row was claimed, the earlier one was not yet visible, or became visible only just then.
        const bool late_commit = earlier.committed_at && later.committed_at && *earlier.committed_at > *later.committed_at;
        std::string kind = same ? "at the same revision as an earlier row" : "before an earlier row";
        if (late_commit) kind += " that committed after it (a late commit)";
        std::string transactions;
        if (late_commit) {
          char gap[32];
          std::snprintf(gap, sizeof gap, "%.3f", 1000 * (*earlier.committed_at - *later.committed_at));
          transactions = "; row " + std::to_string(earlier.id) + "'s INSERT (" + earlier.statement + ") committed " +
                         gap + " ms after row " + std::to_string(later.id) + "'s (" + later.statement + ")";
        }
        // A late commit is outside the outbox's reach: it claims only committed rows, so the
        // later row was taken while the earlier one could not be seen (README "Semantics").
        auto& into = late_commit ? report_.notes : report_.violations;
        into.push_back({Check::success_in_id_order, kind,
            describe_row(*rows[i].first) + " reached etcd " + (same ? "at the same revision as" : "before") +
                " the earlier " + describe_row(*rows[i - 1].first) + " (at " + std::to_string(rows[i].second) + " and " +
                std::to_string(rows[i - 1].second) + ")" + transactions + "\n" + evidence_.context(key, rows[i].second)});
      }
    }
  }

  // (R) The receipts against the rows: each success row is named by exactly one receipt, at its
  // revision (one that deleted nothing: where the key was absent, with no event of it there); no
  // conflict or failed row is named; every entry names a row of etcd_wal with its fingerprint.
  void check_receipts() {
    for (const auto& row : input_.wal) {
      if (!row.base_known) {
        add(Check::receipts, "base unknown",
            describe_row(row) + ": its base was not recorded, so its fingerprint is unknown; receipts matched by id only");
      }
      const auto& receipts = evidence_.receipts_naming(row);
      std::string where;
      for (const auto revision : receipts) where += " r" + std::to_string(revision);
      if (is_settled_unapplied(row)) {
        if (receipts.empty()) continue;
        add(Check::receipts, row.status + " row named by a receipt",
            describe_row(row) + ": receipts at" + where + " name it, so its Txn was applied\n" +
                evidence_.receipt_text(receipts.front()) + evidence_.context(row.key, receipts.front()));
        continue;
      }
      if (row.status != "success") continue;
      if (receipts.empty()) {
        add(Check::receipts, "success row named by no receipt",
            describe_row(row) + ": no receipt names it (id " + std::to_string(row.id) + ", fingerprint " +
                (fingerprint(row) ? hex(*fingerprint(row)) : std::string("unknown")) + ")\n" +
                (row.revision ? evidence_.receipt_text(*row.revision) : std::string()) +
                evidence_.context(row.key, row.revision));
        continue;
      }
      if (receipts.size() > 1) {
        add(Check::receipts, "success row named by several receipts",
            describe_row(row) + ": receipts at" + where + " name it: its Txn was applied " +
                std::to_string(receipts.size()) + " times\n" + evidence_.context(row.key, receipts.front()));
        continue;
      }
      const std::int64_t at = receipts.front();
      if (row.revision) {
        if (*row.revision != at) {
          add(Check::receipts, "receipt at another revision",
              describe_row(row) + ": its receipt is at revision " + std::to_string(at) + "\n" + evidence_.receipt_text(at) +
                  evidence_.context(row.key, at));
        }
        continue;
      }
      if (!deleted_nothing(row)) continue;  // C: success without a revision
      const EtcdEvent* event = evidence_.at(row.key, at);
      const EtcdEvent* previous = evidence_.before(row.key, at);
      if (event != nullptr) {
        add(Check::receipts, "deleted nothing, but the key has an event at its receipt",
            describe_row(row) + ": etcd has " + show_value(event->value) + " of the key at its receipt's revision " +
                std::to_string(at) + "\n" + evidence_.receipt_text(at) + evidence_.context(row.key, at));
      } else if (previous != nullptr && previous->value) {
        add(Check::receipts, "deleted nothing, but the key existed",
            describe_row(row) + ": the key held " + *previous->value + " (revision " + std::to_string(previous->revision) +
                ") when its receipt's Txn was applied at " + std::to_string(at) + "\n" + evidence_.receipt_text(at) +
                evidence_.context(row.key, at));
      }
    }
    for (const auto& receipt : input_.receipts) {
      if (!receipt.entries) {
        add(Check::receipts, "not a receipt",
            "the receipt key's value at revision " + std::to_string(receipt.revision) + " is no receipt: \"" + receipt.value + "\"");
        continue;
      }
      for (const auto& entry : *receipt.entries) {
        const auto& rows = evidence_.rows_with_id(entry.id);
        const bool matched = std::any_of(rows.begin(), rows.end(), [&](const WalRow* row) {
          const auto print = fingerprint(*row);
          return !print || *print == entry.fingerprint;
        });
        if (matched) continue;
        std::string about = rows.empty() ? std::string("no etcd_wal row has id ") + std::to_string(entry.id)
                                         : describe_row(*rows.front()) + " has fingerprint " + hex(*fingerprint(*rows.front()));
        add(Check::receipts, rows.empty() ? "receipt names no row" : "receipt names a row with another fingerprint",
            "the receipt at revision " + std::to_string(receipt.revision) + " names " + std::to_string(entry.id) + ":" +
                hex(entry.fingerprint) + ", but " + about + "\n" + evidence_.receipt_text(receipt.revision));
      }
    }
  }

  // (H) Leadership: the epoch row only grows; every epoch an instance says it led is the
  // create_revision of its own campaign key, and no epoch is led twice; each instance's epochs
  // grow in its log's order; at the end exactly one live instance leads, and etcd and PostgreSQL
  // agree on it.
  void check_ha(const HaInput& ha) {
    for (std::size_t i = 1; i < ha.epoch_samples.size(); ++i) {
      const auto& before = ha.epoch_samples[i - 1];
      const auto& after = ha.epoch_samples[i];
      if (after.epoch >= before.epoch) continue;
      add(Check::high_availability, "epoch went down",
          "etcd_sync_leader went from epoch " + std::to_string(before.epoch) + " (" + before.instance_id + ", at " +
              seconds_text(before.at_seconds) + ") to epoch " + std::to_string(after.epoch) + " (" + after.instance_id +
              ", at " + seconds_text(after.at_seconds) + ")");
    }
    std::set<std::pair<std::string, std::int64_t>> puts;
    for (const auto& event : ha.campaign_history)
      if (event.value) puts.insert({event.key, event.revision});
    std::map<std::int64_t, std::vector<const LeadRecord*>> by_epoch;
    std::map<std::string, const LeadRecord*> last_of;
    for (const auto& lead : ha.leads) {
      by_epoch[lead.epoch].push_back(&lead);
      const std::string key = ha.campaign_prefix + lead.instance_id;
      if (puts.count({key, lead.epoch}) == 0) {
        add(Check::high_availability, "led epoch is not its campaign key's create_revision",
            lead.instance_id + " logged \"leading\" with epoch " + std::to_string(lead.epoch) + " at " + lead.time +
                ", but etcd's history has no put of " + key + " at revision " + std::to_string(lead.epoch) + "\n" +
                campaign_context(ha, key, lead.epoch));
      }
      const auto previous = last_of.find(lead.instance_id);
      if (previous != last_of.end() && previous->second->epoch >= lead.epoch) {
        add(Check::high_availability, "an instance's epochs went down",
            lead.instance_id + " led epoch " + std::to_string(lead.epoch) + " at " + lead.time + " after epoch " +
                std::to_string(previous->second->epoch) + " at " + previous->second->time);
      }
      last_of[lead.instance_id] = &lead;
    }
    for (const auto& [epoch, leads] : by_epoch) {
      if (leads.size() < 2) continue;
      std::string who;
      for (const auto* lead : leads) who += (who.empty() ? "" : ", ") + lead->instance_id + " at " + lead->time;
      add(Check::high_availability, "epoch led twice", "epoch " + std::to_string(epoch) + " was led " +
                                                           std::to_string(leads.size()) + " times: " + who);
    }
    if (!ha.final_snapshot) {
      add(Check::high_availability, "no final look", "the run did not get to look at who leads at the end");
    } else if (const auto problem = ha_unsettled(*ha.final_snapshot, ha.instances)) {
      add(Check::high_availability, "not exactly one agreed leader at the end", *problem);
    }
    report_.totals["epochs led"] = ha.leads.size();
    report_.totals["epoch row changes"] = ha.epoch_samples.empty() ? 0 : ha.epoch_samples.size() - 1;
  }

  static std::string seconds_text(double seconds) {
    char text[32];
    std::snprintf(text, sizeof text, "%.3f s", seconds);
    return text;
  }

  /// The events of campaign key `key` around `revision`, one per line.
  static std::string campaign_context(const HaInput& ha, const std::string& key, std::int64_t revision) {
    std::string out = "    events of " + key + ":";
    std::size_t shown = 0;
    for (const auto& event : ha.campaign_history) {
      if (event.key != key) continue;
      if (event.revision < revision - 1000 || event.revision > revision + 1000) continue;
      if (++shown > 10) break;
      out += "\n      r" + std::to_string(event.revision) + " " + show_value(event.value);
    }
    return shown == 0 ? out + " none near revision " + std::to_string(revision) + "\n" : out + "\n";
  }

  const CheckInput& input_;
  Evidence evidence_;
  CheckReport report_;
};

}  // namespace

const std::vector<Check>& all_checks() {
  static const std::vector<Check> checks = {
      Check::mirror_is_history,    Check::nothing_pending,     Check::success_applied_once,
      Check::settled_never_applied, Check::no_write_without_success, Check::success_in_id_order,
      Check::nothing_failed,       Check::high_availability,   Check::receipts,
      Check::known_status};
  return checks;
}

const char* describe(Check check) {
  switch (check) {
    case Check::mirror_is_history: return "the etcd table equals etcd's history under the prefix";
    case Check::nothing_pending: return "no etcd_wal row is left pending";
    case Check::success_applied_once:
      return "each success row's write is in etcd exactly once, at its revision (etcd_wins: on its base)";
    case Check::settled_never_applied: return "no conflict or failed row's write reached etcd";
    case Check::no_write_without_success: return "every outbox write in etcd belongs to a success row";
    case Check::success_in_id_order: return "success rows of one key reached etcd in id order";
    case Check::nothing_failed: return "no row failed; under postgres_wins no row is a conflict";
    case Check::high_availability:
      return "the epoch row only grows; each epoch led is its instance's campaign key's create_revision, led once; "
             "at the end exactly one live instance leads, and etcd and PostgreSQL agree on it";
    case Check::receipts:
      return "each success row is named by exactly one receipt, at its revision (deleted nothing: where the key "
             "was absent); no conflict or failed row is; every receipt entry names a row";
    case Check::known_status: return "every status is pending, success, conflict or failed";
  }
  return "?";
}

std::optional<std::uint32_t> fingerprint(const WalRow& row) {
  if (!row.base_known) return std::nullopt;
  etcd_sync::WalRow inserted;
  inserted.id = row.id;
  inserted.key = row.key;
  inserted.value = row.value;
  inserted.revision = row.base;
  return etcd_sync::row_fingerprint(inserted);
}

Receipt parse_receipt_event(std::int64_t revision, std::string value) {
  Receipt receipt;
  receipt.revision = revision;
  receipt.entries = etcd_sync::parse_receipt(value);
  receipt.value = std::move(value);
  return receipt;
}

std::optional<std::string> ha_unsettled(const HaSnapshot& snapshot, const std::vector<ExpectedInstance>& instances) {
  if (!snapshot.error.empty()) return "could not look: " + snapshot.error;
  const auto fresh = [](const InstanceRow& row) {
    return row.state == "running" && row.heartbeat_age_seconds < kFreshHeartbeatSeconds;
  };
  for (const auto& instance : instances) {
    const auto row = std::find_if(snapshot.rows.begin(), snapshot.rows.end(),
                                  [&](const InstanceRow& r) { return r.instance_id == instance.instance_id; });
    if (row == snapshot.rows.end()) return instance.instance_id + " has no row in etcd_sync_service";
    if (row->pid != instance.pid)
      return instance.instance_id + "'s row is from pid " + std::to_string(row->pid) + ", not from its process (pid " +
             std::to_string(instance.pid) + ")";
    if (!fresh(*row)) {
      char age[32];
      std::snprintf(age, sizeof age, "%.1f", row->heartbeat_age_seconds);
      return instance.instance_id + " is not live: state " + row->state + ", heartbeat " + age + " s ago";
    }
  }
  std::vector<const InstanceRow*> leaders;
  for (const auto& row : snapshot.rows)
    if (fresh(row) && row.role == "leader") leaders.push_back(&row);
  if (leaders.size() != 1) {
    std::string who;
    for (const auto* row : leaders) who += " " + row->instance_id + " (epoch " + show(row->epoch) + ")";
    return std::to_string(leaders.size()) + " live instances have role leader" + (who.empty() ? "" : ":" + who);
  }
  const InstanceRow& leader = *leaders.front();
  if (!snapshot.leader_row) return leader.instance_id + " has role leader, but etcd_sync_leader has no row";
  const LeaderRow& row = *snapshot.leader_row;
  if (row.instance_id != leader.instance_id || leader.epoch != row.epoch)
    return leader.instance_id + " has role leader with epoch " + show(leader.epoch) + ", but etcd_sync_leader names " +
           row.instance_id + " with epoch " + std::to_string(row.epoch);
  if (snapshot.keys.empty()) return leader.instance_id + " leads, but etcd holds no campaign key";
  const CampaignKey& lowest = snapshot.keys.front();
  if (lowest.instance_id != leader.instance_id || lowest.create_revision != row.epoch)
    return "etcd's lowest campaign key is " + lowest.instance_id + "'s (create_revision " +
           std::to_string(lowest.create_revision) + "), but " + leader.instance_id + " leads with epoch " +
           std::to_string(row.epoch);
  if (snapshot.keys.size() < instances.size())
    return std::to_string(snapshot.keys.size()) + " campaign keys for " + std::to_string(instances.size()) +
           " instances: a standby does not campaign";
  return std::nullopt;
}

bool is_known_status(const std::string& status) {
  return status == "pending" || status == "success" || status == "conflict" || status == "failed";
}

std::size_t CheckReport::count(Check check) const {
  return static_cast<std::size_t>(
      std::count_if(violations.begin(), violations.end(), [&](const Violation& v) { return v.check == check; }));
}

std::string CheckReport::summary() const {
  std::ostringstream out;
  for (const Check check : all_checks()) {
    out << "  (" << static_cast<char>(check) << ") " << count(check) << "  " << describe(check) << "\n";
    std::map<std::string, std::size_t> kinds;
    for (const auto& v : violations)
      if (v.check == check) ++kinds[v.kind];
    for (const auto& [kind, n] : kinds) out << "        " << n << " " << kind << "\n";
  }
  for (const auto& note : notes)
    out << "  note (" << static_cast<char>(note.check) << ", " << note.kind << "): not a violation\n";
  out << " ";
  for (const auto& [name, n] : totals) out << " " << name << " " << n << ";";
  out << "\n";
  return out.str();
}

CheckReport check_run(const CheckInput& input) { return Checker(input).run(); }

}  // namespace etcd_sync::chaos
