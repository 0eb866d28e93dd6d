#pragma once
// One etcd Watch stream (bidirectional gRPC, etcd_stream.hpp). The mirror reads in one coroutine
// and writes progress requests from another, never two writes at once.

#include "adapters/etcd_stream.hpp"

namespace etcd_sync {

class WatchStream {
 public:
  explicit WatchStream(EtcdClient& client) : client_(client), stream_(client, "Watch") {}

  /// Starts the call and sends `create`. Throws SyncError(transient) when the stream cannot start.
  asio::awaitable<void> start(const etcdserverpb::WatchCreateRequest& create);
  /// Next response, or nullopt when the stream ended (then call finish() for the reason).
  asio::awaitable<std::optional<etcdserverpb::WatchResponse>> read() { return stream_.read(); }
  /// Sends a request (e.g. a WatchProgressRequest); false when the stream is broken.
  asio::awaitable<bool> write(const etcdserverpb::WatchRequest& request) { return stream_.write(request); }
  /// Ends the call and returns why it ended, as a SyncError. Call once, after read() gave nullopt
  /// or after cancel().
  asio::awaitable<SyncError> finish() { return stream_.finish(); }
  /// Asks gRPC to end the stream; a pending read() then returns nullopt.
  void cancel() { stream_.cancel(); }
  bool writing() const { return stream_.writing(); }
  /// "host:port" of the member the stream runs on.
  const std::string& endpoint() const { return stream_.endpoint(); }

 private:
  EtcdClient& client_;
  EtcdStream<etcdserverpb::WatchRequest, etcdserverpb::WatchResponse> stream_;
};

/// One LeaseKeepAlive stream: each request renews the lease it names; each response (in order)
/// says its TTL left in seconds (0 or less: the lease is gone).
using KeepAliveStream = EtcdStream<etcdserverpb::LeaseKeepAliveRequest, etcdserverpb::LeaseKeepAliveResponse>;

}  // namespace etcd_sync
