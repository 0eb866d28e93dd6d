#pragma once
// Errors at the I/O edges. grpc::Status, boost::system::error_code and libpq results become one
// small type that says whether trying again can help, so the sync engine decides retry vs. give up
// in one place.

#include <stdexcept>
#include <string>

namespace grpc {
class Status;
}

namespace etcd_sync {

/// How an operation failed, from the caller's point of view.
enum class ErrorKind {
  transient,          ///< the server is unreachable, restarting, or timed out: retry with backoff
  permanent,          ///< the request itself is bad (too large, invalid argument): do not retry
  permission_denied,  ///< authentication or authorization failed (exit code 3 at startup)
  compacted,          ///< etcd: the requested revision is compacted: resync instead of retrying
  cancelled,          ///< the service is stopping
  fenced,             ///< another leader took over (PostgreSQL's epoch row, or etcd's election key): write nothing more
};

/// Which side an error came from, for connection-state reporting.
enum class Peer { unknown, etcd, postgresql };

/// Thrown by the adapters; caught where the sync engine decides what to do next.
class SyncError : public std::runtime_error {
 public:
  /// `sqlstate`: PostgreSQL's five-character error code when the server refused a statement.
  SyncError(ErrorKind kind, std::string message, Peer peer = Peer::unknown, std::string sqlstate = {})
      : std::runtime_error(std::move(message)), kind_(kind), peer_(peer), sqlstate_(std::move(sqlstate)) {}
  ErrorKind kind() const { return kind_; }
  Peer peer() const { return peer_; }
  bool transient() const { return kind_ == ErrorKind::transient; }
  /// The server's SQLSTATE ("23505" for a unique violation); empty for errors that carry none
  /// (etcd's, a lost connection, a timeout).
  const std::string& sqlstate() const { return sqlstate_; }
  /// "host:port" of the server the error came from, when the adapter knew it ("" otherwise).
  const std::string& endpoint() const { return endpoint_; }
  /// Names the server the error came from; returns *this for `throw SyncError(...).at(endpoint)`.
  SyncError& at(std::string endpoint) {
    endpoint_ = std::move(endpoint);
    return *this;
  }

 private:
  ErrorKind kind_;
  Peer peer_;
  std::string sqlstate_;
  std::string endpoint_;
};

/// Classifies a gRPC status from etcd. UNAVAILABLE, DEADLINE_EXCEEDED, ABORTED, RESOURCE_EXHAUSTED
/// (but for gRPC's "received message larger than max", which is permanent) and
/// leader-change/timeouts (UNKNOWN with etcd's "leader changed" text) are transient;
/// PERMISSION_DENIED and UNAUTHENTICATED are permission_denied; "required revision has been compacted"
/// (OUT_OF_RANGE) is compacted; the rest (INVALID_ARGUMENT such as "request is too large",
/// FAILED_PRECONDITION, ...) are permanent. `what` names the call, e.g. "etcd Put".
SyncError from_grpc_status(const grpc::Status& status, const std::string& what);

const char* to_string(ErrorKind kind);

}  // namespace etcd_sync
