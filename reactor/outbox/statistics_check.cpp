#include "reactor/outbox/statistics_check.hpp"

#include "reactor/loop/logging.hpp"
#include "reactor/outbox/outbox_sql.hpp"

#include <string>
#include <vector>

namespace etcd_sync {

namespace {
constexpr const char* kLockNotAvailable = "55P03";  // PostgreSQL docs, Appendix A: lock_not_available

/// The check's pipeline, built outside the coroutine (g++ 12 and braced lists there): the pending
/// rows counted, the planner's estimate of them, whether this role may ANALYZE etcd_wal.
std::vector<PgStatement> statistics_statements() {
  std::vector<PgStatement> statements;
  statements.push_back(pending_sample_statement(ClaimSchedule::kPendingSample));
  statements.push_back(planner_pending_estimate_statement());
  statements.push_back(may_analyze_statement());
  return statements;
}
}  // namespace

asio::awaitable<void> check_statistics(PgConnection& pg, StatisticsCheck& check) {
  using clock = std::chrono::steady_clock;
  check.began(clock::now());
  auto statements = statistics_statements();
  auto results = co_await pg.pipeline(std::move(statements));
  const auto counted = results[0].int64(0, 0);
  std::optional<std::int64_t> estimate;
  if (results[1].rows() > 0) estimate = explained_rows(results[1].text(0, 0));
  const auto verdict = check.judge(estimate, counted, results[2].boolean(0, 0));
  if (verdict == StatisticsCheck::Verdict::current) co_return;
  LogFields fields{{"component", "outbox"}, {"planner_estimate", *estimate}, {"pending_counted", counted}};
  if (verdict == StatisticsCheck::Verdict::refused) {
    log_warn("PostgreSQL's statistics of etcd_wal predate the rows now pending, and this role may not ANALYZE "
             "etcd_wal (only its owner may): claims walk the pending rows until autovacuum analyzes it; run "
             "ANALYZE etcd_wal after large INSERTs",
             fields);
    co_return;
  }
  const auto began = clock::now();
  try {
    std::string analyze = kAnalyzeWal;
    co_await pg.execute_script(std::move(analyze));
  } catch (const SyncError& error) {
    if (error.sqlstate() != kLockNotAvailable) throw;  // a VACUUM holds it
    log_debug("ANALYZE etcd_wal waits for a lock; trying again at the next check", fields);
    co_return;
  }
  check.analyzed(clock::now());
  fields.push_back({"elapsed_ms", std::chrono::duration_cast<std::chrono::milliseconds>(clock::now() - began).count()});
  log_info("analyzed etcd_wal: PostgreSQL's statistics predated the rows now pending", fields);
}

}  // namespace etcd_sync
