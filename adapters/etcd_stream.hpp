#pragma once
// One bidirectional etcd gRPC stream (Watch, LeaseKeepAlive) on the reactor. One read and one
// write may be in flight at a time, as gRPC allows; the caller keeps to that. The stream has no
// deadline; it carries the hasleader requirement and the auth token like every call.

#include "adapters/errors.hpp"
#include "adapters/etcd_client.hpp"

#include <boost/asio/use_awaitable.hpp>

#include <optional>
#include <string>

namespace etcd_sync {

template <class Request, class Response>
class EtcdStream {
 public:
  using Call = grpc::ClientAsyncReaderWriter<Request, Response>;

  /// `what` names the stream in errors ("Watch", "LeaseKeepAlive").
  EtcdStream(EtcdClient& client, std::string what) : client_(client), what_(std::move(what)) {
    client_.prepare_context(context_, std::chrono::milliseconds(0));
  }
  ~EtcdStream() { client_.untrack(&context_); }
  EtcdStream(const EtcdStream&) = delete;
  EtcdStream& operator=(const EtcdStream&) = delete;

  /// Starts the call: `prepare(context, queue)` returns the stub's PrepareAsync<Call>, on the
  /// client's current endpoint. Throws SyncError(transient) when the stream cannot start.
  template <class Prepare>
  asio::awaitable<void> start(Prepare prepare) {
    endpoint_ = client_.current_endpoint();
    call_ = prepare(&context_, &client_.bridge().queue());
    client_.track(&context_);
    started_ = true;
    bool ok = co_await async_grpc(client_.bridge(), [&](void* tag) { call_->StartCall(tag); }, asio::use_awaitable);
    if (!ok) {
      SyncError error = co_await finish();
      throw error;
    }
  }
  /// Next response, or nullopt when the stream ended (then call finish() for the reason).
  asio::awaitable<std::optional<Response>> read() {
    Response response;
    bool ok = co_await async_grpc(client_.bridge(), [&](void* tag) { call_->Read(&response, tag); }, asio::use_awaitable);
    if (!ok) co_return std::nullopt;
    co_return response;
  }
  /// Sends a request; false when the stream is broken.
  asio::awaitable<bool> write(const Request& request) {
    writing_ = true;
    bool ok = co_await async_grpc(client_.bridge(), [&](void* tag) { call_->Write(request, tag); }, asio::use_awaitable);
    writing_ = false;
    co_return ok;
  }
  /// Ends the call and returns why it ended, as a SyncError (transient when it just ended). Call
  /// once, after read() gave nullopt or after cancel(); later calls return the same kind of error.
  asio::awaitable<SyncError> finish() {
    grpc::Status status;
    if (started_ && !finished_) {
      finished_ = true;
      co_await async_grpc(client_.bridge(), [&](void* tag) { call_->Finish(&status, tag); }, asio::use_awaitable);
    }
    client_.untrack(&context_);
    co_return ended(status);
  }
  /// Asks gRPC to end the stream; a pending read() then returns nullopt.
  void cancel() { context_.TryCancel(); }
  bool writing() const { return writing_; }
  /// "host:port" of the member the stream was started on ("" before start()).
  const std::string& endpoint() const { return endpoint_; }

 private:
  // A plain function (g++ 12 and class temporaries in coroutines).
  SyncError ended(const grpc::Status& status) {
    const std::string what = "etcd " + what_ + " at " + endpoint_;
    SyncError error = status.ok() ? SyncError(ErrorKind::transient, what + " ended", Peer::etcd)
                                  : from_grpc_status(status, what);
    error.at(endpoint_);
    if (error.transient()) client_.fail_over();
    return error;
  }

  EtcdClient& client_;
  std::string what_;
  std::string endpoint_;
  grpc::ClientContext context_;
  std::unique_ptr<Call> call_;
  bool started_ = false;
  bool writing_ = false;
  bool finished_ = false;
};

}  // namespace etcd_sync
