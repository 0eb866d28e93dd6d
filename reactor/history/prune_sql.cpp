#include "reactor/history/prune_sql.hpp"

namespace etcd_sync {

namespace {
const char* const kProtected =
    "EXISTS (SELECT 1 FROM etcd_wal p WHERE p.status = 'pending' AND p.key = e.key AND p.revision = e.revision)";
}  // namespace

PgStatement window_end_statement(const std::string& prefix, std::int64_t cursor, int window) {
  return {"SELECT max(revision) FROM (SELECT revision FROM etcd WHERE revision > $2::bigint "
          "  AND ($1 = '' OR starts_with(key, $1)) ORDER BY revision LIMIT $3::int) w",
          {PgParam::text(prefix), PgParam::int64(cursor), PgParam::int64(window)},
          true};
}

PgStatement prune_superseded_statement(const std::string& prefix, std::int64_t cursor, std::int64_t window_end,
                                       const KeepRules& rules) {
  return {std::string("DELETE FROM etcd e WHERE e.revision > $2::bigint AND e.revision <= $3::bigint "
                      "  AND ($1 = '' OR starts_with(e.key, $1)) "
                      "  AND ((($4::int > 0) AND (SELECT count(*) FROM (SELECT 1 FROM etcd n WHERE n.key = e.key "
                      "          AND n.revision > e.revision LIMIT $4::int) newer) >= $4::int) "
                      "    OR (($5::bigint > 0) AND e.ts < now() - $5::bigint * interval '1 millisecond' "
                      "        AND EXISTS (SELECT 1 FROM etcd n WHERE n.key = e.key AND n.revision > e.revision))) "
                      "  AND NOT ") + kProtected,
          {PgParam::text(prefix), PgParam::int64(cursor), PgParam::int64(window_end),
           PgParam::int64(rules.keep_versions), PgParam::int64(rules.keep_for.count())},
          true};
}

PgStatement prune_lone_tombstones_statement(const std::string& prefix, std::int64_t cursor, std::int64_t window_end,
                                            const KeepRules& rules) {
  return {std::string("DELETE FROM etcd e WHERE e.revision > $2::bigint AND e.revision <= $3::bigint "
                      "  AND ($1 = '' OR starts_with(e.key, $1)) AND e.tombstone "
                      "  AND $4::bigint > 0 AND e.ts < now() - $4::bigint * interval '1 millisecond' "
                      "  AND NOT EXISTS (SELECT 1 FROM etcd o WHERE o.key = e.key AND o.revision <> e.revision) "
                      "  AND NOT ") + kProtected,
          {PgParam::text(prefix), PgParam::int64(cursor), PgParam::int64(window_end),
           PgParam::int64(rules.keep_for.count())},
          true};
}

}  // namespace etcd_sync
