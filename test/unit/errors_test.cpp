// Error classification at the I/O edges: gRPC statuses from etcd and SQLSTATEs from PostgreSQL.

#include <gtest/gtest.h>
#include <grpcpp/support/status.h>

#include <string>

#include "adapters/errors.hpp"
#include "adapters/pg_connection.hpp"

namespace etcd_sync {
namespace {

ErrorKind kind_of(grpc::StatusCode code, const std::string& message) {
  return from_grpc_status(grpc::Status(code, message), "etcd Put").kind();
}

TEST(FromGrpcStatus, UnreachableOrOverloadedServerIsTransient) {
  EXPECT_EQ(kind_of(grpc::StatusCode::UNAVAILABLE, "failed to connect to all addresses"), ErrorKind::transient);
  EXPECT_EQ(kind_of(grpc::StatusCode::UNAVAILABLE, "etcdserver: no leader"), ErrorKind::transient);
  EXPECT_EQ(kind_of(grpc::StatusCode::DEADLINE_EXCEEDED, "Deadline Exceeded"), ErrorKind::transient);
  EXPECT_EQ(kind_of(grpc::StatusCode::ABORTED, ""), ErrorKind::transient);
  EXPECT_EQ(kind_of(grpc::StatusCode::RESOURCE_EXHAUSTED, "etcdserver: too many requests"), ErrorKind::transient);
}

TEST(FromGrpcStatus, RaftHiccupsReportedAsUnknownAreTransient) {
  EXPECT_EQ(kind_of(grpc::StatusCode::UNKNOWN, "etcdserver: leader changed"), ErrorKind::transient);
  EXPECT_EQ(kind_of(grpc::StatusCode::UNKNOWN, "etcdserver: request timed out"), ErrorKind::transient);
  EXPECT_EQ(kind_of(grpc::StatusCode::UNKNOWN, "etcdserver: request timed out, possibly due to connection lost"),
            ErrorKind::transient);
  EXPECT_EQ(kind_of(grpc::StatusCode::UNKNOWN, "context timeout"), ErrorKind::transient);
  EXPECT_EQ(kind_of(grpc::StatusCode::UNKNOWN, "something else broke"), ErrorKind::permanent);
}

TEST(FromGrpcStatus, CompactedRevisionIsItsOwnKind) {
  EXPECT_EQ(kind_of(grpc::StatusCode::OUT_OF_RANGE, "etcdserver: mvcc: required revision has been compacted"),
            ErrorKind::compacted);
  // A future revision is also OUT_OF_RANGE, but resyncing cannot fix it.
  EXPECT_EQ(kind_of(grpc::StatusCode::OUT_OF_RANGE, "etcdserver: mvcc: required revision is a future revision"),
            ErrorKind::permanent);
}

TEST(FromGrpcStatus, AuthFailuresArePermissionDenied) {
  EXPECT_EQ(kind_of(grpc::StatusCode::PERMISSION_DENIED, "etcdserver: permission denied"),
            ErrorKind::permission_denied);
  EXPECT_EQ(kind_of(grpc::StatusCode::UNAUTHENTICATED, "etcdserver: user name is empty"),
            ErrorKind::permission_denied);
}

TEST(FromGrpcStatus, ExpiredTokenIsTransientWhateverTheCode) {
  // etcd 3.4 sends it as UNAUTHENTICATED; the client re-authenticates and retries.
  EXPECT_EQ(kind_of(grpc::StatusCode::UNAUTHENTICATED, "etcdserver: invalid auth token"), ErrorKind::transient);
  EXPECT_EQ(kind_of(grpc::StatusCode::INVALID_ARGUMENT, "etcdserver: invalid auth token"), ErrorKind::transient);
}

TEST(FromGrpcStatus, BadRequestsArePermanent) {
  EXPECT_EQ(kind_of(grpc::StatusCode::INVALID_ARGUMENT, "etcdserver: request is too large"), ErrorKind::permanent);
  EXPECT_EQ(kind_of(grpc::StatusCode::INVALID_ARGUMENT, "etcdserver: key is not provided"), ErrorKind::permanent);
  EXPECT_EQ(kind_of(grpc::StatusCode::FAILED_PRECONDITION, "etcdserver: requested lease not found"),
            ErrorKind::permanent);
  EXPECT_EQ(kind_of(grpc::StatusCode::NOT_FOUND, "etcdserver: requested lease not found"), ErrorKind::permanent);
  EXPECT_EQ(kind_of(grpc::StatusCode::UNIMPLEMENTED, ""), ErrorKind::permanent);
}

TEST(FromGrpcStatus, CancelledIsCancelled) {
  EXPECT_EQ(kind_of(grpc::StatusCode::CANCELLED, "Cancelled"), ErrorKind::cancelled);
}

TEST(FromGrpcStatus, MessageNamesTheCallTheServerTextAndTheCode) {
  const SyncError error =
      from_grpc_status(grpc::Status(grpc::StatusCode::UNAVAILABLE, "connection refused"), "etcd Range at 10.0.0.1:2379");
  EXPECT_STREQ(error.what(), "etcd Range at 10.0.0.1:2379: connection refused (grpc code 14)");
  EXPECT_TRUE(error.transient());
  EXPECT_EQ(error.peer(), Peer::etcd);
}

TEST(FromGrpcStatus, KindNames) {
  EXPECT_STREQ(to_string(ErrorKind::transient), "transient");
  EXPECT_STREQ(to_string(ErrorKind::permanent), "permanent");
  EXPECT_STREQ(to_string(ErrorKind::permission_denied), "permission_denied");
  EXPECT_STREQ(to_string(ErrorKind::compacted), "compacted");
  EXPECT_STREQ(to_string(ErrorKind::cancelled), "cancelled");
}

TEST(ClassifySqlstate, ConnectionShutdownConcurrencyAndResourceErrorsAreTransient) {
  for (const char* state : {"08000", "08003", "08006", "08001", "57P01", "57P02", "57P03", "40001", "40P01",
                            "53000", "53100", "53200", "53300", ""})
    EXPECT_EQ(classify_sqlstate(state), ErrorKind::transient) << "SQLSTATE '" << state << "'";
}

TEST(ClassifySqlstate, AuthAndPrivilegeErrorsArePermissionDenied) {
  for (const char* state : {"28000", "28P01", "42501"})
    EXPECT_EQ(classify_sqlstate(state), ErrorKind::permission_denied) << state;
}

TEST(ClassifySqlstate, EverythingElseIsPermanent) {
  // Unique violation, undefined table, division by zero, bad text representation, query canceled
  // (57014: a statement_timeout, not a shutdown), disk full's neighbour 58030 (I/O error).
  for (const char* state : {"23505", "42P01", "22012", "22P02", "57014", "58030", "XX000", "25P02"})
    EXPECT_EQ(classify_sqlstate(state), ErrorKind::permanent) << state;
}

}  // namespace
}  // namespace etcd_sync
