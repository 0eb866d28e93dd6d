#pragma once
// One etcd Watch stream (bidirectional gRPC). One read and one write may be in flight at a time, as
// gRPC allows; the caller keeps to that (the mirror reads in one coroutine and writes progress
// requests from another, never two writes at once).

#include "adapters/errors.hpp"
#include "adapters/etcd_client.hpp"

#include <optional>

namespace etcd_sync {

class WatchStream {
 public:
  explicit WatchStream(EtcdClient& client);
  ~WatchStream();

  /// Starts the call and sends `create`. Throws SyncError(transient) when the stream cannot start.
  asio::awaitable<void> start(const etcdserverpb::WatchCreateRequest& create);
  /// Next response, or nullopt when the stream ended (then call finish() for the reason).
  asio::awaitable<std::optional<etcdserverpb::WatchResponse>> read();
  /// Sends a request (e.g. a WatchProgressRequest); false when the stream is broken.
  asio::awaitable<bool> write(const etcdserverpb::WatchRequest& request);
  /// Ends the call and returns why it ended, as a SyncError. Call once, after read() gave nullopt
  /// or after cancel().
  asio::awaitable<SyncError> finish();
  /// Asks gRPC to end the stream; a pending read() then returns nullopt.
  void cancel();
  bool writing() const { return writing_; }

 private:
  EtcdClient& client_;
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientAsyncReaderWriter<etcdserverpb::WatchRequest, etcdserverpb::WatchResponse>> call_;
  bool started_ = false;
  bool writing_ = false;
  bool finished_ = false;
};

}  // namespace etcd_sync
