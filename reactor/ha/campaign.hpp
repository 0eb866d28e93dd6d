#pragma once
// The election's keys and what a look at them means (the recipe of etcd's client/v3/concurrency,
// built client-side: etcd 3.4's Election service blocks in Campaign and keeps no session alive).
// Pure: unit-tested without servers.
//
// Every instance puts one key, <election_prefix>campaign/<instance_id>, bound to its lease. The
// key with the lowest create_revision leads; its create_revision is the leader's epoch. Each other
// instance watches only the key just before its own (its predecessor), and looks again when that
// key is deleted: it never takes over on a timer.

#include "etcd/rpc.pb.h"

#include <cstdint>
#include <optional>
#include <string>

namespace etcd_sync {

/// <election_prefix>campaign/
std::string campaign_prefix(const std::string& election_prefix);
/// <election_prefix>campaign/<instance_id>: this instance's key.
std::string campaign_key(const std::string& election_prefix, const std::string& instance_id);
/// The instance_id a campaign key names ("" when it is not one).
std::string campaign_instance(const std::string& election_prefix, const std::string& key);

/// The Range that finds our predecessor: the campaign key with the highest create_revision below
/// `epoch` (our key's create_revision), keys only.
etcdserverpb::RangeRequest predecessor_range(const std::string& election_prefix, std::int64_t epoch);

/// What the predecessor look found.
struct CampaignStep {
  bool leads = false;           ///< no key before ours: we lead (once our own key is confirmed)
  std::string wait_for;         ///< else the predecessor's key, to watch for its deletion
  std::int64_t watch_from = 0;  ///< from this revision (the look's header revision + 1)
};
CampaignStep read_predecessor(const etcdserverpb::RangeResponse& response);

}  // namespace etcd_sync
