// Reads what the checker judges, once a run has settled: etcd's history by a Watch from revision
// 1 (no compaction happens in the suite, so it is complete), with the outbox's receipts and the
// campaign keys' events from it, the `etcd` table, and `etcd_wal` with the base each row was
// inserted with.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "test/chaos/checker.hpp"
#include "test/chaos/deployment.hpp"

namespace etcd_sync::chaos {

/// etcd's current revision (any member).
std::int64_t etcd_revision(Deployment& deployment);

/// The mirror's checkpoint for the run's prefix, or -1 when there is none (or PostgreSQL does not
/// answer).
std::int64_t mirror_checkpoint(Deployment& deployment);

/// etcd_wal rows still pending, or -1 when PostgreSQL does not answer.
std::int64_t pending_rows(Deployment& deployment);

/// Everything check_run() needs; with `ha`, also etcd's history of the campaign keys into it (the
/// rest of it the caller has gathered). Rows of the etcd table under [ha] election_prefix are read
/// too, for check A to find. Throws when a server does not answer.
CheckInput collect_check_input(Deployment& deployment, const std::string& marker_prefix,
                               std::optional<HaInput> ha = std::nullopt);

}  // namespace etcd_sync::chaos
