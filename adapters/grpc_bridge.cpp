#include "adapters/grpc_bridge.hpp"

#include <cassert>

namespace etcd_sync {

GrpcBridge::GrpcBridge(asio::io_context& io)
    : io_(io), reactor_thread_(std::this_thread::get_id()), thread_([this] { drain(); }) {}

GrpcBridge::~GrpcBridge() {
  queue_.Shutdown();
  thread_.join();
}

void GrpcBridge::drain() {
  void* tag = nullptr;
  bool ok = false;
  while (queue_.Next(&tag, &ok)) {
    auto* completion = static_cast<CompletionTag*>(tag);
    asio::post(io_, [this, completion, ok] {
      assert(std::this_thread::get_id() == reactor_thread_ && "completions run on the reactor thread");
      (void)this;
      completion->complete(ok);
    });
  }
}

}  // namespace etcd_sync
