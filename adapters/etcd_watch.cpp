#include "adapters/etcd_watch.hpp"

namespace etcd_sync {

asio::awaitable<void> WatchStream::start(const etcdserverpb::WatchCreateRequest& create) {
  auto& stub = client_.watch_stub();
  co_await stream_.start([&stub](grpc::ClientContext* context, grpc::CompletionQueue* queue) {
    return stub.PrepareAsyncWatch(context, queue);
  });
  etcdserverpb::WatchRequest request;
  *request.mutable_create_request() = create;
  const bool written = co_await stream_.write(request);
  if (!written) {
    SyncError error = co_await stream_.finish();
    throw error;
  }
}

}  // namespace etcd_sync
