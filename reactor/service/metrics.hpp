#pragma once
// Prometheus metrics (text exposition format 0.0.4) and the HTTP endpoint that serves them with
// /healthz and /readyz, on the reactor (Boost.Beast).

#include "reactor/service/sync_stats.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <functional>
#include <optional>
#include <string>

namespace etcd_sync {

namespace asio = boost::asio;

/// Parses "host:port" for [metrics] listen. The host must be an IP address or "localhost" (no DNS
/// lookup on the reactor); "[::1]:9464" for IPv6. Returns nullopt when malformed.
std::optional<asio::ip::tcp::endpoint> parse_listen_address(const std::string& listen);

/// The body of GET /metrics for `stats` (counters, gauges, the apply-latency histograms).
std::string render_metrics(const SyncStats& stats, const char* version);

/// Serves GET /metrics, /healthz (the loop answers) and /readyz (`ready()` is true: both
/// connections up and the first snapshot done). One request per connection.
class MetricsServer {
 public:
  /// Binds and listens at once; throws SyncError(permanent) naming the address when it cannot.
  MetricsServer(asio::io_context& io, const asio::ip::tcp::endpoint& endpoint, std::function<std::string()> metrics,
                std::function<bool()> ready);
  /// Accepts until stop().
  asio::awaitable<void> run();
  void stop();
  asio::ip::tcp::endpoint local_endpoint() const { return acceptor_.local_endpoint(); }

 private:
  asio::awaitable<void> serve(asio::ip::tcp::socket socket);

  asio::io_context& io_;
  asio::ip::tcp::acceptor acceptor_;
  std::function<std::string()> metrics_;
  std::function<bool()> ready_;
};

}  // namespace etcd_sync
