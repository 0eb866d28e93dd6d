#include "adapters/etcd_client.hpp"

#include "adapters/errors.hpp"
#include "adapters/etcd_watch.hpp"

#include <boost/asio/use_awaitable.hpp>

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
    : bridge_(bridge), options_(std::move(options)) {
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
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 30000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
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

EtcdClient::~EtcdClient() = default;

void EtcdClient::prepare_context(grpc::ClientContext& context, std::chrono::milliseconds deadline) const {
  if (deadline.count() > 0) context.set_deadline(std::chrono::system_clock::now() + deadline);
  if (!token_.empty()) context.AddMetadata("token", token_);
}

void EtcdClient::fail_over() { current_ = (current_ + 1) % endpoints_.size(); }

void EtcdClient::cancel_all() {
  for (auto* context : in_flight_) context->TryCancel();
}

asio::awaitable<bool> EtcdClient::wait_ready(Endpoint& endpoint) {
  auto deadline = std::chrono::system_clock::now() + options_.dial_timeout;
  auto state = endpoint.channel->GetState(true);
  while (state != GRPC_CHANNEL_READY) {
    bool changed = co_await async_grpc(
        bridge_,
        [&](void* tag) { endpoint.channel->NotifyOnStateChange(state, deadline, &bridge_.queue(), tag); },
        asio::use_awaitable);
    if (!changed) co_return false;  // dial_timeout passed
    state = endpoint.channel->GetState(true);
  }
  co_return true;
}

asio::awaitable<void> EtcdClient::connect() {
  std::string tried;
  for (std::size_t i = 0; i < endpoints_.size(); ++i) {
    if (co_await wait_ready(endpoints_[current_])) {
      if (!options_.username.empty()) co_await authenticate();
      co_return;
    }
    tried += (tried.empty() ? "" : ", ") + current_endpoint();
    fail_over();
  }
  throw SyncError(ErrorKind::transient, "cannot connect to etcd at " + tried + " within " +
                                            std::to_string(options_.dial_timeout.count()) + " ms",
                  Peer::etcd);
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

template <class Response, class Call>
asio::awaitable<Response> EtcdClient::unary(const char* what, Call call) {
  for (int attempt = 0;; ++attempt) {
    grpc::ClientContext context;
    prepare_context(context, options_.request_timeout);
    Response response;
    grpc::Status status;
    auto reader = call(endpoints_[current_], context);
    track(&context);
    co_await async_grpc(
        bridge_, [&](void* tag) { reader->Finish(&response, &status, tag); }, asio::use_awaitable);
    untrack(&context);
    if (status.ok()) co_return response;
    bool reauthenticate = attempt == 0 && !options_.username.empty() && is_token_error(status) &&
                          std::string_view(what) != "Authenticate";
    SyncError error = from_grpc_status(status, std::string("etcd ") + what + " at " + current_endpoint());
    if (!reauthenticate) {
      if (error.transient()) fail_over();
      throw error;
    }
    co_await authenticate();
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

std::unique_ptr<WatchStream> EtcdClient::open_watch() { return std::make_unique<WatchStream>(*this); }

}  // namespace etcd_sync
