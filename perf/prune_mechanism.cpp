// (l) prune-mechanism: the two ways to bound the history, built side by side on the same
// PostgreSQL and filled with the same --prune-rows history as (g) (keys of 10 versions, 128 keys
// per revision as Txns of 128 puts leave them, 100-byte values):
//   - rows: `prune_rows (LIKE etcd INCLUDING ALL)`, what `etcd` is today; pruned by the pruner's own
//     statements (reactor/history/prune_sql.cpp: windows of 2,000 rows along etcd_revision_idx,
//     DELETE of the rows with keep_versions newer ones), run back to back, without the pruner's
//     rests;
//   - partitions: `prune_parts`, the same columns and constraints, PARTITION BY RANGE (revision),
//     each partition holding about 100,000 rows of this history (782 revisions of 128 rows), whose
//     oldest partitions are dropped whole.
// Measured on both: the mirror's INSERT (its own statement, reactor/mirror/mirror_rows.cpp, 100 rows
// per transaction, prepared) of 100,000 new versions, and etcd_get's lookup (the latest row of a
// key); for the partitions, how many keys' latest rows a drop of the oldest partitions would lose
// (the reason keep_versions needs row-level deletes), the time of the drops that lose none, and the
// row-level pass that must still delete the superseded rows they leave.

#include "perf/bench_env.hpp"
#include "reactor/history/prune_sql.hpp"
#include "reactor/history/pruner.hpp"
#include "reactor/mirror/mirror_rows.hpp"

namespace etcd_sync::bench {

namespace {

using namespace std::chrono_literals;

constexpr int versions_per_key = 10;
constexpr int rows_per_revision = 128;
constexpr int rows_per_partition = 100000;
constexpr int insert_rows = 100000;
constexpr int insert_batch = 100;  ///< rows per mirror transaction ([sync] batch_size)
constexpr int lookups = 20000;

/// `sql` with the table `etcd` (after FROM or INTO) replaced by `table`; throws when there is none.
std::string on_table(std::string sql, const std::string& table) {
  int replaced = 0;
  for (const std::string word : {"FROM etcd ", "INTO etcd "}) {
    for (auto at = sql.find(word); at != std::string::npos; at = sql.find(word, at + 1)) {
      sql.replace(at, word.size(), word.substr(0, 5) + table + " ");
      ++replaced;
    }
  }
  if (replaced == 0) throw std::runtime_error("no table etcd in: " + sql);
  return sql;
}

PgStatement on_table(PgStatement statement, const std::string& table) {
  statement.sql = on_table(std::move(statement.sql), table);
  return statement;
}

std::string history_key(int k) { return format("/bench/hist/%07d", k); }

/// The shape of the history and where its revisions fall.
struct History {
  int keys = 0;
  int txns_per_version = 0;      ///< revisions one round of versions of every key takes
  std::int64_t base = 1;         ///< the first revision
  int revisions_per_partition = 0;
  int partitions = 0;            ///< the history's, the INSERT test's and one spare
  std::int64_t insert_base() const { return base + static_cast<std::int64_t>(versions_per_key) * txns_per_version; }
  int partition_of(std::int64_t revision) const { return static_cast<int>((revision - base) / revisions_per_partition); }
};

void create_tables(testing::PgClient& db, const History& h) {
  db.exec("CREATE TABLE prune_rows (LIKE etcd INCLUDING ALL)");
  db.exec("CREATE TABLE prune_parts (LIKE etcd INCLUDING DEFAULTS INCLUDING CONSTRAINTS) PARTITION BY RANGE (revision);"
          "ALTER TABLE prune_parts ADD PRIMARY KEY (key, revision);"
          "CREATE INDEX prune_parts_revision_idx ON prune_parts (revision)");
  for (int p = 0; p < h.partitions; ++p) {
    const auto from = h.base + static_cast<std::int64_t>(p) * h.revisions_per_partition;
    db.exec(format("CREATE TABLE prune_parts_%03d PARTITION OF prune_parts FOR VALUES FROM (%lld) TO (%lld)", p,
                   static_cast<long long>(from), static_cast<long long>(from + h.revisions_per_partition)));
  }
}

/// (g)'s history: version v of key k at base + v * txns_per_version + k / 128.
double fill(testing::PgClient& db, const std::string& table, const History& h, int value_bytes) {
  const auto began = Clock::now();
  db.exec(format("INSERT INTO %s (key, value, revision, create_revision, version, lease) "
                 "SELECT '/bench/hist/' || lpad(k::text, 7, '0'), repeat('v', %d), "
                 "       %lld + v * %d + k / %d, %lld + k / %d, v + 1, 0 "
                 "  FROM generate_series(0, %d) k, generate_series(0, %d) v",
                 table.c_str(), value_bytes, static_cast<long long>(h.base), h.txns_per_version, rows_per_revision,
                 static_cast<long long>(h.base), rows_per_revision, h.keys - 1, versions_per_key - 1));
  return seconds_since(began);
}

/// The mirror's INSERT of `insert_rows` new versions (keys 0.., 128 per revision after the
/// history), `insert_batch` rows per transaction, the statement prepared once on the connection.
asio::awaitable<void> mirror_inserts(PgConnection& pg, std::string table, History h, int value_bytes, double& seconds) {
  co_await pg.connect(5s);
  const std::string value(static_cast<std::size_t>(value_bytes), 'n');
  const auto began = Clock::now();
  for (int first = 0; first < insert_rows; first += insert_batch) {
    std::vector<MirrorRow> rows;
    for (int k = first; k < std::min(insert_rows, first + insert_batch); ++k) {
      const auto revision = h.insert_base() + k / rows_per_revision;
      rows.push_back({history_key(k), value, std::nullopt, revision, false,
                      KeyMeta{h.base + k / rows_per_revision, versions_per_key + 1, 0}});
    }
    std::vector<PgStatement> statements;
    append_row_inserts(rows, statements);
    for (auto& s : statements) s = on_table(std::move(s), table);
    co_await pg.pipeline(std::move(statements));
  }
  seconds = seconds_since(began);
  pg.close();
}

/// One pruning pass over `table` with the pruner's statements (keep_versions = 1, no keep_for),
/// window after window, without its rests.
struct PassFigures {
  double seconds = 0;
  std::int64_t rows = 0;
  std::int64_t windows = 0;
  std::vector<double> window_ms;
};

asio::awaitable<void> prune_pass(PgConnection& pg, std::string table, PassFigures& out) {
  co_await pg.connect(5s);
  const KeepRules rules{1, std::chrono::milliseconds(0)};
  std::int64_t cursor = 0;
  const auto began = Clock::now();
  for (;;) {
    const auto window_began = Clock::now();
    std::vector<PgStatement> window;
    window.push_back(on_table(window_end_statement("/bench/", cursor, Pruner::kWindowRows), table));
    auto end = co_await pg.pipeline(std::move(window));
    if (end.front().is_null(0, 0)) break;
    const std::int64_t window_end = end.front().int64(0, 0);
    std::vector<PgStatement> statements;
    statements.push_back(on_table(prune_superseded_statement("/bench/", cursor, window_end, rules), table));
    statements.push_back(on_table(prune_lone_tombstones_statement("/bench/", cursor, window_end, rules), table));
    auto results = co_await pg.pipeline(std::move(statements));
    out.rows += results[0].affected() + results[1].affected();
    ++out.windows;
    out.window_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - window_began).count());
    cursor = window_end;
  }
  out.seconds = seconds_since(began);
  pg.close();
}

