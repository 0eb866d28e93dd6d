#include "adapters/pg_result.hpp"

#include <charconv>

namespace etcd_sync {

std::string_view PgResult::text(int row, int column) const {
  if (is_null(row, column)) return {};
  return {PQgetvalue(result_.get(), row, column),
          static_cast<std::size_t>(PQgetlength(result_.get(), row, column))};
}

std::optional<std::string> PgResult::optional_text(int row, int column) const {
  if (is_null(row, column)) return std::nullopt;
  return std::string(text(row, column));
}

std::int64_t PgResult::int64(int row, int column, std::int64_t fallback) const {
  if (is_null(row, column)) return fallback;
  auto cell = text(row, column);
  std::int64_t value = fallback;
  std::from_chars(cell.data(), cell.data() + cell.size(), value);
  return value;
}

std::string PgResult::bytea(int row, int column) const {
  if (is_null(row, column)) return {};
  std::size_t length = 0;
  unsigned char* raw = PQunescapeBytea(
      reinterpret_cast<const unsigned char*>(PQgetvalue(result_.get(), row, column)), &length);
  std::string out(reinterpret_cast<const char*>(raw), length);
  PQfreemem(raw);
  return out;
}

std::int64_t PgResult::affected() const {
  const char* n = PQcmdTuples(result_.get());
  std::int64_t value = 0;
  std::from_chars(n, n + std::char_traits<char>::length(n), value);
  return value;
}

std::string PgResult::sqlstate() const {
  const char* s = PQresultErrorField(result_.get(), PG_DIAG_SQLSTATE);
  return s ? s : "";
}

std::string PgResult::error_message() const {
  const char* s = PQresultErrorMessage(result_.get());
  std::string message = s ? s : "";
  while (!message.empty() && (message.back() == '\n' || message.back() == ' ')) message.pop_back();
  return message;
}

}  // namespace etcd_sync
