#include "adapters/etcd_client.hpp"

#include "adapters/errors.hpp"
#include "adapters/etcd_watch.hpp"


#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <fstream>
#include <sstream>

namespace etcd_sync {

namespace {

std::string read_pem(const std::string& path, const char* what) {
  if (path.empty()) return {};
  std::ifstream in(path, std::ios::binary);
  if (!in) throw SyncError(ErrorKind::permanent, std::string("cannot read etcd TLS ") + what + " file " + path);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

bool is_token_error(const grpc::Status& status) {
  return status.error_message().find("invalid auth token") != std::string::npos;
}

}  // namespace

EtcdClient::EtcdClient(GrpcBridge& bridge, EtcdClientOptions options)
    : bridge_(bridge), options_(std::move(options)), probe_timer_(bridge.io()) {
  if (options_.endpoints.empty()) throw SyncError(ErrorKind::permanent, "no etcd endpoints configured");
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  if (options_.tls) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = read_pem(options_.ca_file, "CA");
    ssl.pem_cert_chain = read_pem(options_.cert_file, "certificate");
    ssl.pem_private_key = read_pem(options_.key_file, "key");
    credentials = grpc::SslCredentials(ssl);
  } else {
    credentials = grpc::InsecureChannelCredentials();
  }
  grpc::ChannelArguments args;
  // Watch responses and Range pages may carry several 1.5 MiB values; the default 4 MiB is too low.
  args.SetMaxReceiveMessageSize(-1);
  args.SetMaxSendMessageSize(-1);
  // Reconnect quickly after an etcd restart; etcd's keepalive policy allows pings every 5 s.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 200);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 200);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 10000);  // etcd allows pings every 5 s (--grpc-keepalive-min-time)
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 5000);
  if (!options_.server_name.empty()) args.SetSslTargetNameOverride(options_.server_name);
  for (const auto& address : options_.endpoints) {
    Endpoint endpoint;
    endpoint.channel = grpc::CreateCustomChannel(address, credentials, args);
    endpoint.kv = etcdserverpb::KV::NewStub(endpoint.channel);
    endpoint.watch = etcdserverpb::Watch::NewStub(endpoint.channel);
    endpoint.lease = etcdserverpb::Lease::NewStub(endpoint.channel);
    endpoint.auth = etcdserverpb::Auth::NewStub(endpoint.channel);
    endpoint.maintenance = etcdserverpb::Maintenance::NewStub(endpoint.channel);
    endpoints_.push_back(std::move(endpoint));
  }
}

EtcdClient::~EtcdClient() {
  *alive_ = false;  // probes still in flight complete into nothing
  for (auto* context : probes_) context->TryCancel();
}

void EtcdClient::prepare_context(grpc::ClientContext& context, std::chrono::milliseconds deadline) const {
  if (deadline.count() > 0) context.set_deadline(std::chrono::system_clock::now() + deadline);
  // etcd refuses the call at once when the member has no leader (rpctypes.MetadataRequireLeaderKey).
  context.AddMetadata("hasleader", "true");
  if (!token_.empty()) context.AddMetadata("token", token_);
}

void EtcdClient::fail_over() { current_ = (current_ + 1) % endpoints_.size(); }

void EtcdClient::cancel_all() {
  for (auto& call : calls_) call.context->TryCancel();
  for (auto* context : streams_) context->TryCancel();
  for (auto* context : probes_) context->TryCancel();
}

