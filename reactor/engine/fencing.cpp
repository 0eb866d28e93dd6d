#include "reactor/engine/fencing.hpp"

namespace etcd_sync {

PgStatement fence_statement(const LeaderTerm& term) {
  return {"SELECT etcd_sync_fence($1, $2::bigint)", {PgParam::text(term.prefix), PgParam::int64(term.epoch)}, true};
}

void Fencing::append(std::vector<PgStatement>& statements) const {
  if (term) statements.push_back(fence_statement(*term));
}

bool Fencing::fenced(const SyncError& error) const {
  if (error.kind() != ErrorKind::fenced) return false;
  if (on_fenced) on_fenced(error);
  return true;
}

}  // namespace etcd_sync
