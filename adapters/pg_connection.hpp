#pragma once
// One PostgreSQL connection driven by libpq in nonblocking mode on the reactor. The socket is waited
// on through an asio stream_descriptor that is fetched again after every PQconnectPoll and released
// (never closed by asio) before PQfinish. No call here blocks the loop.

#include "adapters/errors.hpp"
#include "adapters/pg_result.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <optional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace etcd_sync {

namespace asio = boost::asio;

class Deadline;

/// A query parameter: text, NULL, or raw bytes sent in binary format (for bytea: no escaping).
struct PgParam {
  std::optional<std::string> value;
  bool binary = false;

  static PgParam text(std::string v) { return {std::move(v), false}; }
  static PgParam null() { return {std::nullopt, false}; }
  static PgParam bytes(std::string v) { return {std::move(v), true}; }
  static PgParam int64(std::int64_t v) { return {std::to_string(v), false}; }
  static PgParam optional(const std::optional<std::string>& v) { return {v, false}; }
};

/// Builds a parameter list without an initializer_list: g++ 12 rejects a braced list inside a
/// co_await expression ("array used as initializer"), so write query(sql, pg_params(a, b)).
/// Its sibling bug is silent: a `?:` whose arms are class temporaries (std::string, json,
/// PgParam) inside a coroutine body can read uninitialized memory. Keep such expressions in
/// plain functions.
template <class... Params>
std::vector<PgParam> pg_params(Params&&... params) {
  std::vector<PgParam> out;
  out.reserve(sizeof...(params));
  (out.push_back(std::forward<Params>(params)), ...);
  return out;
}

/// A PostgreSQL array literal in text format ("{"a","b\"c",NULL}") for a text[] or bigint[]
/// parameter: every element double-quoted with `"` and `\` escaped, nullopt as NULL (PostgreSQL
/// docs, 8.15.6 "Array Input and Output Syntax").
std::string pg_array(const std::vector<std::optional<std::string>>& elements);

/// One statement of a pipeline. With `prepare`, the connection parses and plans it once (a
/// prepared statement named after its text, kept until the connection closes) and then only binds
/// and executes it: for the fixed statements run many times a second. PostgreSQL may then switch
/// to a generic plan after five executions (docs, PREPARE, "plan_cache_mode").
struct PgStatement {
  std::string sql;
  std::vector<PgParam> params;
  bool prepare = false;
};

/// A LISTEN/NOTIFY notification.
struct PgNotification {
  std::string channel;
  std::string payload;
  int sender_pid = 0;
};

/// The SQLSTATE etcd_sync_fence() raises when another leader's epoch has taken over (schema/006).
inline constexpr const char* kFencedSqlstate = "ES001";

/// Classifies a failed result by SQLSTATE: kFencedSqlstate is fenced; class 08 (connection), 57P0x
/// (shutdown), 40001/40P01 (serialization, deadlock), 53xxx (resources) and 25P03 (idle in
/// transaction timeout) are transient; 28xxx and 42501 are permission_denied; anything else is
/// permanent (PostgreSQL docs, Appendix A "Error Codes").
ErrorKind classify_sqlstate(const std::string& sqlstate);

/// A host name libpq would look up itself, with a blocking getaddrinfo inside PQconnectPoll.
struct HostToResolve {
  std::string host;
  std::string port;
};

/// What PgConnection::connect resolves asynchronously before handing `conninfo` to libpq: its one
/// host when that is a name and no hostaddr is given (PGHOST, PGHOSTADDR and PGPORT count when the
/// conninfo leaves them out, as in libpq). nullopt when there is nothing to look up: an IP address,
/// a Unix-domain socket directory, several hosts, a service file entry, or a conninfo libpq cannot
/// parse (libpq then reports it).
std::optional<HostToResolve> host_to_resolve(const std::string& conninfo);

/// The deadline of one round trip when none is configured ([postgresql] request_timeout's default).
inline constexpr std::chrono::milliseconds kDefaultPgRequestTimeout{10000};

