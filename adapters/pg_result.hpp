#pragma once
// A libpq result, owned.

#include <libpq-fe.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace etcd_sync {

/// Owns one PGresult. Cell accessors take 0-based row and column numbers.
class PgResult {
 public:
  PgResult() = default;
  explicit PgResult(PGresult* result) : result_(result) {}

  PGresult* get() const { return result_.get(); }
  explicit operator bool() const { return result_ != nullptr; }
  ExecStatusType status() const { return PQresultStatus(result_.get()); }
  int rows() const { return result_ ? PQntuples(result_.get()) : 0; }
  int columns() const { return result_ ? PQnfields(result_.get()) : 0; }
  bool is_null(int row, int column) const { return PQgetisnull(result_.get(), row, column) != 0; }
  /// The cell as text (for a binary-format column, its raw bytes); empty for NULL.
  std::string_view text(int row, int column) const;
  std::optional<std::string> optional_text(int row, int column) const;
  /// The cell parsed as a decimal integer; `fallback` for NULL.
  std::int64_t int64(int row, int column, std::int64_t fallback = 0) const;
  bool boolean(int row, int column) const { return text(row, column) == "t"; }
  /// A text-format bytea cell ("\x..." hex) decoded to raw bytes.
  std::string bytea(int row, int column) const;
  /// "rows affected" of an INSERT/UPDATE/DELETE.
  std::int64_t affected() const;
  std::string sqlstate() const;
  std::string error_message() const;

 private:
  struct Clear {
    void operator()(PGresult* r) const { PQclear(r); }
  };
  std::unique_ptr<PGresult, Clear> result_;
};

}  // namespace etcd_sync