/// etcd_get's lookup (schema/003_helpers.sql: the key's latest row, unless a tombstone) of
/// `lookups` keys spread over the history, in one statement: server time per lookup, in µs.
double lookup_micros(testing::PgClient& db, const std::string& table, const History& h) {
  const auto sql = format(
      "SELECT count(*) FROM generate_series(0, %d) g, LATERAL (SELECT e.revision FROM (SELECT * FROM %s t "
      "  WHERE t.key = '/bench/hist/' || lpad(((g * 7919) %% %d)::text, 7, '0') ORDER BY t.revision DESC LIMIT 1) e "
      "  WHERE NOT e.tombstone) latest",
      lookups - 1, table.c_str(), h.keys);
  db.exec(sql);  // warm: both tables are read from shared buffers or the page cache alike
  const auto began = Clock::now();
  auto found = std::stoll(db.exec(sql)[0][0].value_or("0"));
  const double micros = seconds_since(began) * 1e6 / lookups;
  if (found != lookups) throw std::runtime_error(format("%s: %lld of %d lookups found a row", table.c_str(), found, lookups));
  return micros;
}

/// The same lookup as one statement per key from the client, parsed and planned each time as an
/// application's query is: the median round trip in µs over `n` keys.
double lookup_call_micros(testing::PgClient& db, const std::string& table, const History& h, int n) {
  const auto sql = "SELECT e.revision FROM (SELECT * FROM " + table +
                   " t WHERE t.key = $1 ORDER BY t.revision DESC LIMIT 1) e WHERE NOT e.tombstone";
  std::vector<double> micros;
  for (int i = 0; i < n; ++i) {
    const auto key = history_key(static_cast<int>((static_cast<std::int64_t>(i) * 104729) % h.keys));
    const auto began = Clock::now();
    db.exec_params(sql, {key});
    micros.push_back(seconds_since(began) * 1e6);
  }
  return distribution(micros).p50;
}