/// libpq's TCP keepalive and tcp_user_timeout settings derived from a request deadline of
/// `request_timeout`, as conninfo keyword/value pairs: keepalives start after a third of it (at
/// least 1 s), probe every ninth of it (at least 1 s), three probes; data unacknowledged for
/// `request_timeout` ends the connection (tcp_user_timeout, milliseconds; libpq docs, "Parameter
/// Key Words"). So a peer that vanished without a reset is noticed on an idle connection too.
std::vector<std::pair<std::string, std::string>> keepalive_settings(std::chrono::milliseconds request_timeout);

class PgConnection {
 public:
  /// `conninfo` is a libpq conninfo string or URI; `name` labels logs ("mirror", "listener", ...).
  /// `request_timeout` bounds every round trip (query, script, pipeline, each COPY step): when it
  /// passes, the connection is closed and the call throws SyncError(transient) naming the
  /// endpoint. The conninfo's own keepalive settings win over the ones derived from it.
  PgConnection(asio::io_context& io, std::string conninfo, std::string name,
               std::chrono::milliseconds request_timeout = kDefaultPgRequestTimeout);
  ~PgConnection();
  PgConnection(const PgConnection&) = delete;
  PgConnection& operator=(const PgConnection&) = delete;

  /// Opens a new connection (closing any old one) with PQconnectStart/PQconnectPoll, after looking
  /// up a host name on Asio's resolver (host_to_resolve: libpq would block the loop in
  /// getaddrinfo); every address found is tried in order, the name kept for TLS and .pgpass. Throws
  /// SyncError: transient when the server cannot be reached within `timeout` (the message names host
  /// and port, never the password), permission_denied when authentication fails.
  asio::awaitable<void> connect(std::chrono::milliseconds timeout);
  bool connected() const;
  /// Closes the connection; a wait in progress ends with SyncError(cancelled).
  void close();
  /// The deadline of each round trip from now on (milliseconds; see the constructor).
  void set_request_timeout(std::chrono::milliseconds timeout) { request_timeout_ = timeout; }
  std::chrono::milliseconds request_timeout() const { return request_timeout_; }
  /// "host:port" of the server, for messages.
  std::string endpoint() const;
  const std::string& name() const { return name_; }

  /// Runs one statement with parameters (text-format results). Throws SyncError on failure:
  /// classify_sqlstate for server errors, transient when the connection is lost.
  asio::awaitable<PgResult> query(std::string sql, std::vector<PgParam> params = {});
  /// Runs a script of one or more statements without parameters (simple query protocol), e.g. a
  /// migration. Throws SyncError for the first statement that fails.
  asio::awaitable<void> execute_script(std::string sql);
  /// Runs the statements in pipeline mode: all sent at once, one round trip, one result each. If one
  /// fails, the rest are skipped by the server and the first error is thrown. Statements outside an
  /// explicit BEGIN/COMMIT run in one implicit transaction (libpq docs, "Pipeline Mode").
  asio::awaitable<std::vector<PgResult>> pipeline(std::vector<PgStatement> statements);

  /// COPY ... FROM STDIN: start, send data (any number of chunks; each is flushed before the next, so
  /// memory stays bounded by one chunk), end. copy_end returns the COPY's result (rows in affected()).
  /// `copy_sql` may start with statements that return no rows, such as "BEGIN; COPY ...": they run
  /// in the same round trip. A row the server refuses (a constraint, bad input) fails copy_end with
  /// the server's SQLSTATE; the transaction is then aborted and needs a ROLLBACK.
  asio::awaitable<void> copy_start(std::string copy_sql);
  asio::awaitable<void> copy_data(std::string_view data);
  asio::awaitable<PgResult> copy_end();

  /// Waits until at least one notification arrives (after LISTEN) and returns all that are queued.
  /// Throws SyncError(transient) when the connection is lost, SyncError(cancelled) on cancel_wait().
  /// This wait has no deadline (an idle LISTEN may wait for ever): the caller's own round trips
  /// (the listener's heartbeat every second) and the TCP keepalives notice a silent peer.
  asio::awaitable<std::vector<PgNotification>> wait_notifications();
  /// Ends a pending wait_notifications with SyncError(cancelled).
  void cancel_wait();

