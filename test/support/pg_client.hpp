// A blocking libpq connection for test assertions and fixtures.
#pragma once

#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

struct pg_conn;

namespace etcd_sync::testing {

/// An error from PgClient: the server's message plus its SQLSTATE (empty for connection errors).
class PgError : public std::runtime_error {
 public:
  PgError(const std::string& message, std::string sqlstate)
      : std::runtime_error(message), sqlstate_(std::move(sqlstate)) {}
  const std::string& sqlstate() const { return sqlstate_; }

 private:
  std::string sqlstate_;
};

/// Blocking libpq connection for test assertions and fixtures. Values travel as text; NULL is
/// nullopt.
class PgClient {
 public:
  using Row = std::vector<std::optional<std::string>>;
  using Rows = std::vector<Row>;

  PgClient() = default;
  /// Connects at once; throws PgError on failure.
  explicit PgClient(const std::string& conninfo);
  ~PgClient();
  PgClient(PgClient&& other) noexcept;
  PgClient& operator=(PgClient&& other) noexcept;
  PgClient(const PgClient&) = delete;
  PgClient& operator=(const PgClient&) = delete;

  /// (Re)connects; throws PgError on failure.
  void connect(const std::string& conninfo);
  bool connected() const;
  /// Runs one or more statements (simple protocol); returns the last statement's rows. Throws
  /// PgError on any error.
  Rows exec(const std::string& sql);
  /// Runs one statement with $1..$n text parameters (nullopt is NULL). Throws PgError.
  Rows exec_params(const std::string& sql, const std::vector<std::optional<std::string>>& params);
  /// The first column of the first row, or nullopt if there is no row or it is NULL.
  std::optional<std::string> scalar(const std::string& sql);
  /// The underlying libpq handle, for anything not wrapped here.
  pg_conn* native() const { return conn_; }

 private:
  pg_conn* conn_ = nullptr;
};

}  // namespace etcd_sync::testing
