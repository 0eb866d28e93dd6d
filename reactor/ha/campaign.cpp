#include "reactor/ha/campaign.hpp"

#include "reactor/keys/keys.hpp"

namespace etcd_sync {

std::string campaign_prefix(const std::string& election_prefix) { return election_prefix + "campaign/"; }

std::string campaign_key(const std::string& election_prefix, const std::string& instance_id) {
  return campaign_prefix(election_prefix) + instance_id;
}

std::string campaign_instance(const std::string& election_prefix, const std::string& key) {
  const auto prefix = campaign_prefix(election_prefix);
  return key.starts_with(prefix) ? key.substr(prefix.size()) : std::string();
}

etcdserverpb::RangeRequest predecessor_range(const std::string& election_prefix, std::int64_t epoch) {
  auto range = prefix_range(campaign_prefix(election_prefix));
  etcdserverpb::RangeRequest request;
  request.set_key(range.key);
  request.set_range_end(range.range_end);
  request.set_max_create_revision(epoch - 1);
  request.set_sort_target(etcdserverpb::RangeRequest::CREATE);
  request.set_sort_order(etcdserverpb::RangeRequest::DESCEND);
  request.set_limit(1);
  request.set_keys_only(true);
  return request;
}

CampaignStep read_predecessor(const etcdserverpb::RangeResponse& response) {
  CampaignStep step;
  step.watch_from = response.header().revision() + 1;
  if (response.kvs_size() == 0) {
    step.leads = true;
    return step;
  }
  step.wait_for = response.kvs(0).key();
  return step;
}

}  // namespace etcd_sync
