#pragma once
// Prometheus metrics (text exposition format 0.0.4) and the HTTP endpoint that serves them with
// /healthz and /readyz, on the reactor (Boost.Beast).

#include "reactor/engine/sync_stats.hpp"
#include "reactor/loop/gate.hpp"

#include <boost/beast/http.hpp>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <functional>
#include <optional>
#include <list>
#include <string>

namespace etcd_sync {

namespace asio = boost::asio;
namespace http = boost::beast::http;

/// Parses "host:port" for [metrics] listen. The host must be an IP address or "localhost" (no DNS
/// lookup on the reactor); "[::1]:9464" for IPv6. Returns nullopt when malformed.
std::optional<asio::ip::tcp::endpoint> parse_listen_address(const std::string& listen);

/// The body of GET /metrics for `stats` (counters, gauges, the apply-latency histograms).
std::string render_metrics(const SyncStats& stats, const char* version);

/// Serves GET /metrics, /healthz (the loop answers), /readyz (`ready()`: a leader with both
/// connections up and its first snapshot done, or a standby connected to both sides) and /leader
/// (`leader()`: 200 on the leader only, else 503). One request per connection, read within
/// kRequestTimeout; at most kMaxConnections at once: a new one beyond closes the oldest, so idle
/// or slow clients can never keep a scraper out.
class MetricsServer {
 public:
  static constexpr std::chrono::milliseconds kRequestTimeout{10000};
  static constexpr std::size_t kMaxConnections = 64;

  /// Binds and listens at once; throws SyncError(permanent) naming the address when it cannot.
  MetricsServer(asio::io_context& io, const asio::ip::tcp::endpoint& endpoint, std::function<std::string()> metrics,
                std::function<bool()> ready, std::function<bool()> leader);
  /// Accepts until stop(); each connection is served by a coroutine of its own.
  asio::awaitable<void> run();
  /// Stops accepting and closes every open connection.
  void stop();
  /// Completes once run() and every connection have ended; then the server may be destroyed.
  asio::awaitable<void> stopped() { co_await gate_.close(); }
  asio::ip::tcp::endpoint local_endpoint() const { return acceptor_.local_endpoint(); }
  /// Connections being served now.
  std::size_t connections() const { return sockets_.size(); }

 private:
  asio::awaitable<void> serve(asio::ip::tcp::socket socket);
  http::response<http::string_body> respond(const http::request<http::string_body>& request);

  asio::io_context& io_;
  asio::ip::tcp::acceptor acceptor_;
  std::function<std::string()> metrics_;
  std::function<bool()> ready_;
  std::function<bool()> leader_;
  Gate gate_;                                  ///< run() and every connection are inside
  std::list<asio::ip::tcp::socket*> sockets_;  ///< open connections, oldest first; closed by stop()
};

}  // namespace etcd_sync
