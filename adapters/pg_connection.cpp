#include "adapters/pg_connection.hpp"

#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>

#include "reactor/loop/deadline.hpp"
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <cassert>
#include <cstdlib>
#include <cstring>
#include <memory>

namespace etcd_sync {

namespace {

std::string trimmed(const char* text) {
  std::string s = text ? text : "";
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

bool looks_like_auth_failure(const std::string& message) {
  // A missing database is "cannot connect" (exit 2), a missing role is a permission problem.
  if (message.find("role \"") != std::string::npos && message.find("does not exist") != std::string::npos) return true;
  for (const char* needle : {"authentication failed", "no pg_hba.conf entry", "permission denied", "password is required"})
    if (message.find(needle) != std::string::npos) return true;
  return false;
}

/// Marks a statement as in flight on a connection for the scope of one call.
class BusyScope {
 public:
  explicit BusyScope(bool& busy) : busy_(busy) {
    assert(!busy_ && "one statement at a time per PgConnection");
    busy_ = true;
  }
  ~BusyScope() { busy_ = false; }

 private:
  bool& busy_;
};

}  // namespace

std::optional<HostToResolve> host_to_resolve(const std::string& conninfo) {
  char* error = nullptr;
  std::unique_ptr<PQconninfoOption, decltype(&PQconninfoFree)> options(PQconninfoParse(conninfo.c_str(), &error),
                                                                       &PQconninfoFree);
  if (error) PQfreemem(error);
  if (!options) return std::nullopt;
  auto value = [&](const char* keyword, const char* environment) -> std::string {
    for (auto* o = options.get(); o->keyword; ++o)
      if (std::strcmp(o->keyword, keyword) == 0 && o->val && *o->val) return o->val;
    const char* from_environment = environment ? std::getenv(environment) : nullptr;
    return from_environment ? from_environment : "";
  };
  if (!value("service", "PGSERVICE").empty() || !value("hostaddr", "PGHOSTADDR").empty()) return std::nullopt;
  std::string host = value("host", "PGHOST");
  if (host.empty() || host.front() == '/' || host.front() == '@' || host.find(',') != std::string::npos)
    return std::nullopt;
  boost::system::error_code not_an_address;
  asio::ip::make_address(host, not_an_address);
  if (!not_an_address) return std::nullopt;
  std::string port = value("port", "PGPORT");
  return HostToResolve{host, port.empty() ? "5432" : port};
}

std::string pg_array(const std::vector<std::optional<std::string>>& elements) {
  std::string out = "{";
  for (std::size_t i = 0; i < elements.size(); ++i) {
    if (i > 0) out += ',';
    if (!elements[i]) {
      out += "NULL";
      continue;
    }
    out += '"';
    for (char c : *elements[i]) {
      if (c == '"' || c == '\\') out += '\\';
      out += c;
    }
    out += '"';
  }
  return out + "}";
}

ErrorKind classify_sqlstate(const std::string& state) {
  if (state == kFencedSqlstate) return ErrorKind::fenced;
  if (state.rfind("08", 0) == 0 || state.rfind("57P0", 0) == 0 || state == "40001" || state == "40P01" ||
      state.rfind("53", 0) == 0 || state == "25P03" || state.empty())
    return ErrorKind::transient;
  if (state.rfind("28", 0) == 0 || state == "42501") return ErrorKind::permission_denied;
  return ErrorKind::permanent;
}

std::vector<std::pair<std::string, std::string>> keepalive_settings(std::chrono::milliseconds request_timeout) {
  const auto seconds = [](std::chrono::milliseconds d) {
    return std::to_string(std::max<long long>(1, std::chrono::duration_cast<std::chrono::seconds>(d).count()));
  };
  return {{"keepalives", "1"},
          {"keepalives_idle", seconds(request_timeout / 3)},
          {"keepalives_interval", seconds(request_timeout / 9)},
          {"keepalives_count", "3"},
          {"tcp_user_timeout", std::to_string(std::max<long long>(1000, request_timeout.count()))}};
}

PgConnection::PgConnection(asio::io_context& io, std::string conninfo, std::string name,
                           std::chrono::milliseconds request_timeout)
    : io_(io), conninfo_(std::move(conninfo)), name_(std::move(name)), request_timeout_(request_timeout) {}

PgConnection::~PgConnection() { close(); }

bool PgConnection::connected() const { return conn_ != nullptr && PQstatus(conn_) == CONNECTION_OK; }

std::string PgConnection::endpoint() const {
  if (!conn_) return "(not connected)";
  const char* host = PQhost(conn_);
  const char* port = PQport(conn_);
  return std::string(host && *host ? host : "localhost") + ":" + (port && *port ? port : "5432");
}

void PgConnection::release_descriptor() {
  if (descriptor_) {
    descriptor_->cancel();
    descriptor_->release();  // libpq owns the socket; asio must not close it
    descriptor_.reset();
  }
}

void PgConnection::refresh_descriptor() {
  int fd = conn_ ? PQsocket(conn_) : -1;
  if (descriptor_ && descriptor_->native_handle() == fd) return;
  release_descriptor();
  if (fd >= 0) descriptor_.emplace(io_, fd);
}

void PgConnection::close() {
  release_descriptor();
  if (conn_) {
    PQfinish(conn_);
    conn_ = nullptr;
  }
  busy_ = false;  // nothing is in flight on a closed connection (a COPY abandoned mid-way set it)
  prepared_.clear();
}

void PgConnection::cancel_wait() {
  if (descriptor_) descriptor_->cancel();
}

void PgConnection::throw_connection_error(const std::string& during) {
  std::string message = "PostgreSQL (" + name_ + ") at " + endpoint() + ": " + during + ": " +
                        trimmed(conn_ ? PQerrorMessage(conn_) : "not connected");
  SyncError error(ErrorKind::transient, message, Peer::postgresql);
  throw error.at(endpoint());
}

asio::awaitable<void> PgConnection::wait(Wait what) {
  if (!descriptor_) throw_connection_error("no socket");
  using base = asio::posix::descriptor_base;
  if (what != Wait::either) {
    boost::system::error_code ec;
    co_await descriptor_->async_wait(what == Wait::read ? base::wait_read : base::wait_write,  // coroutine-safe: enum arms
                                     asio::redirect_error(asio::use_awaitable, ec));
    if (ec == asio::error::operation_aborted) throw wait_ended_error();
    if (ec) throw_connection_error(ec.message());
    co_return;
  }
  // Readable or writable, whichever comes first (libpq docs, "Asynchronous Command Processing":
  // when PQflush returns 1 wait for either, to avoid a deadlock with a server that is sending too).
  // The two waits end a timer that the coroutine awaits, and a plain function starts them. They
  // were once started by an async_initiate lambda inside this coroutine's co_await expression; the
  // shared state it owned lost one reference too many (g++ 12, Boost 1.74), the second wait read
  // freed memory (AddressSanitizer: heap-use-after-free) and etcd-sync died of SIGSEGV now and then.
  auto ready = std::make_shared<EitherReady>(io_);
  start_either_wait(ready);
  boost::system::error_code ignored;
  co_await ready->timer.async_wait(asio::redirect_error(asio::use_awaitable, ignored));
  if (ready->aborted) throw wait_ended_error();
}

SyncError PgConnection::wait_ended_error() {
  if (!timed_out_) return SyncError(ErrorKind::cancelled, "PostgreSQL (" + name_ + "): wait cancelled", Peer::postgresql);
  SyncError error(ErrorKind::transient, "PostgreSQL (" + name_ + ") at " + endpoint() + ": " + timed_out_what_,
                  Peer::postgresql);
  error.at(endpoint());
  // The protocol state is unknown (a statement may be half sent or half answered): a fresh
  // connection beats waiting for TCP to give up on this one.
  if (conn_ && connected()) close();
  return error;
}

std::unique_ptr<Deadline> PgConnection::arm_request_deadline() {
  timed_out_ = false;
  return std::make_unique<Deadline>(io_, request_timeout_, [this] {
    timed_out_ = true;
    timed_out_what_ = "no answer within " + std::to_string(request_timeout_.count()) + " ms ([postgresql] request_timeout)";
    if (descriptor_) descriptor_->cancel();
  });
}

void PgConnection::start_either_wait(const std::shared_ptr<EitherReady>& ready) {
  using base = asio::posix::descriptor_base;
  auto on_ready = [this, ready](boost::system::error_code ec) {
    if (ready->done) return;
    ready->done = true;
    ready->aborted = ec == asio::error::operation_aborted;  // close() or cancel_wait(), not readiness
    if (descriptor_) descriptor_->cancel();                 // the other wait ends with operation_aborted
    ready->timer.cancel();
  };
  descriptor_->async_wait(base::wait_read, on_ready);
  descriptor_->async_wait(base::wait_write, on_ready);
}

// Plain functions, not coroutine code: g++ 12 mishandles a ?: of class temporaries in a coroutine.
SyncError PgConnection::resolve_error(const HostToResolve& target, const boost::system::error_code& ec,
                                      std::chrono::milliseconds timeout) const {
  std::string why = "no address";
  if (ec == asio::error::operation_aborted)
    why = "no answer within " + std::to_string(timeout.count()) + " ms";
  else if (ec)
    why = ec.message();
  return SyncError(ErrorKind::transient,
                   "cannot connect to PostgreSQL (" + name_ + "): could not resolve host \"" + target.host + "\": " + why,
                   Peer::postgresql);
}

void PgConnection::join_host_list(const HostToResolve& target, const std::vector<std::string>& found,
                                  std::string& hosts, std::string& addresses) {
  for (const auto& address : found) {
    if (!hosts.empty()) {
      hosts += ',';
      addresses += ',';
    }
    hosts += target.host;
    addresses += address;
  }
}

asio::awaitable<std::vector<std::string>> PgConnection::resolve(const HostToResolve& target,
                                                                 std::chrono::milliseconds timeout) {
  asio::ip::tcp::resolver resolver(io_);
  boost::system::error_code ec;
  asio::ip::tcp::resolver::results_type results;
  {
    Deadline deadline(io_, timeout, [&resolver] { resolver.cancel(); });
    results = co_await resolver.async_resolve(target.host, target.port, asio::redirect_error(asio::use_awaitable, ec));
  }
  std::vector<std::string> addresses;
  if (!ec)
    for (const auto& entry : results) {
      auto address = entry.endpoint().address().to_string();
      if (std::find(addresses.begin(), addresses.end(), address) == addresses.end()) addresses.push_back(address);
    }
  if (addresses.empty()) throw resolve_error(target, ec, timeout);
  co_return addresses;
}

asio::awaitable<void> PgConnection::connect(std::chrono::milliseconds timeout) {
  close();
  timed_out_ = false;
  const auto give_up_at = std::chrono::steady_clock::now() + timeout;  // the lookup counts too
  // The connection shows as "etcd-sync <name>" in pg_stat_activity unless the conninfo (or
  // PGAPPNAME) names an application_name (libpq docs, fallback_application_name).
  const std::string application = "etcd-sync " + name_;
  // The keepalives come before the conninfo (dbname, expanded), so the conninfo's own settings win
  // (libpq processes the keywords in order, later ones override earlier ones).
  const auto keepalives = keepalive_settings(request_timeout_);
  std::vector<const char*> keywords, values;
  for (const auto& [keyword, value] : keepalives) {
    keywords.push_back(keyword.c_str());
    values.push_back(value.c_str());
  }
  keywords.insert(keywords.end(), {"dbname", "fallback_application_name"});
  values.insert(values.end(), {conninfo_.c_str(), application.c_str()});
  std::string hosts, addresses;
  if (auto target = host_to_resolve(conninfo_)) {
    // Every address, in the resolver's order, as a host list libpq tries in turn (the name stays
    // each entry's host: libpq uses it for TLS verification and .pgpass; libpq docs, hostaddr).
    auto found = co_await resolve(*target, timeout);
    join_host_list(*target, found, hosts, addresses);
    keywords.insert(keywords.end(), {"host", "hostaddr"});
    values.insert(values.end(), {hosts.c_str(), addresses.c_str()});
  }
  keywords.push_back(nullptr);
  values.push_back(nullptr);
  conn_ = PQconnectStartParams(keywords.data(), values.data(), 1);
  if (!conn_) throw SyncError(ErrorKind::transient, "PostgreSQL (" + name_ + "): out of memory", Peer::postgresql);
  if (PQstatus(conn_) == CONNECTION_BAD) {
    std::string message = trimmed(PQerrorMessage(conn_));
    close();
    throw SyncError(ErrorKind::permanent, "PostgreSQL (" + name_ + "): invalid conninfo: " + message, Peer::postgresql);
  }
  Deadline deadline(io_, give_up_at, [this] {
    if (connected()) return;  // a connect that won the race keeps its socket
    timed_out_ = true;
    timed_out_what_ = "no answer within the connect deadline";
    if (descriptor_) descriptor_->cancel();
  });
  PostgresPollingStatusType poll = PGRES_POLLING_WRITING;
  while (poll != PGRES_POLLING_OK) {
    if (poll == PGRES_POLLING_FAILED) {
      std::string message = "cannot connect to PostgreSQL (" + name_ + "): " + trimmed(PQerrorMessage(conn_));
      ErrorKind kind = looks_like_auth_failure(message) ? ErrorKind::permission_denied : ErrorKind::transient;
      SyncError error(kind, message, Peer::postgresql);
      error.at(endpoint());
      close();
      throw error;
    }
    release_descriptor();  // libpq may have opened a new socket: fetch it again after every poll
    refresh_descriptor();
    try {
      co_await wait(poll == PGRES_POLLING_READING ? Wait::read : Wait::write);  // coroutine-safe: enum arms
    } catch (const SyncError&) {
      std::string host = endpoint();
      close();
      SyncError error(ErrorKind::transient, "cannot connect to PostgreSQL (" + name_ + ") at " + host +
                                                ": no answer within " + std::to_string(timeout.count()) + " ms",
                      Peer::postgresql);
      throw error.at(host);
    }
    poll = PQconnectPoll(conn_);
  }
  deadline.disarm();
  refresh_descriptor();
  PQsetnonblocking(conn_, 1);
  // NOTICEs ("relation already exists, skipping") are expected chatter; errors arrive as results.
  PQsetNoticeProcessor(conn_, [](void*, const char*) {}, nullptr);
}

asio::awaitable<void> PgConnection::flush() {
  for (;;) {
    int r = PQflush(conn_);
    if (r == 0) co_return;
    if (r < 0) throw_connection_error("sending");
    co_await wait(Wait::either);
    if (!PQconsumeInput(conn_)) throw_connection_error("receiving");
  }
}

asio::awaitable<PgResult> PgConnection::next_result() {
  while (PQisBusy(conn_)) {
    co_await wait(Wait::read);
    if (!PQconsumeInput(conn_)) throw_connection_error("receiving");
  }
  co_return PgResult(PQgetResult(conn_));
}

asio::awaitable<PgResult> PgConnection::finish_results() {
  // Reads results until the terminating NULL; returns the first error, or the last result.
  PgResult kept;
  for (;;) {
    PgResult result = co_await next_result();
    if (!result) break;
    auto s = result.status();
    bool failed = s == PGRES_FATAL_ERROR || s == PGRES_BAD_RESPONSE;
    bool kept_failed = kept && (kept.status() == PGRES_FATAL_ERROR || kept.status() == PGRES_BAD_RESPONSE);
    if (!kept_failed || failed) {
      if (!kept_failed) kept = std::move(result);
    }
  }
  if (!kept) throw_connection_error("no result");
  if (kept.status() == PGRES_FATAL_ERROR || kept.status() == PGRES_BAD_RESPONSE) {
    if (PQstatus(conn_) == CONNECTION_BAD) throw_connection_error("statement failed");
    throw result_error(kept);
  }
  co_return kept;
}

namespace {
/// A statement's parameters as libpq takes them.
struct ParamArrays {
  explicit ParamArrays(const std::vector<PgParam>& params) {
    for (const auto& p : params) {
      values.push_back(p.value ? p.value->data() : nullptr);
      lengths.push_back(p.value ? static_cast<int>(p.value->size()) : 0);
      formats.push_back(p.binary ? 1 : 0);
    }
  }
  int count() const { return static_cast<int>(values.size()); }
  std::vector<const char*> values;
  std::vector<int> lengths, formats;
};
}  // namespace

void PgConnection::send_params(const std::string& sql, const std::vector<PgParam>& params) {
  ParamArrays p(params);
  if (!PQsendQueryParams(conn_, sql.c_str(), p.count(), nullptr, p.values.data(), p.lengths.data(), p.formats.data(), 0))
    throw_connection_error("sending a statement");
}

SyncError PgConnection::result_error(const PgResult& result) const {
  return SyncError(classify_sqlstate(result.sqlstate()),
                   "PostgreSQL (" + name_ + "): " + result.error_message() + " [SQLSTATE " + result.sqlstate() + "]",
                   Peer::postgresql, result.sqlstate());
}

int PgConnection::send_statement(const PgStatement& statement) {
  if (!statement.prepare) {
    send_params(statement.sql, statement.params);
    return 1;
  }
  int results = 1;
  ParamArrays p(statement.params);
  auto known = prepared_.find(statement.sql);
  if (known == prepared_.end()) {
    std::string name = "etcd_sync_" + std::to_string(prepared_.size() + 1);
    if (!PQsendPrepare(conn_, name.c_str(), statement.sql.c_str(), p.count(), nullptr))
      throw_connection_error("preparing a statement");
    known = prepared_.emplace(statement.sql, std::move(name)).first;
    ++results;
  }
  if (!PQsendQueryPrepared(conn_, known->second.c_str(), p.count(), p.values.data(), p.lengths.data(), p.formats.data(), 0))
    throw_connection_error("sending a prepared statement");
  return results;
}

asio::awaitable<PgResult> PgConnection::query(std::string sql, std::vector<PgParam> params) {
  if (!connected()) throw_connection_error("query");
  auto deadline = arm_request_deadline();
  BusyScope busy(busy_);
  send_params(sql, params);
  co_await flush();
  co_return co_await finish_results();
}

asio::awaitable<void> PgConnection::execute_script(std::string sql) {
  if (!connected()) throw_connection_error("script");
  auto deadline = arm_request_deadline();
  BusyScope busy(busy_);
  if (!PQsendQuery(conn_, sql.c_str())) throw_connection_error("sending a script");
  co_await flush();
  co_await finish_results();
}

asio::awaitable<std::vector<PgResult>> PgConnection::pipeline(std::vector<PgStatement> statements) {
  if (!connected()) throw_connection_error("pipeline");
  auto deadline = arm_request_deadline();
  BusyScope busy(busy_);
  if (!PQenterPipelineMode(conn_)) throw_connection_error("entering pipeline mode");
  std::vector<int> expected;
  for (const auto& statement : statements) expected.push_back(send_statement(statement));
  if (!PQpipelineSync(conn_)) throw_connection_error("pipeline sync");
  co_await flush();
  std::vector<PgResult> results;
  std::optional<SyncError> first_error;
  for (std::size_t i = 0; i < statements.size(); ++i) {
    if (expected[i] == 2) {
      // The PREPARE's own result comes first. If it failed, the statement is not kept.
      PgResult prepared = co_await next_result();
      while (co_await next_result()) {
      }
      if (!prepared) throw_connection_error("pipeline result");
      if (prepared.status() != PGRES_COMMAND_OK) {
        prepared_.erase(statements[i].sql);
        if (!first_error) first_error = result_error(prepared);
      }
    }
    PgResult result = co_await next_result();
    if (!result) throw_connection_error("pipeline result");
    auto s = result.status();
    if ((s == PGRES_FATAL_ERROR || s == PGRES_BAD_RESPONSE) && !first_error) first_error = result_error(result);
    results.push_back(std::move(result));
    while (co_await next_result()) {  // each statement's results end with NULL
    }
  }
  PgResult sync = co_await next_result();
  if (!sync || sync.status() != PGRES_PIPELINE_SYNC) throw_connection_error("pipeline sync result");
  if (!PQexitPipelineMode(conn_)) throw_connection_error("leaving pipeline mode");
  if (first_error) throw *first_error;
  co_return results;
}

// A plain function, not coroutine code: g++ 12 mishandles a ?: of class temporaries in a coroutine.
SyncError PgConnection::copy_start_error(const PgResult& result) const {
  std::string message = result ? result.error_message() : "no result";
  return SyncError(result ? classify_sqlstate(result.sqlstate()) : ErrorKind::transient,
                   "PostgreSQL (" + name_ + "): COPY did not start: " + message, Peer::postgresql);
}

asio::awaitable<void> PgConnection::copy_start(std::string copy_sql) {
  if (!connected()) throw_connection_error("COPY");
  auto deadline = arm_request_deadline();
  if (!PQsendQuery(conn_, copy_sql.c_str())) throw_connection_error("sending COPY");
  co_await flush();
  PgResult result = co_await next_result();
  while (result && result.status() == PGRES_COMMAND_OK) {  // a BEGIN sent before it
    PgResult next = co_await next_result();
    result = std::move(next);
  }
  if (!result || result.status() != PGRES_COPY_IN) {
    SyncError error = copy_start_error(result);
    while (co_await next_result()) {
    }
    throw error;
  }
  busy_ = true;
}

asio::awaitable<void> PgConnection::copy_data(std::string_view data) {
  if (!connected()) throw_connection_error("COPY data");
  auto deadline = arm_request_deadline();
  for (;;) {
    int r = PQputCopyData(conn_, data.data(), static_cast<int>(data.size()));
    if (r == 1) break;
    if (r < 0) throw_connection_error("COPY data");
    co_await wait(Wait::write);
    co_await flush();
  }
  co_await flush();
}

asio::awaitable<PgResult> PgConnection::copy_end() {
  if (!connected()) throw_connection_error("COPY end");
  auto deadline = arm_request_deadline();
  for (;;) {
    int r = PQputCopyEnd(conn_, nullptr);
    if (r == 1) break;
    if (r < 0) throw_connection_error("COPY end");
    co_await wait(Wait::write);
  }
  co_await flush();
  busy_ = false;
  co_return co_await finish_results();
}

void PgConnection::drain_notifications(std::vector<PgNotification>& out) {
  while (PGnotify* n = PQnotifies(conn_)) {
    out.push_back({n->relname, n->extra ? n->extra : "", n->be_pid});
    PQfreemem(n);
  }
}

asio::awaitable<std::vector<PgNotification>> PgConnection::wait_notifications() {
  if (!connected()) throw_connection_error("LISTEN");
  std::vector<PgNotification> out;
  drain_notifications(out);
  while (out.empty()) {
    co_await wait(Wait::read);
    if (!PQconsumeInput(conn_)) throw_connection_error("waiting for notifications");
    drain_notifications(out);
  }
  co_return out;
}

}  // namespace etcd_sync
