#pragma once
// Facts about the host this instance runs on, shared by the service (the default [ha]
// instance_id), the heartbeat (the instance row) and the elector (its campaign key's value).

#include <string>

namespace etcd_sync {

/// This host's name (gethostname(2)); "" if it has none.
std::string host_name();

}  // namespace etcd_sync
