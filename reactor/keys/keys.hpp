#pragma once
// etcd key ranges under a prefix, and the prefix as the tables store it. Pure functions.
// (How a key or value goes into PostgreSQL as text or bytes: pg_text.hpp.)

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace etcd_sync {

/// The [key, range_end) that covers every key under `prefix` (etcd's "prefix end": the prefix with
/// its last byte below 0xff incremented and the rest cut; clientv3 GetPrefixRangeEnd). "" and "/"
/// mean the whole keyspace: {"\0", "\0"} as etcdctl sends for `--prefix ""` and --from-key.
struct KeyRange {
  std::string key;
  std::string range_end;
};
KeyRange prefix_range(std::string_view prefix);

/// Keys to ask for in the first page of a paginated Range (limit), before value sizes are known.
inline constexpr std::int64_t kRangeFirstPageKeys = 1000;
/// The limit for the next page of a paginated Range: about 8 MiB of keys and values at the previous
/// page's average bytes per key (`previous_page_bytes` / `previous_page_keys`), between 1 and
/// 50,000 keys. etcd 3.4 walks its in-memory index from the page's first key to range_end on every
/// Range whatever the limit (mvcc/kvstore_txn.go rangeKeys: kvindex.Revisions(key, end, rev), then
/// the limit), so a walk costs pages x keys: few large pages, memory still bounded by bytes.
std::int64_t next_range_page_limit(std::size_t previous_page_bytes, int previous_page_keys);

/// True when `key` is under `prefix` ("" and "/" hold every key).
bool key_in_prefix(std::string_view key, std::string_view prefix);

/// The prefix as stored in etcd_sync_checkpoint and used in SQL filters: "" for the whole keyspace.
std::string effective_prefix(std::string_view prefix);

}  // namespace etcd_sync
