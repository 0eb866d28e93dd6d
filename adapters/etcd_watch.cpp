#include "adapters/etcd_watch.hpp"

#include "adapters/errors.hpp"

#include <boost/asio/use_awaitable.hpp>

namespace etcd_sync {

WatchStream::WatchStream(EtcdClient& client) : client_(client) {
  client_.prepare_context(context_, std::chrono::milliseconds(0));  // a watch has no deadline
}

WatchStream::~WatchStream() { client_.untrack(&context_); }

asio::awaitable<void> WatchStream::start(const etcdserverpb::WatchCreateRequest& create) {
  call_ = client_.watch_stub().PrepareAsyncWatch(&context_, &client_.bridge().queue());
  client_.track(&context_);
  started_ = true;
  bool ok = co_await async_grpc(client_.bridge(), [&](void* tag) { call_->StartCall(tag); }, asio::use_awaitable);
  etcdserverpb::WatchRequest request;
  *request.mutable_create_request() = create;
  bool written = false;
  if (ok) written = co_await write(request);
  if (!written) {
    SyncError error = co_await finish();
    throw error;
  }
}

asio::awaitable<std::optional<etcdserverpb::WatchResponse>> WatchStream::read() {
  etcdserverpb::WatchResponse response;
  bool ok = co_await async_grpc(client_.bridge(), [&](void* tag) { call_->Read(&response, tag); }, asio::use_awaitable);
  if (!ok) co_return std::nullopt;
  co_return response;
}

asio::awaitable<bool> WatchStream::write(const etcdserverpb::WatchRequest& request) {
  writing_ = true;
  bool ok = co_await async_grpc(client_.bridge(), [&](void* tag) { call_->Write(request, tag); }, asio::use_awaitable);
  writing_ = false;
  co_return ok;
}

asio::awaitable<SyncError> WatchStream::finish() {
  grpc::Status status;
  if (started_ && !finished_) {
    finished_ = true;
    co_await async_grpc(client_.bridge(), [&](void* tag) { call_->Finish(&status, tag); }, asio::use_awaitable);
  }
  client_.untrack(&context_);
  SyncError error = from_grpc_status(status, "etcd Watch at " + client_.current_endpoint());
  if (status.ok()) error = SyncError(ErrorKind::transient, "etcd Watch at " + client_.current_endpoint() + " ended", Peer::etcd);
  if (error.transient()) client_.fail_over();
  co_return error;
}

void WatchStream::cancel() { context_.TryCancel(); }

}  // namespace etcd_sync
