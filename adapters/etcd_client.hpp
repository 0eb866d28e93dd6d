#pragma once
// etcd v3 over gRPC, asynchronously, on the reactor. Unary calls complete through the GrpcBridge;
// every call carries a deadline of request_timeout and, when auth is on, the token metadata.

#include "adapters/grpc_bridge.hpp"
#include "etcd/rpc.grpc.pb.h"

#include <boost/asio/awaitable.hpp>
#include <grpcpp/grpcpp.h>

#include <boost/asio/steady_timer.hpp>

#include <chrono>
#include <functional>
#include <list>
#include <map>
#include <optional>
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
  /// Called by connect() for each endpoint it passed over (not READY) and the one it chose.
  std::function<void(const std::string& skipped, const std::string& chosen)> on_endpoint_skipped;
};

class WatchStream;

/// A client for one etcd cluster. Not thread-safe: use it on the reactor thread only.
///
/// Every call asks etcd to refuse it at once when the member has no leader (the "hasleader"
/// metadata; etcdserver/api/v3rpc/interceptor.go), instead of waiting out the request timeout.
/// A call already in flight when its member loses the leader would still wait: once a unary call
/// has run for kProbeAfter, the client asks that member for its Status; if the member has no
/// leader, or has moved to a newer raft term than the call started in, the call is abandoned (it
/// fails as transient, naming why) and later calls go to the next endpoint. A member that leaves
/// kProbeStrikes probes in a row unanswered within kProbeTimeout each is abandoned the same way;
/// one slow answer is not enough, since a member busy with fsyncs on a loaded machine can take a
/// second to answer and is still serving.
class EtcdClient {
 public:
  /// How long a unary call runs before its member is probed, and how often after that.
  static constexpr std::chrono::milliseconds kProbeAfter{500};
  static constexpr std::chrono::milliseconds kProbeInterval{250};
  /// How long a probe may take before the member counts as unresponsive.
  static constexpr std::chrono::milliseconds kProbeTimeout{1000};
  /// How many probes in a row a member may leave unanswered before its calls are abandoned.
  static constexpr int kProbeStrikes = 2;

  /// Builds the channels (nothing connects yet). Throws SyncError(permanent) when a TLS file cannot
  /// be read.
  EtcdClient(GrpcBridge& bridge, EtcdClientOptions options);
  ~EtcdClient();

  /// Connects to every endpoint at once and uses the first that is READY (preferring the order
  /// given), within dial_timeout; an endpoint passed over is named in a warning. When a username is
  /// set, authenticates. Throws SyncError: transient when no endpoint answers (the message names
  /// every host:port), permission_denied when auth fails.
  asio::awaitable<void> connect();
  /// connect() unless an earlier one succeeded (a failed call does not undo it: calls fail over
  /// and authenticate again by themselves).
  asio::awaitable<void> ensure_connected();

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

  /// Whether the member at `endpoint` ("host:port", one of the configured endpoints) answers a
  /// Status call within `timeout` (milliseconds) and names a raft leader: for a caller whose
  /// stream has been quiet, to tell a quiet member from a silent one. Never throws; an unknown
  /// endpoint counts as not answering. Cancelled by cancel_all().
  asio::awaitable<bool> member_answers(const std::string& endpoint, std::chrono::milliseconds timeout);

  /// Opens a Watch stream on the current endpoint. The stream borrows this client.
  std::unique_ptr<WatchStream> open_watch();

  /// Cancels every call and stream in flight (they complete with SyncError(cancelled)); for shutdown.
  void cancel_all();

  /// "host:port" of the endpoint calls go to now.
  const std::string& current_endpoint() const { return options_.endpoints[current_]; }
  /// The highest raft term seen in any response header.
  std::int64_t raft_term() const { return known_term_; }

  /// Prepares a context: deadline (0 = none), the hasleader requirement, the token metadata. Used
  /// by WatchStream too.
  void prepare_context(grpc::ClientContext& context, std::chrono::milliseconds deadline) const;
  GrpcBridge& bridge() { return bridge_; }
  etcdserverpb::Watch::Stub& watch_stub() { return *endpoints_[current_].watch; }
  etcdserverpb::Lease::Stub& lease_stub() { return *endpoints_[current_].lease; }

  /// Called after a transient failure: later calls go to the next endpoint.
  void fail_over();
  /// Registers a stream's context for cancel_all while it is open (streams are not probed).
  void track(grpc::ClientContext* context) { streams_.insert(context); }
  void untrack(grpc::ClientContext* context) { streams_.erase(context); }

 private:
  struct Endpoint {
    std::shared_ptr<grpc::Channel> channel;
    std::unique_ptr<etcdserverpb::KV::Stub> kv;
    std::unique_ptr<etcdserverpb::Watch::Stub> watch;
    std::unique_ptr<etcdserverpb::Lease::Stub> lease;
    std::unique_ptr<etcdserverpb::Auth::Stub> auth;
    std::unique_ptr<etcdserverpb::Maintenance::Stub> maintenance;
  };
  /// A unary call in flight.
  struct Call {
    grpc::ClientContext* context;
    std::size_t endpoint;
    std::int64_t term;  ///< the raft term known when it started
    std::chrono::steady_clock::time_point started;
    std::string abandoned;  ///< why the probe abandoned it ("" while it runs)
  };

  template <class Response, class Call>
  asio::awaitable<Response> unary(const char* what, Call call);
  asio::awaitable<void> authenticate();
  void note_term(std::int64_t term) {
    if (term > known_term_) known_term_ = term;
  }
  /// Arms the probe timer for the oldest call in flight, if it is not armed.
  void schedule_probe();
  void on_probe_timer();
  /// Sends a Status probe to `endpoint` (a plain function: its completion may come after the
  /// client is gone, and then does nothing).
  void probe(std::size_t endpoint);
  void on_probe_result(std::size_t endpoint, const grpc::Status& status, const etcdserverpb::StatusResponse& response);
  void abandon(std::size_t endpoint, const std::string& why, std::optional<std::int64_t> older_than_term);

  GrpcBridge& bridge_;
  EtcdClientOptions options_;
  std::vector<Endpoint> endpoints_;
  std::size_t current_ = 0;
  std::string token_;
  bool connected_ = false;
  std::list<Call> calls_;
  std::set<grpc::ClientContext*> streams_;
  asio::steady_timer probe_timer_;
  bool probe_armed_ = false;
  std::set<std::size_t> probing_;  ///< endpoints with a probe in flight
  std::set<grpc::ClientContext*> probes_;  ///< their contexts, for cancel_all
  std::map<std::size_t, int> unanswered_;  ///< endpoint -> probes unanswered in a row
  std::int64_t known_term_ = 0;
  /// Shared with probes in flight, which may finish after the client is gone.
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace etcd_sync
