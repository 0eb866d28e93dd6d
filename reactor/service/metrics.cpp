#include "reactor/service/metrics.hpp"

#include "adapters/errors.hpp"
#include "reactor/loop/deadline.hpp"
#include "reactor/loop/logging.hpp"
#include "reactor/loop/spawn.hpp"

#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <cstdio>

namespace etcd_sync {

namespace beast = boost::beast;

std::optional<asio::ip::tcp::endpoint> parse_listen_address(const std::string& listen) {
  auto colon = listen.rfind(':');
  if (colon == std::string::npos || colon + 1 >= listen.size()) return std::nullopt;
  std::string host = listen.substr(0, colon);
  std::string port_text = listen.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (host == "localhost") host = "127.0.0.1";
  if (host.empty()) host = "0.0.0.0";
  int port = 0;
  for (char c : port_text) {
    if (c < '0' || c > '9') return std::nullopt;
    port = port * 10 + (c - '0');
    if (port > 65535) return std::nullopt;
  }
  boost::system::error_code ec;
  auto address = asio::ip::make_address(host, ec);
  if (ec) return std::nullopt;
  return asio::ip::tcp::endpoint(address, static_cast<unsigned short>(port));
}

namespace {

void metric(std::string& out, const char* name, const char* type, const char* help) {
  out += "# HELP ";
  out += name;
  out += ' ';
  out += help;
  out += "\n# TYPE ";
  out += name;
  out += ' ';
  out += type;
  out += '\n';
}

void sample(std::string& out, const std::string& name, const std::string& labels, double value) {
  char number[64];
  std::snprintf(number, sizeof number, "%.17g", value);
  out += name;
  if (!labels.empty()) out += "{" + labels + "}";
  out += ' ';
  out += number;
  out += '\n';
}

void histogram(std::string& out, const char* name, const char* help, const LatencyHistogram& h) {
  metric(out, name, "histogram", help);
  std::int64_t cumulative = 0;
  char bound[32];
  for (std::size_t i = 0; i < h.bounds.size(); ++i) {
    cumulative += h.counts[i];
    std::snprintf(bound, sizeof bound, "%g", h.bounds[i]);
    sample(out, std::string(name) + "_bucket", "le=\"" + std::string(bound) + "\"", static_cast<double>(cumulative));
  }
  sample(out, std::string(name) + "_bucket", "le=\"+Inf\"", static_cast<double>(h.count));
  sample(out, std::string(name) + "_sum", "", h.sum);
  sample(out, std::string(name) + "_count", "", static_cast<double>(h.count));
}

}  // namespace

std::string render_metrics(const SyncStats& s, const char* version) {
  std::string out;
  metric(out, "etcd_sync_build_info", "gauge", "Build information; the value is always 1.");
  sample(out, "etcd_sync_build_info", "version=\"" + std::string(version) + "\"", 1);
  metric(out, "etcd_sync_events_applied_total", "counter", "Watch events written to the etcd table, by operation.");
  sample(out, "etcd_sync_events_applied_total", "op=\"put\"", static_cast<double>(s.puts_applied));
  sample(out, "etcd_sync_events_applied_total", "op=\"delete\"", static_cast<double>(s.deletes_applied));
  metric(out, "etcd_sync_wal_outcomes_total", "counter", "etcd_wal rows processed, by outcome.");
  sample(out, "etcd_sync_wal_outcomes_total", "status=\"success\"", static_cast<double>(s.wal_success));
  sample(out, "etcd_sync_wal_outcomes_total", "status=\"conflict\"", static_cast<double>(s.wal_conflict));
  sample(out, "etcd_sync_wal_outcomes_total", "status=\"failed\"", static_cast<double>(s.wal_failed));
  sample(out, "etcd_sync_wal_outcomes_total", "status=\"retry\"", static_cast<double>(s.wal_retries));
  metric(out, "etcd_sync_conflicts_resolved_total", "counter", "etcd_wal rows whose base revision was stale.");
  sample(out, "etcd_sync_conflicts_resolved_total", "", static_cast<double>(s.conflicts_resolved));
  metric(out, "etcd_sync_resyncs_total", "counter", "Snapshots taken after a compaction or for validate --fix.");
  sample(out, "etcd_sync_resyncs_total", "", static_cast<double>(s.resyncs));
  metric(out, "etcd_sync_etcd_rollbacks_total", "counter",
         "Times etcd was found gone back in time (restored from a snapshot): README \"When a server goes back in time\".");
  sample(out, "etcd_sync_etcd_rollbacks_total", "", static_cast<double>(s.etcd_rollbacks));
  metric(out, "etcd_sync_postgresql_rollbacks_total", "counter",
         "Times PostgreSQL was found gone back in time (a restore, a point-in-time recovery, a promoted replica).");
  sample(out, "etcd_sync_postgresql_rollbacks_total", "", static_cast<double>(s.postgresql_rollbacks));
  metric(out, "etcd_sync_mirrored_revision", "gauge", "The checkpoint: every etcd revision up to it is in the etcd table.");
  sample(out, "etcd_sync_mirrored_revision", "", static_cast<double>(s.mirrored_revision));
  metric(out, "etcd_sync_etcd_revision", "gauge", "etcd's revision as last seen.");
  sample(out, "etcd_sync_etcd_revision", "", static_cast<double>(s.etcd_revision));
  metric(out, "etcd_sync_lag_revisions", "gauge", "etcd revision minus mirrored revision.");
  sample(out, "etcd_sync_lag_revisions", "",
         static_cast<double>(s.etcd_revision > s.mirrored_revision ? s.etcd_revision - s.mirrored_revision : 0));
  metric(out, "etcd_sync_connection_up", "gauge", "1 when the connection works, by peer.");
  sample(out, "etcd_sync_connection_up", "peer=\"etcd\"", s.etcd.up() ? 1 : 0);
  sample(out, "etcd_sync_connection_up", "peer=\"postgresql\"", s.postgresql.up() ? 1 : 0);
  metric(out, "etcd_sync_peer_unreachable_seconds", "gauge",
         "How long some engine has been failing on the peer (0 while none is), by peer.");
  const auto now = std::chrono::steady_clock::now();
  sample(out, "etcd_sync_peer_unreachable_seconds", "peer=\"etcd\"", s.etcd.failing_for(now).count() / 1000.0);
  sample(out, "etcd_sync_peer_unreachable_seconds", "peer=\"postgresql\"", s.postgresql.failing_for(now).count() / 1000.0);
  if (s.wal_rows_known) {
    metric(out, "etcd_sync_wal_rows", "gauge", "etcd_wal rows by status (pending and failed), counted every few seconds.");
    sample(out, "etcd_sync_wal_rows", "status=\"pending\"", static_cast<double>(s.wal_pending_rows));
    sample(out, "etcd_sync_wal_rows", "status=\"failed\"", static_cast<double>(s.wal_failed_rows));
  }
  metric(out, "etcd_sync_leader", "gauge", "1 on the instance that leads (and writes), 0 on a standby.");
  sample(out, "etcd_sync_leader", "", s.is_leader ? 1 : 0);
  metric(out, "etcd_sync_leader_changes_total", "counter", "Times this instance became or stopped being the leader.");
  sample(out, "etcd_sync_leader_changes_total", "", static_cast<double>(s.leader_changes));
  metric(out, "etcd_sync_fenced_total", "counter", "Writes of this instance refused because another instance leads.");
  sample(out, "etcd_sync_fenced_total", "", static_cast<double>(s.fenced));
  metric(out, "etcd_sync_history_pruned_rows_total", "counter", "Rows of the etcd table pruned by [history].");
  sample(out, "etcd_sync_history_pruned_rows_total", "", static_cast<double>(s.history_pruned));
  metric(out, "etcd_sync_snapshot_done", "gauge", "1 once the first snapshot is in PostgreSQL.");
  sample(out, "etcd_sync_snapshot_done", "", s.snapshot_done ? 1 : 0);
  histogram(out, "etcd_sync_mirror_apply_seconds", "Time to write one batch of watch events to PostgreSQL.",
            s.mirror_apply_seconds);
  histogram(out, "etcd_sync_wal_apply_seconds", "Time of one etcd Txn carrying etcd_wal rows.", s.wal_apply_seconds);
  return out;
}

MetricsServer::MetricsServer(asio::io_context& io, const asio::ip::tcp::endpoint& endpoint,
                             std::function<std::string()> metrics, std::function<bool()> ready,
                             std::function<bool()> leader)
    : io_(io), acceptor_(io), metrics_(std::move(metrics)), ready_(std::move(ready)), leader_(std::move(leader)), gate_(io) {
  boost::system::error_code ec;
  acceptor_.open(endpoint.protocol(), ec);
  if (!ec) acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor_.bind(endpoint, ec);
  if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
  if (ec)
    throw SyncError(ErrorKind::permanent, "cannot listen for metrics on " + endpoint.address().to_string() + ":" +
                                              std::to_string(endpoint.port()) + ": " + ec.message());
}

void MetricsServer::stop() {
  boost::system::error_code ignored;
  acceptor_.close(ignored);
  for (auto* socket : sockets_) socket->close(ignored);
}

asio::awaitable<void> MetricsServer::run() {
  auto inside = gate_.enter();
  while (acceptor_.is_open()) {
    boost::system::error_code ec;
    auto socket = co_await acceptor_.async_accept(asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      if (!acceptor_.is_open()) break;
      continue;
    }
    std::size_t open = 0;
    for (auto* other : sockets_) open += other->is_open() ? 1 : 0;  // coroutine-safe: int arms
    if (open >= kMaxConnections) {
      for (auto* oldest : sockets_) {
        if (!oldest->is_open()) continue;
        oldest->close(ec);  // the oldest makes room
        break;
      }
    }
    spawn(io_, gate_, serve(std::move(socket)), "metrics connection");
  }
}

asio::awaitable<void> MetricsServer::serve(asio::ip::tcp::socket socket) {
  struct Forget {
    std::list<asio::ip::tcp::socket*>& list;
    std::list<asio::ip::tcp::socket*>::iterator at;
    ~Forget() { list.erase(at); }
  } forget{sockets_, sockets_.insert(sockets_.end(), &socket)};
  beast::flat_buffer buffer;
  http::request<http::string_body> request;
  boost::system::error_code ec;
  {
    // A client that sends nothing (or too slowly) is closed after kRequestTimeout.
    Deadline read_deadline(io_, kRequestTimeout, [&socket] {
      boost::system::error_code ignored;
      socket.close(ignored);
    });
    co_await http::async_read(socket, buffer, request, asio::redirect_error(asio::use_awaitable, ec));
  }
  if (ec) co_return;
  auto response = respond(request);
  Deadline write_deadline(io_, kRequestTimeout, [&socket] {
    boost::system::error_code ignored;
    socket.close(ignored);
  });
  co_await http::async_write(socket, response, asio::redirect_error(asio::use_awaitable, ec));
  socket.shutdown(asio::ip::tcp::socket::shutdown_send, ec);
}

http::response<http::string_body> MetricsServer::respond(const http::request<http::string_body>& request) {
  http::response<http::string_body> response;
  response.version(request.version());
  response.keep_alive(false);
  response.set(http::field::server, "etcd-sync");
  auto target = request.target();
  if (target == "/metrics") {
    response.result(http::status::ok);
    response.set(http::field::content_type, "text/plain; version=0.0.4; charset=utf-8");
    response.body() = metrics_();
  } else if (target == "/healthz") {
    response.result(http::status::ok);
    response.set(http::field::content_type, "text/plain");
    response.body() = "ok\n";
  } else if (target == "/leader") {
    bool leads = leader_();
    response.result(leads ? http::status::ok : http::status::service_unavailable);
    response.set(http::field::content_type, "text/plain");
    response.body() = leads ? "leader\n" : "standby\n";
  } else if (target == "/readyz") {
    bool ready = ready_();
    response.result(ready ? http::status::ok : http::status::service_unavailable);
    response.set(http::field::content_type, "text/plain");
    response.body() = ready ? "ready\n" : "not ready\n";
  } else {
    response.result(http::status::not_found);
    response.set(http::field::content_type, "text/plain");
    response.body() = "not found: try /metrics, /healthz, /readyz or /leader\n";
  }
  response.prepare_payload();
  return response;
}

}  // namespace etcd_sync
