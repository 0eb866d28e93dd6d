// An io_context with the gRPC bridge and an EtcdClient on it, for code that drives the adapters
// from a plain thread outside the service: the blocking test client and the benchmarks' generator.
#pragma once

#include "adapters/etcd_client.hpp"
#include "adapters/grpc_bridge.hpp"
#include "test/support/run_coroutine.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace etcd_sync::testing {

class EtcdLoop {
 public:
  /// A client of the etcd member at `endpoint` ("host:port") whose calls time out after
  /// `request_timeout`.
  EtcdLoop(const std::string& endpoint, std::chrono::milliseconds request_timeout)
      : EtcdLoop(std::vector<std::string>{endpoint}, request_timeout) {}
  /// A client of a cluster: calls go to the first of `endpoints` ("host:port" each) and fail over
  /// to the next after a transient failure, as the service's own client does.
  EtcdLoop(const std::vector<std::string>& endpoints, std::chrono::milliseconds request_timeout)
      : bridge_(std::make_unique<GrpcBridge>(io_)) {
    EtcdClientOptions options;
    options.endpoints = endpoints;
    options.request_timeout = request_timeout;
    etcd_ = std::make_unique<EtcdClient>(*bridge_, options);
  }
  EtcdLoop(const EtcdLoop&) = delete;
  EtcdLoop& operator=(const EtcdLoop&) = delete;

  boost::asio::io_context& io() { return io_; }
  EtcdClient& etcd() { return *etcd_; }

  /// Runs `work` (and whatever it spawned) to completion on this thread; rethrows its exception.
  template <class T>
  T run(boost::asio::awaitable<T> work) {
    return run_to_completion(io_, std::move(work));
  }

 private:
  // Declared in this order so the client goes first, then the bridge, then the loop.
  boost::asio::io_context io_;
  std::unique_ptr<GrpcBridge> bridge_;
  std::unique_ptr<EtcdClient> etcd_;
};

}  // namespace etcd_sync::testing
