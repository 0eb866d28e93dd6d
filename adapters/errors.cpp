#include "adapters/errors.hpp"

#include <grpcpp/support/status.h>

namespace etcd_sync {

SyncError from_grpc_status(const grpc::Status& status, const std::string& what) {
  const std::string& text = status.error_message();
  std::string message = what + ": " + text + " (grpc code " + std::to_string(status.error_code()) + ")";
  // An expired auth token: authenticate again and retry.
  if (text.find("invalid auth token") != std::string::npos) return {ErrorKind::transient, message, Peer::etcd};
  switch (status.error_code()) {
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      // gRPC's own limit on one message ("received message larger than max"; etcd's server allows
      // --max-request-bytes plus 512 KiB) refuses the request itself; etcd's "too many requests"
      // and "database space exceeded" pass once the cluster catches up or is compacted.
      if (text.find("larger than max") != std::string::npos) return {ErrorKind::permanent, message, Peer::etcd};
      return {ErrorKind::transient, message, Peer::etcd};
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::DEADLINE_EXCEEDED:
    case grpc::StatusCode::ABORTED:
      return {ErrorKind::transient, message, Peer::etcd};
    case grpc::StatusCode::CANCELLED:
      return {ErrorKind::cancelled, message, Peer::etcd};
    case grpc::StatusCode::PERMISSION_DENIED:
    case grpc::StatusCode::UNAUTHENTICATED:
      return {ErrorKind::permission_denied, message, Peer::etcd};
    case grpc::StatusCode::OUT_OF_RANGE:
      if (text.find("compacted") != std::string::npos) return {ErrorKind::compacted, message, Peer::etcd};
      return {ErrorKind::permanent, message, Peer::etcd};
    case grpc::StatusCode::UNKNOWN:
      // etcd reports raft hiccups ("leader changed", "timed out") as UNKNOWN.
      if (text.find("leader") != std::string::npos || text.find("timed out") != std::string::npos ||
          text.find("timeout") != std::string::npos)
        return {ErrorKind::transient, message, Peer::etcd};
      return {ErrorKind::permanent, message, Peer::etcd};
    default:
      return {ErrorKind::permanent, message, Peer::etcd};
  }
}

const char* to_string(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::transient: return "transient";
    case ErrorKind::permanent: return "permanent";
    case ErrorKind::permission_denied: return "permission_denied";
    case ErrorKind::compacted: return "compacted";
    case ErrorKind::cancelled: return "cancelled";
    case ErrorKind::fenced: return "fenced";
  }
  return "unknown";
}

}  // namespace etcd_sync