/// The buffers one lookup of a key touches (EXPLAIN (ANALYZE, BUFFERS), its top node): "shared hit=N".
std::string lookup_buffers(testing::PgClient& db, const std::string& table) {
  auto plan = db.exec("EXPLAIN (ANALYZE, BUFFERS, TIMING OFF) SELECT e.revision FROM (SELECT * FROM " + table +
                      " t WHERE t.key = '" + history_key(12345) + "' ORDER BY t.revision DESC LIMIT 1) e WHERE NOT e.tombstone");
  for (const auto& row : plan) {
    const auto at = row[0] ? row[0]->find("Buffers: ") : std::string::npos;
    if (at != std::string::npos) return row[0]->substr(at + 9);
  }
  return "?";
}

std::string size_of(testing::PgClient& db, const std::string& table) {
  return db.scalar("SELECT pg_size_pretty(sum(pg_total_relation_size(c.oid))) FROM pg_class c "
                   "WHERE c.oid = '" + table + "'::regclass OR c.oid IN (SELECT inhrelid FROM pg_inherits WHERE "
                   "inhparent = '" + table + "'::regclass)")
      .value_or("?");
}

/// Whether every history key of `table` is left with exactly one row, its newest version.
bool each_key_kept_latest(testing::PgClient& db, const std::string& table, const History& h) {
  auto kept = db.exec("SELECT count(*), count(DISTINCT key), count(*) FILTER (WHERE version = CASE WHEN key < '" +
                      history_key(insert_rows) + "' THEN " + std::to_string(versions_per_key + 1) + " ELSE " +
                      std::to_string(versions_per_key) + " END) FROM " + table +
                      " WHERE starts_with(key, '/bench/hist/')");
  const auto rows = std::stoll(*kept[0][0]), keys = std::stoll(*kept[0][1]), latest = std::stoll(*kept[0][2]);
  detail(format("%s after pruning: %lld rows for %lld keys, %lld of them the key's newest version (%s)", table.c_str(),
                rows, keys, latest, rows == h.keys && keys == h.keys && latest == h.keys ? "correct" : "MISMATCH"));
  return rows == h.keys && keys == h.keys && latest == h.keys;
}

}  // namespace

