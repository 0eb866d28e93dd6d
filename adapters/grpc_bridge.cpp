#include "adapters/grpc_bridge.hpp"

namespace etcd_sync {

GrpcBridge::GrpcBridge(asio::io_context& io) : io_(io), thread_([this] { drain(); }) {}

GrpcBridge::~GrpcBridge() {
  queue_.Shutdown();
  thread_.join();
}

void GrpcBridge::drain() {
  void* tag = nullptr;
  bool ok = false;
  while (queue_.Next(&tag, &ok)) {
    auto* completion = static_cast<CompletionTag*>(tag);
    asio::post(io_, [completion, ok] { completion->complete(ok); });
  }
}

}  // namespace etcd_sync