asio::awaitable<void> EtcdClient::connect() {
  // Every channel starts connecting at once; the first READY one, in the order given, is used, so
  // a dead endpoint costs no more than the time another takes to answer.
  const auto give_up_at = std::chrono::system_clock::now() + options_.dial_timeout;
  for (auto& endpoint : endpoints_) endpoint.channel->GetState(true);
  for (;;) {
    for (std::size_t n = 0; n < endpoints_.size(); ++n) {
      const std::size_t i = (current_ + n) % endpoints_.size();
      if (endpoints_[i].channel->GetState(true) != GRPC_CHANNEL_READY) continue;
      for (std::size_t skipped = 0; skipped < n; ++skipped)
        if (options_.on_endpoint_skipped)
          options_.on_endpoint_skipped(options_.endpoints[(current_ + skipped) % endpoints_.size()], options_.endpoints[i]);
      current_ = i;
      if (!options_.username.empty()) co_await authenticate();
      connected_ = true;
      co_return;
    }
    if (std::chrono::system_clock::now() >= give_up_at) break;
    // Wake on the current endpoint's next state change, or after a short while to look at the others.
    auto& endpoint = endpoints_[current_];
    auto state = endpoint.channel->GetState(false);
    auto wake_at = std::min(give_up_at, std::chrono::system_clock::now() + std::chrono::milliseconds(50));
    co_await async_grpc(
        bridge_, [&](void* tag) { endpoint.channel->NotifyOnStateChange(state, wake_at, &bridge_.queue(), tag); },
        asio::use_awaitable);
  }
  std::string tried;
  for (const auto& address : options_.endpoints) tried += (tried.empty() ? "" : ", ") + address;
  SyncError error(ErrorKind::transient,
                  "cannot connect to etcd at " + tried + " within " + std::to_string(options_.dial_timeout.count()) + " ms",
                  Peer::etcd);
  throw error.at(tried);
}

asio::awaitable<void> EtcdClient::ensure_connected() {
  if (!connected_) co_await connect();
}

asio::awaitable<void> EtcdClient::authenticate() {
  token_.clear();
  etcdserverpb::AuthenticateRequest request;
  request.set_name(options_.username);
  request.set_password(options_.password);
  try {
    auto response = co_await unary<etcdserverpb::AuthenticateResponse>(
        "Authenticate", [&](Endpoint& e, grpc::ClientContext& c) {
          return e.auth->AsyncAuthenticate(&c, request, &bridge_.queue());
        });
    token_ = response.token();
  } catch (const SyncError& error) {
    if (error.kind() == ErrorKind::transient) throw;
    throw SyncError(ErrorKind::permission_denied,
                    "etcd authentication as user '" + options_.username + "' failed at " +
                        current_endpoint() + ": " + error.what(),
                    Peer::etcd);
  }
}

template <class Response, class CallStart>
asio::awaitable<Response> EtcdClient::unary(const char* what, CallStart call) {
  for (int attempt = 0;; ++attempt) {
    grpc::ClientContext context;
    prepare_context(context, options_.request_timeout);
    Response response;
    grpc::Status status;
    const std::size_t endpoint = current_;
    auto reader = call(endpoints_[endpoint], context);
    auto tracked = calls_.insert(calls_.end(), Call{&context, endpoint, known_term_, std::chrono::steady_clock::now(), {}});
    schedule_probe();
    co_await async_grpc(
        bridge_, [&](void* tag) { reader->Finish(&response, &status, tag); }, asio::use_awaitable);
    std::string abandoned = std::move(tracked->abandoned);
    calls_.erase(tracked);
    if (calls_.empty()) probe_timer_.cancel();  // nothing to probe: leave the loop idle
    if (status.ok()) {
      note_term(static_cast<std::int64_t>(response.header().raft_term()));
      co_return response;
    }
    const std::string address = options_.endpoints[endpoint];
    if (!abandoned.empty()) {
      // The probe gave up on it: the member lost its leader or stopped answering. Whether the
      // request took effect is unknown; the caller decides what that means.
      if (current_ == endpoint) fail_over();
      SyncError error(ErrorKind::transient, std::string("etcd ") + what + " at " + address + " abandoned: " + abandoned,
                      Peer::etcd);
      throw error.at(address);
    }
    bool reauthenticate = attempt == 0 && !options_.username.empty() && is_token_error(status) &&
                          std::string_view(what) != "Authenticate";
    SyncError error = from_grpc_status(status, std::string("etcd ") + what + " at " + address);
    error.at(address);
    if (!reauthenticate) {
      if (error.transient() && current_ == endpoint) fail_over();
      throw error;
    }
    co_await authenticate();
  }
}

