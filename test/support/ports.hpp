// Loopback ports for throwaway servers.
#pragma once

namespace etcd_sync::testing {

/// Returns a TCP port on 127.0.0.1 that was free a moment ago (bind to port 0, read it, close).
/// Another process may take it before the caller binds; ServerProcess retries on a clash.
int free_loopback_port();

/// True if something accepts TCP connections on 127.0.0.1:`port` right now.
bool loopback_accepts(int port);

}  // namespace etcd_sync::testing