Outcome run_prune_mechanism(const BenchOptions& options) {
  History h;
  h.keys = std::max(insert_rows, options.prune_rows / versions_per_key);
  h.txns_per_version = (h.keys + rows_per_revision - 1) / rows_per_revision;
  h.revisions_per_partition = (rows_per_partition + rows_per_revision - 1) / rows_per_revision;
  const std::int64_t history_rows = static_cast<std::int64_t>(h.keys) * versions_per_key;
  const auto insert_revisions = (insert_rows + rows_per_revision - 1) / rows_per_revision;
  h.partitions = h.partition_of(h.insert_base() + insert_revisions - 1) + 2;
  std::printf("== (l) prune mechanism: DELETE in batches along an index vs partitions by revision range, %lld history "
              "rows (%d keys x %d versions) ==\n",
              static_cast<long long>(history_rows), h.keys, versions_per_key);
  detail("load average before: " + load_average());
  auto settings = BenchEnv::default_settings(options);
  BenchEnv env(options.out_dir / "prune-mechanism", settings, options);
  env.migrate();  // `etcd`, whose shape both tables copy
  detail("servers: " + env.versions());
  auto& db = env.env.db();
  create_tables(db, h);
  detail(format("prune_rows (LIKE etcd INCLUDING ALL); prune_parts PARTITION BY RANGE (revision): %d partitions of %d "
                "revisions (%d rows of this history each), primary key (key, revision) and an index on revision",
                h.partitions, h.revisions_per_partition, h.revisions_per_partition * rows_per_revision));

  CpuShare cpu(0, env.env.etcd.pid(), env.env.postgres.pid());
  cpu.start();
  const double fill_rows = fill(db, "prune_rows", h, options.value_bytes);
  const double fill_parts = fill(db, "prune_parts", h, options.value_bytes);
  db.exec("VACUUM ANALYZE prune_rows");
  db.exec("VACUUM ANALYZE prune_parts");
  detail(format("history written with one INSERT ... SELECT: prune_rows %.1f s (%s), prune_parts %.1f s (%s); then VACUUM "
                "ANALYZE each",
                fill_rows, size_of(db, "prune_rows").c_str(), fill_parts, size_of(db, "prune_parts").c_str()));
  detail("during the fill: " + cpu.stop());

  // --- what each shape costs the mirror's INSERT and etcd_get ---
  const double get_rows = lookup_micros(db, "prune_rows", h), get_parts = lookup_micros(db, "prune_parts", h);
  const double call_rows = lookup_call_micros(db, "prune_rows", h, 2000);
  const double call_parts = lookup_call_micros(db, "prune_parts", h, 2000);
  detail(format("etcd_get's lookup, %d keys in one statement: prune_rows %.1f us per key, prune_parts %.1f us per key "
                "(%d partitions, each probed: the key does not tell which holds its latest row)",
                lookups, get_rows, get_parts, h.partitions));
  detail("buffers one lookup touches (EXPLAIN ANALYZE): prune_rows " + lookup_buffers(db, "prune_rows") +
         ", prune_parts " + lookup_buffers(db, "prune_parts"));
  detail(format("the same lookup as one statement per key from the client (parse, plan, round trip), median: "
                "prune_rows %.0f us, prune_parts %.0f us",
                call_rows, call_parts));
  Loop loop(env.etcd_endpoint());
  double insert_rows_s = 0, insert_parts_s = 0;
  CpuShare insert_cpu(0, env.env.etcd.pid(), env.env.postgres.pid());
  insert_cpu.start();
  {
    PgConnection pg(loop.io(), env.conninfo(), "bench-insert");
    loop.run(mirror_inserts(pg, "prune_rows", h, options.value_bytes, insert_rows_s));
  }
  {
    PgConnection pg(loop.io(), env.conninfo(), "bench-insert");
    loop.run(mirror_inserts(pg, "prune_parts", h, options.value_bytes, insert_parts_s));
  }
  const auto insert_cpu_line = insert_cpu.stop();
  detail(format("the mirror's INSERT of %d new versions, %d rows per transaction (prepared unnest statement): "
                "prune_rows %.2f s (%.0f rows/s), prune_parts %.2f s (%.0f rows/s)",
                insert_rows, insert_batch, insert_rows_s, insert_rows / insert_rows_s, insert_parts_s,
                insert_rows / insert_parts_s));
  detail("during the INSERTs: " + insert_cpu_line);
  db.exec("ANALYZE prune_rows");
  db.exec("ANALYZE prune_parts");

  // --- partitions: what drops can do ---
  std::vector<std::int64_t> rows_in(static_cast<std::size_t>(h.partitions)), latest_in(rows_in.size());
  for (const auto& r : db.exec(format("SELECT (revision - %lld) / %d, count(*) FROM prune_parts GROUP BY 1",
                                      static_cast<long long>(h.base), h.revisions_per_partition)))
    rows_in[std::stoul(*r[0])] = std::stoll(*r[1]);
  for (const auto& r : db.exec(format("SELECT (latest - %lld) / %d, count(*) FROM (SELECT max(revision) AS latest FROM "
                                      "prune_parts GROUP BY key) l GROUP BY 1",
                                      static_cast<long long>(h.base), h.revisions_per_partition)))
    latest_in[std::stoul(*r[0])] = std::stoll(*r[1]);
  std::int64_t total_rows = 0, total_keys = 0;
  for (std::size_t p = 0; p < rows_in.size(); ++p) {
    total_rows += rows_in[p];
    total_keys += latest_in[p];
  }
  const std::int64_t superseded = total_rows - total_keys;
  int droppable = 0;  // the oldest partitions that hold no key's latest row
  while (droppable < h.partitions && latest_in[static_cast<std::size_t>(droppable)] == 0) ++droppable;
  std::int64_t droppable_rows = 0;
  for (int p = 0; p < droppable; ++p) droppable_rows += rows_in[static_cast<std::size_t>(p)];
  std::string losses;
  std::int64_t cum_rows = 0, cum_lost = 0;
  int last_nonempty = 0;
  for (int p = 0; p < h.partitions; ++p)
    if (rows_in[static_cast<std::size_t>(p)] > 0) last_nonempty = p;
  for (int p = 0; p < last_nonempty; ++p) {
    cum_rows += rows_in[static_cast<std::size_t>(p)];
    cum_lost += latest_in[static_cast<std::size_t>(p)];
    if (p + 1 >= droppable)
      losses += format("%s%d: %lld rows, %lld latest lost", losses.empty() ? "" : "; ", p + 1,
                       static_cast<long long>(cum_rows), static_cast<long long>(cum_lost));
  }
  detail(format("prune_parts: %lld rows of %lld keys, %lld superseded; the latest rows lie in partitions %d..%d",
                static_cast<long long>(total_rows), static_cast<long long>(total_keys),
                static_cast<long long>(superseded), droppable, last_nonempty));
  detail("dropping the oldest N partitions (N: rows dropped, keys' latest rows lost): " + losses);

  CpuShare drop_cpu(0, env.env.etcd.pid(), env.env.postgres.pid());
  drop_cpu.start();
  const auto drop_began = Clock::now();
  for (int p = 0; p < droppable; ++p) db.exec(format("DROP TABLE prune_parts_%03d", p));
  const double drop_seconds = seconds_since(drop_began);
  const auto drop_cpu_line = drop_cpu.stop();
  detail(format("dropped the %d oldest partitions (no latest row in them): %lld rows in %.3f s (%.0f rows/s), space "
                "returned at once; each DROP takes an ACCESS EXCLUSIVE lock on prune_parts (PostgreSQL docs, 5.11.2.2)",
                droppable, static_cast<long long>(droppable_rows), drop_seconds, droppable_rows / std::max(drop_seconds, 1e-6)));
  detail("during the drops: " + drop_cpu_line);

  // --- row-level deletes: the whole pass on prune_rows, the rest on prune_parts ---
  PassFigures pass_rows, pass_parts;
  CpuShare delete_cpu(0, env.env.etcd.pid(), env.env.postgres.pid());
  delete_cpu.start();
  {
    PgConnection pg(loop.io(), env.conninfo(), "bench-prune");
    loop.run(prune_pass(pg, "prune_rows", pass_rows));
  }
  const auto delete_cpu_line = delete_cpu.stop();
  const auto vacuum_began = Clock::now();
  db.exec("VACUUM prune_rows");
  const double vacuum_rows = seconds_since(vacuum_began);
  {
    PgConnection pg(loop.io(), env.conninfo(), "bench-prune");
    loop.run(prune_pass(pg, "prune_parts", pass_parts));
  }
  const auto vacuum_parts_began = Clock::now();
  db.exec("VACUUM prune_parts");
  const double vacuum_parts = seconds_since(vacuum_parts_began);
  const double delete_rate = pass_rows.rows / pass_rows.seconds;
  detail(format("DELETE path, prune_rows: the pruner's statements, %lld windows of %d rows: %lld rows in %.2f s, %.0f "
                "rows/s; a window %s",
                static_cast<long long>(pass_rows.windows), Pruner::kWindowRows, static_cast<long long>(pass_rows.rows),
                pass_rows.seconds, delete_rate, describe_ms(distribution(pass_rows.window_ms)).c_str()));
  detail("during the DELETE pass: " + delete_cpu_line);
  detail(format("then VACUUM prune_rows (the dead rows' space, which autovacuum would reclaim): %.2f s; size now %s",
                vacuum_rows, size_of(db, "prune_rows").c_str()));
  detail(format("partition path, the rows the drops could not take: the same pass over prune_parts: %lld rows in %.2f s "
                "(%.0f rows/s, %lld windows); VACUUM %.2f s; size now %s",
                static_cast<long long>(pass_parts.rows), pass_parts.seconds, pass_parts.rows / pass_parts.seconds,
                static_cast<long long>(pass_parts.windows), vacuum_parts, size_of(db, "prune_parts").c_str()));
  const bool correct = each_key_kept_latest(db, "prune_rows", h) & each_key_kept_latest(db, "prune_parts", h);
  detail("load average after: " + load_average());

  return {"l prune-mechanism",
          format("DELETE along the revision index %.0f rows/s (%lld rows in %.1f s, VACUUM %.1f s); partitions: dropping "
                 "the %d oldest took %lld of the %lld superseded rows in %.2f s without losing a latest row, one more "
                 "loses %lld, the other %lld need the same DELETE (%.1f s); partitioned shape costs INSERT %.2f vs %.2f s "
                 "per %d rows and etcd_get %.1f vs %.1f us (%s)",
                 delete_rate, static_cast<long long>(pass_rows.rows), pass_rows.seconds, vacuum_rows, droppable,
                 static_cast<long long>(droppable_rows), static_cast<long long>(superseded), drop_seconds,
                 static_cast<long long>(droppable < h.partitions ? latest_in[static_cast<std::size_t>(droppable)] : 0),
                 static_cast<long long>(pass_parts.rows), pass_parts.seconds, insert_parts_s, insert_rows_s, insert_rows,
                 get_parts, get_rows, correct ? "both pruned correctly" : "MISMATCH"),
          correct};
}

}  // namespace etcd_sync::bench