void EtcdClient::schedule_probe() {
  if (probe_armed_ || calls_.empty()) return;
  auto oldest = calls_.front().started;
  for (const auto& call : calls_) oldest = std::min(oldest, call.started);
  probe_armed_ = true;
  probe_timer_.expires_at(std::max(oldest + kProbeAfter, std::chrono::steady_clock::now() + kProbeInterval / 5));
  probe_timer_.async_wait([this, alive = alive_](boost::system::error_code ec) {
    if (!*alive) return;
    probe_armed_ = false;
    if (!ec) on_probe_timer();
  });
}

void EtcdClient::on_probe_timer() {
  const auto now = std::chrono::steady_clock::now();
  std::set<std::size_t> slow;
  for (const auto& call : calls_)
    if (call.abandoned.empty() && now - call.started >= kProbeAfter) slow.insert(call.endpoint);
  for (auto endpoint : slow)
    if (!probing_.count(endpoint)) probe(endpoint);
  if (!calls_.empty()) {
    probe_armed_ = true;
    probe_timer_.expires_after(kProbeInterval);
    probe_timer_.async_wait([this, alive = alive_](boost::system::error_code ec) {
      if (!*alive) return;
      probe_armed_ = false;
      if (!ec) on_probe_timer();
    });
  }
}

void EtcdClient::probe(std::size_t endpoint) {
  // Everything the call needs lives here, shared with its completion.
  struct Probe {
    grpc::ClientContext context;
    etcdserverpb::StatusRequest request;
    etcdserverpb::StatusResponse response;
    grpc::Status status;
    std::unique_ptr<grpc::ClientAsyncResponseReader<etcdserverpb::StatusResponse>> reader;
  };
  auto state = std::make_shared<Probe>();
  prepare_context(state->context, kProbeTimeout);
  probing_.insert(endpoint);
  probes_.insert(&state->context);
  state->reader = endpoints_[endpoint].maintenance->AsyncStatus(&state->context, state->request, &bridge_.queue());
  async_grpc(
      bridge_, [&](void* tag) { state->reader->Finish(&state->response, &state->status, tag); },
      [this, alive = alive_, state, endpoint](bool) {
        if (!*alive) return;
        probes_.erase(&state->context);
        probing_.erase(endpoint);
        on_probe_result(endpoint, state->status, state->response);
      });
}

void EtcdClient::on_probe_result(std::size_t endpoint, const grpc::Status& status,
                                 const etcdserverpb::StatusResponse& response) {
  const std::string& address = options_.endpoints[endpoint];
  if (!status.ok()) {
    if (status.error_code() == grpc::StatusCode::CANCELLED) return;  // shutting down
    if (++unanswered_[endpoint] < kProbeStrikes) return;  // the next probe decides
    unanswered_[endpoint] = 0;
    abandon(endpoint, "the member left " + std::to_string(kProbeStrikes) + " status probes in a row unanswered (" + status.error_message() + ")", std::nullopt);
    return;
  }
  unanswered_[endpoint] = 0;
  const auto term = static_cast<std::int64_t>(response.raftterm());
  if (response.leader() == 0) {
    abandon(endpoint, "the member at " + address + " has no leader", std::nullopt);
    return;
  }
  abandon(endpoint, "the member at " + address + " moved to raft term " + std::to_string(term) + " (a new leader)", term);
  note_term(term);
}

void EtcdClient::abandon(std::size_t endpoint, const std::string& why, std::optional<std::int64_t> older_than_term) {
  const auto now = std::chrono::steady_clock::now();
  for (auto& call : calls_) {
    if (call.endpoint != endpoint || !call.abandoned.empty() || now - call.started < kProbeAfter) continue;
    if (older_than_term && call.term >= *older_than_term) continue;  // started in the current term
    if (older_than_term && call.term == 0) {
      call.term = *older_than_term;  // no term was known when it started: compare from now on
      continue;
    }
    call.abandoned = why;
    call.context->TryCancel();
  }
}

asio::awaitable<etcdserverpb::RangeResponse> EtcdClient::range(const etcdserverpb::RangeRequest& request) {
  co_return co_await unary<etcdserverpb::RangeResponse>("Range", [&](Endpoint& e, grpc::ClientContext& c) {
    return e.kv->AsyncRange(&c, request, &bridge_.queue());
  });
}

