// One HTTP GET against the service's metrics listener, bounded in time, so a test asking a hung
// service for /readyz fails instead of hanging. Header-only, test-side code.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <string>

#include "test/support/posix.hpp"

namespace etcd_sync::testing {

/// GET http://`ipv4_address`:`port``path` (127.0.0.1 by default); returns "STATUS\nBODY", or "" when it cannot connect or
/// no whole answer arrives within `timeout` (each connect, send and read is bounded by it).
inline std::string http_get_bounded(int port, const std::string& path,
                                    std::chrono::milliseconds timeout = std::chrono::seconds(2),
                                    const std::string& ipv4_address = "127.0.0.1") {
  Fd fd(::socket(AF_INET, SOCK_STREAM, 0));
  if (fd.get() < 0) return "";
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(timeout.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000);
  ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);  // also bounds connect()
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<std::uint16_t>(port));
  if (::inet_pton(AF_INET, ipv4_address.c_str(), &address.sin_addr) != 1) return "";
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) return "";
  const std::string request = "GET " + path + " HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
  if (::send(fd.get(), request.data(), request.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(request.size())) return "";
  std::string response;
  char buffer[4096];
  for (;;) {
    const ssize_t n = ::recv(fd.get(), buffer, sizeof buffer, 0);
    if (n < 0) return "";  // timed out (or failed) before the server closed: no whole answer
    if (n == 0) break;
    response.append(buffer, static_cast<std::size_t>(n));
  }
  const auto space = response.find(' ');
  const auto body = response.find("\r\n\r\n");
  if (space == std::string::npos || body == std::string::npos) return "";
  return response.substr(space + 1, 3) + "\n" + response.substr(body + 4);
}

}  // namespace etcd_sync::testing