 private:
  enum class Wait { read, write, either };
  /// Waits until the socket is ready for `what`; throws SyncError(transient) on a socket error or
  /// after the connect deadline, SyncError(cancelled) when close() or cancel_wait() ends the wait.
  asio::awaitable<void> wait(Wait what);
  /// Why a socket wait ended without readiness: the connect or request deadline passed (transient;
  /// the connection is then closed), or close() or cancel_wait() ended it (cancelled). Both kinds
  /// of wait() throw it.
  SyncError wait_ended_error();
  /// Arms the request deadline for one round trip: when it passes, the wait in progress ends and
  /// wait_ended_error() reports "no answer within request_timeout".
  std::unique_ptr<Deadline> arm_request_deadline();
  /// The two socket waits of Wait::either and what the first to end saw; it ends `timer` (which
  /// otherwise never expires).
  struct EitherReady {
    explicit EitherReady(asio::io_context& io) : timer(io, asio::steady_timer::time_point::max()) {}
    asio::steady_timer timer;
    bool done = false;
    bool aborted = false;
  };
  /// Starts the read and the write wait for Wait::either (a plain function, not coroutine code).
  void start_either_wait(const std::shared_ptr<EitherReady>& ready);
  asio::awaitable<void> flush();
  asio::awaitable<PgResult> next_result();
  asio::awaitable<PgResult> finish_results();
  void refresh_descriptor();
  void release_descriptor();
  void drain_notifications(std::vector<PgNotification>& out);
  [[noreturn]] void throw_connection_error(const std::string& during);
  void send_params(const std::string& sql, const std::vector<PgParam>& params);
  /// The addresses of `target` (distinct, in the resolver's order); throws SyncError(transient)
  /// when there is none or `timeout` passes first.
  asio::awaitable<std::vector<std::string>> resolve(const HostToResolve& target, std::chrono::milliseconds timeout);
  SyncError resolve_error(const HostToResolve& target, const boost::system::error_code& ec,
                          std::chrono::milliseconds timeout) const;
  /// "name,name,..." and "address,address,..." for libpq's host and hostaddr (one entry per address).
  static void join_host_list(const HostToResolve& target, const std::vector<std::string>& found, std::string& hosts,
                             std::string& addresses);
  /// The SyncError for a failed result: classify_sqlstate, with the server's message.
  SyncError result_error(const PgResult& result) const;
  /// The SyncError for a COPY that did not start: the server's error, or "no result".
  SyncError copy_start_error(const PgResult& result) const;
  /// Sends a PgStatement; returns how many results it yields (2 when it is prepared first).
  int send_statement(const PgStatement& statement);

  asio::io_context& io_;
  std::string conninfo_;
  std::string name_;
  PGconn* conn_ = nullptr;
  std::optional<asio::posix::stream_descriptor> descriptor_;
  bool busy_ = false;       // a statement is in flight: one at a time per connection
  bool timed_out_ = false;  // connect()'s or a round trip's deadline passed
  std::string timed_out_what_;  // which deadline: for the message
  std::chrono::milliseconds request_timeout_;
  std::unordered_map<std::string, std::string> prepared_;  // statement text -> name on this connection
};

/// The deadline of a statement known to run long (a migration, a snapshot's COPY end and
/// reconcile), where [postgresql] request_timeout would end legitimate work.
inline constexpr std::chrono::milliseconds kLongStatementTimeout{10 * 60 * 1000};

/// Raises `pg`'s request deadline to at least `timeout` for the scope's lifetime, then restores it.
/// A vanished peer is still noticed sooner by the TCP keepalives, which keep the settings derived
/// at connect time from the configured request_timeout.
class PgLongStatements {
 public:
  PgLongStatements(PgConnection& pg, std::chrono::milliseconds timeout = kLongStatementTimeout)
      : pg_(pg), saved_(pg.request_timeout()) {
    pg_.set_request_timeout(std::max(saved_, timeout));
  }
  ~PgLongStatements() { pg_.set_request_timeout(saved_); }
  PgLongStatements(const PgLongStatements&) = delete;
  PgLongStatements& operator=(const PgLongStatements&) = delete;

 private:
  PgConnection& pg_;
  std::chrono::milliseconds saved_;
};

}  // namespace etcd_sync
