#pragma once
// The only door from gRPC's world into the reactor. One thread drains the CompletionQueue and posts
// each (tag, ok) into the io_context; every completion handler then runs on the reactor thread.

#include <boost/asio/async_result.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <grpcpp/completion_queue.h>

#include <thread>

namespace etcd_sync {

namespace asio = boost::asio;

/// A pending gRPC operation. The bridge posts complete(ok) to the reactor; the tag deletes itself.
class CompletionTag {
 public:
  virtual ~CompletionTag() = default;
  virtual void complete(bool ok) = 0;
};

/// Owns the CompletionQueue and the bridge thread.
class GrpcBridge {
 public:
  /// Starts the bridge thread. Completions are posted into `io`.
  explicit GrpcBridge(asio::io_context& io);
  /// Shuts the queue down and joins the thread. Every operation must have completed by then
  /// (cancel them first); completions still queued are drained and dropped.
  ~GrpcBridge();
  GrpcBridge(const GrpcBridge&) = delete;
  GrpcBridge& operator=(const GrpcBridge&) = delete;

  grpc::CompletionQueue& queue() { return queue_; }
  asio::io_context& io() { return io_; }

 private:
  void drain();

  asio::io_context& io_;
  std::thread::id reactor_thread_;  // where the bridge was built: the thread that runs io_
  grpc::CompletionQueue queue_;
  std::thread thread_;
};

namespace detail {
template <class Handler>
class HandlerTag final : public CompletionTag {
 public:
  HandlerTag(asio::io_context& io, Handler handler)
      : work_(asio::make_work_guard(io)), handler_(std::move(handler)) {}
  void complete(bool ok) override {
    Handler handler = std::move(handler_);
    delete this;
    std::move(handler)(ok);
  }

 private:
  asio::executor_work_guard<asio::io_context::executor_type> work_;  // keeps io.run() alive meanwhile
  Handler handler_;
};
}  // namespace detail

/// Starts one gRPC async operation and completes with its `ok` flag on the reactor thread.
/// `start(void* tag)` must hand `tag` to exactly one gRPC async call (Finish, Read, Write, ...).
template <class Start, class CompletionToken>
auto async_grpc(GrpcBridge& bridge, Start start, CompletionToken&& token) {
  return asio::async_initiate<CompletionToken, void(bool)>(
      [&bridge](auto handler, Start start) {
        using handler_type = std::decay_t<decltype(handler)>;
        auto* tag = new detail::HandlerTag<handler_type>(bridge.io(), std::move(handler));
        start(static_cast<void*>(static_cast<CompletionTag*>(tag)));
      },
      token, std::move(start));
}

}  // namespace etcd_sync
