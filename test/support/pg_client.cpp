#include "test/support/pg_client.hpp"

#include <libpq-fe.h>

namespace etcd_sync::testing {

namespace {

/// Rows of a successful result; throws PgError (and frees the result) otherwise.
PgClient::Rows take_rows(PGconn* conn, PGresult* result) {
  const auto status = result != nullptr ? PQresultStatus(result) : PGRES_FATAL_ERROR;
  if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK && status != PGRES_EMPTY_QUERY) {
    std::string message = result != nullptr ? PQresultErrorMessage(result) : "";
    if (message.empty()) message = PQerrorMessage(conn);
    if (message.empty()) message = std::string("unexpected result ") + PQresStatus(status);
    const char* field = result != nullptr ? PQresultErrorField(result, PG_DIAG_SQLSTATE) : nullptr;
    std::string sqlstate = field != nullptr ? field : "";
    PQclear(result);
    while (!message.empty() && message.back() == '\n') message.pop_back();
    throw PgError(message, std::move(sqlstate));
  }
  PgClient::Rows rows;
  const int row_count = PQntuples(result);
  const int column_count = PQnfields(result);
  rows.reserve(static_cast<std::size_t>(row_count));
  for (int r = 0; r < row_count; ++r) {
    PgClient::Row row;
    row.reserve(static_cast<std::size_t>(column_count));
    for (int c = 0; c < column_count; ++c) {
      if (PQgetisnull(result, r, c)) {
        row.emplace_back(std::nullopt);
      } else {
        row.emplace_back(std::string(PQgetvalue(result, r, c),
                                     static_cast<std::size_t>(PQgetlength(result, r, c))));
      }
    }
    rows.push_back(std::move(row));
  }
  PQclear(result);
  return rows;
}

}  // namespace

PgClient::PgClient(const std::string& conninfo) { connect(conninfo); }

PgClient::~PgClient() {
  if (conn_ != nullptr) PQfinish(conn_);
}

PgClient::PgClient(PgClient&& other) noexcept : conn_(std::exchange(other.conn_, nullptr)) {}

PgClient& PgClient::operator=(PgClient&& other) noexcept {
  if (this != &other) {
    if (conn_ != nullptr) PQfinish(conn_);
    conn_ = std::exchange(other.conn_, nullptr);
  }
  return *this;
}

void PgClient::connect(const std::string& conninfo) {
  if (conn_ != nullptr) PQfinish(conn_);
  conn_ = PQconnectdb(conninfo.c_str());
  if (conn_ == nullptr) throw PgError("PQconnectdb: out of memory", "");
  if (PQstatus(conn_) != CONNECTION_OK) {
    std::string message = PQerrorMessage(conn_);
    while (!message.empty() && message.back() == '\n') message.pop_back();
    PQfinish(conn_);
    conn_ = nullptr;
    throw PgError("cannot connect (" + conninfo + "): " + message, "");
  }
}

bool PgClient::connected() const { return conn_ != nullptr && PQstatus(conn_) == CONNECTION_OK; }

PgClient::Rows PgClient::exec(const std::string& sql) {
  if (conn_ == nullptr) throw PgError("PgClient::exec: not connected", "");
  return take_rows(conn_, PQexec(conn_, sql.c_str()));
}

PgClient::Rows PgClient::exec_params(const std::string& sql,
                                     const std::vector<std::optional<std::string>>& params) {
  if (conn_ == nullptr) throw PgError("PgClient::exec_params: not connected", "");
  std::vector<const char*> values;
  values.reserve(params.size());
  for (const auto& param : params) values.push_back(param ? param->c_str() : nullptr);
  return take_rows(conn_, PQexecParams(conn_, sql.c_str(), static_cast<int>(values.size()),
                                       nullptr, values.data(), nullptr, nullptr, 0));
}

std::optional<std::string> PgClient::scalar(const std::string& sql) {
  const auto rows = exec(sql);
  if (rows.empty() || rows.front().empty()) return std::nullopt;
  return rows.front().front();
}

}  // namespace etcd_sync::testing