asio::awaitable<etcdserverpb::PutResponse> EtcdClient::put(const etcdserverpb::PutRequest& request) {
  co_return co_await unary<etcdserverpb::PutResponse>("Put", [&](Endpoint& e, grpc::ClientContext& c) {
    return e.kv->AsyncPut(&c, request, &bridge_.queue());
  });
}

asio::awaitable<etcdserverpb::DeleteRangeResponse> EtcdClient::delete_range(
    const etcdserverpb::DeleteRangeRequest& request) {
  co_return co_await unary<etcdserverpb::DeleteRangeResponse>(
      "DeleteRange", [&](Endpoint& e, grpc::ClientContext& c) {
        return e.kv->AsyncDeleteRange(&c, request, &bridge_.queue());
      });
}

asio::awaitable<etcdserverpb::TxnResponse> EtcdClient::txn(const etcdserverpb::TxnRequest& request) {
  co_return co_await unary<etcdserverpb::TxnResponse>("Txn", [&](Endpoint& e, grpc::ClientContext& c) {
    return e.kv->AsyncTxn(&c, request, &bridge_.queue());
  });
}

asio::awaitable<etcdserverpb::CompactionResponse> EtcdClient::compact(
    const etcdserverpb::CompactionRequest& request) {
  co_return co_await unary<etcdserverpb::CompactionResponse>(
      "Compact", [&](Endpoint& e, grpc::ClientContext& c) {
        return e.kv->AsyncCompact(&c, request, &bridge_.queue());
      });
}

asio::awaitable<etcdserverpb::LeaseGrantResponse> EtcdClient::lease_grant(
    const etcdserverpb::LeaseGrantRequest& request) {
  co_return co_await unary<etcdserverpb::LeaseGrantResponse>(
      "LeaseGrant", [&](Endpoint& e, grpc::ClientContext& c) {
        return e.lease->AsyncLeaseGrant(&c, request, &bridge_.queue());
      });
}

asio::awaitable<etcdserverpb::LeaseRevokeResponse> EtcdClient::lease_revoke(
    const etcdserverpb::LeaseRevokeRequest& request) {
  co_return co_await unary<etcdserverpb::LeaseRevokeResponse>(
      "LeaseRevoke", [&](Endpoint& e, grpc::ClientContext& c) {
        return e.lease->AsyncLeaseRevoke(&c, request, &bridge_.queue());
      });
}

asio::awaitable<etcdserverpb::StatusResponse> EtcdClient::status() {
  etcdserverpb::StatusRequest request;
  co_return co_await unary<etcdserverpb::StatusResponse>("Status", [&](Endpoint& e, grpc::ClientContext& c) {
    return e.maintenance->AsyncStatus(&c, request, &bridge_.queue());
  });
}

asio::awaitable<bool> EtcdClient::member_answers(const std::string& endpoint, std::chrono::milliseconds timeout) {
  auto known = std::find(options_.endpoints.begin(), options_.endpoints.end(), endpoint);
  if (known == options_.endpoints.end()) co_return false;
  auto& stub = *endpoints_[static_cast<std::size_t>(known - options_.endpoints.begin())].maintenance;
  grpc::ClientContext context;
  prepare_context(context, timeout);
  etcdserverpb::StatusRequest request;
  etcdserverpb::StatusResponse response;
  grpc::Status status;
  auto reader = stub.AsyncStatus(&context, request, &bridge_.queue());
  probes_.insert(&context);
  co_await async_grpc(
      bridge_, [&](void* tag) { reader->Finish(&response, &status, tag); }, asio::use_awaitable);
  probes_.erase(&context);
  if (status.ok()) note_term(static_cast<std::int64_t>(response.raftterm()));
  co_return status.ok() && response.leader() != 0;
}

std::unique_ptr<WatchStream> EtcdClient::open_watch() { return std::make_unique<WatchStream>(*this); }

}  // namespace etcd_sync
