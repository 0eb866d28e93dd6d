#pragma once
// etcd v3 over gRPC, asynchronously, on the reactor. Unary calls complete through the GrpcBridge;
// every call carries a deadline of request_timeout and, when auth is on, the token metadata.

#include "adapters/grpc_bridge.hpp"
#include "etcd/rpc.grpc.pb.h"

#include <boost/asio/awaitable.hpp>
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <memory>
#include <set>
#include <string>
#include <vector>

namespace etcd_sync {

/// Connection settings, taken from [etcd] in the configuration.
struct EtcdClientOptions {
  std::vector<std::string> endpoints;  ///< "host:port" each; tried in order, failover on UNAVAILABLE
  std::chrono::milliseconds dial_timeout{5000};
  std::chrono::milliseconds request_timeout{10000};
  std::string username;  ///< empty: no auth
  std::string password;
  bool tls = false;
  std::string ca_file, cert_file, key_file, server_name;  ///< PEM files; server_name overrides SNI/check
};

class WatchStream;

/// A client for one etcd cluster. Not thread-safe: use it on the reactor thread only.
class EtcdClient {
 public:
  /// Builds the channels (nothing connects yet). Throws SyncError(permanent) when a TLS file cannot
  /// be read.
  EtcdClient(GrpcBridge& bridge, EtcdClientOptions options);
  ~EtcdClient();

  /// Waits until some endpoint's channel is READY (within dial_timeout per endpoint) and, when a
  /// username is set, authenticates. Throws SyncError: transient when no endpoint answers (the
  /// message names every host:port), permission_denied when auth fails.
  asio::awaitable<void> connect();

  /// KV calls. Each throws SyncError classified by from_grpc_status (e.g. compacted for a Range at a
  /// compacted revision, permanent for "request is too large"). A transient failure moves to the
  /// next endpoint for the following call.
  asio::awaitable<etcdserverpb::RangeResponse> range(const etcdserverpb::RangeRequest& request);
  asio::awaitable<etcdserverpb::PutResponse> put(const etcdserverpb::PutRequest& request);
  asio::awaitable<etcdserverpb::DeleteRangeResponse> delete_range(
      const etcdserverpb::DeleteRangeRequest& request);
  asio::awaitable<etcdserverpb::TxnResponse> txn(const etcdserverpb::TxnRequest& request);
  asio::awaitable<etcdserverpb::CompactionResponse> compact(const etcdserverpb::CompactionRequest& request);
  asio::awaitable<etcdserverpb::LeaseGrantResponse> lease_grant(const etcdserverpb::LeaseGrantRequest& request);
  asio::awaitable<etcdserverpb::LeaseRevokeResponse> lease_revoke(
      const etcdserverpb::LeaseRevokeRequest& request);
  /// Maintenance.Status of the current endpoint (its version and current revision in the header).
  asio::awaitable<etcdserverpb::StatusResponse> status();

  /// Opens a Watch stream on the current endpoint. The stream borrows this client.
  std::unique_ptr<WatchStream> open_watch();

  /// Cancels every call in flight (they complete with SyncError(cancelled)); for shutdown.
  void cancel_all();

  /// "host:port" of the endpoint calls go to now.
  const std::string& current_endpoint() const { return options_.endpoints[current_]; }

  /// Prepares a context: deadline (0 = none) and token metadata. Used by WatchStream too.
  void prepare_context(grpc::ClientContext& context, std::chrono::milliseconds deadline) const;
  GrpcBridge& bridge() { return bridge_; }
  etcdserverpb::Watch::Stub& watch_stub() { return *endpoints_[current_].watch; }

  /// Called after a transient failure: later calls go to the next endpoint.
  void fail_over();
  /// Registers a context for cancel_all while its call is in flight.
  void track(grpc::ClientContext* context) { in_flight_.insert(context); }
  void untrack(grpc::ClientContext* context) { in_flight_.erase(context); }

 private:
  struct Endpoint {
    std::shared_ptr<grpc::Channel> channel;
    std::unique_ptr<etcdserverpb::KV::Stub> kv;
    std::unique_ptr<etcdserverpb::Watch::Stub> watch;
    std::unique_ptr<etcdserverpb::Lease::Stub> lease;
    std::unique_ptr<etcdserverpb::Auth::Stub> auth;
    std::unique_ptr<etcdserverpb::Maintenance::Stub> maintenance;
  };

  template <class Response, class Call>
  asio::awaitable<Response> unary(const char* what, Call call);
  asio::awaitable<bool> wait_ready(Endpoint& endpoint);
  asio::awaitable<void> authenticate();

  GrpcBridge& bridge_;
  EtcdClientOptions options_;
  std::vector<Endpoint> endpoints_;
  std::size_t current_ = 0;
  std::string token_;
  std::set<grpc::ClientContext*> in_flight_;
};

}  // namespace etcd_sync
