#include "perf/etcd_load.hpp"
#include "reactor/keys/keys.hpp"
#include "reactor/loop/wakeup.hpp"

namespace etcd_sync::bench {

namespace {

using namespace std::chrono_literals;

asio::awaitable<void> load_worker(EtcdClient& etcd, TxnLoad& load) {
  etcdserverpb::TxnRequest txn;
  while (load.next < load.total && Clock::now() < load.deadline) {
    const int first = load.next;
    const int count = std::min(puts_per_txn, load.total - first);
    load.next += count;
    txn.clear_success();
    for (int k = 0; k < count; ++k) {
      auto* put = txn.add_success()->mutable_request_put();
      put->set_key(load.key(first + k));
      put->set_value(load.value);
    }
    auto response = co_await etcd.txn(txn);
    load.revisions[static_cast<std::size_t>(first / puts_per_txn)] = response.header().revision();
    load.loaded += count;
  }
}

}  // namespace

asio::awaitable<void> load_etcd(Loop& loop, TxnLoad& load, int concurrency) {
  load.revisions.assign(static_cast<std::size_t>((load.total + puts_per_txn - 1) / puts_per_txn), 0);
  Wakeup done(loop.io());
  for (int i = 0; i < concurrency; ++i) {
    ++load.running;
    asio::co_spawn(loop.io(), load_worker(loop.etcd(), load), [&load, &done](std::exception_ptr e) {
      if (e && !load.failure) load.failure = e;
      --load.running;
      done.notify();
    });
  }
  while (load.running > 0) co_await done.wait(1s);
  if (load.failure) std::rethrow_exception(load.failure);
}

std::vector<std::string> twin_copy_rows(const TxnLoad& load) {
  std::vector<std::string> chunks(1);
  for (int i = 0; i < load.total; ++i) {
    const auto revision = std::to_string(load.revisions[static_cast<std::size_t>(i / puts_per_txn)]);
    auto& chunk = chunks.back();
    chunk += load.key(i);
    chunk += '\t';
    chunk += load.value;
    chunk += '\t' + revision + '\t' + revision + "\t1\t0\n";  // revision, create_revision, version, lease
    if (chunk.size() >= (1 << 20)) chunks.emplace_back();
  }
  return chunks;
}

asio::awaitable<void> copy_into_twin(PgConnection& pg, std::string twin, const std::vector<std::string>& chunks,
                                     CopyFigures& out) {
  co_await pg.connect(5s);
  std::string create = "CREATE TABLE " + twin + " (LIKE etcd INCLUDING ALL)";
  co_await pg.execute_script(std::move(create));
  const auto began = Clock::now();
  std::string copy = "COPY " + twin + " (key, value, revision, create_revision, version, lease) FROM STDIN";
  co_await pg.copy_start(std::move(copy));
  for (const auto& chunk : chunks) co_await pg.copy_data(chunk);
  auto result = co_await pg.copy_end();
  out.seconds = seconds_since(began);
  out.rows = result.affected();
}

CopyFigures time_twin_copy(Loop& loop, BenchEnv& env, const TxnLoad& load, pid_t service_pid) {
  const auto chunks = twin_copy_rows(load);
  CopyFigures copy;
  PgConnection pg(loop.io(), env.conninfo(), "bench");
  CpuShare cpu(service_pid, env.env.etcd.pid(), env.env.postgres.pid());
  cpu.start();
  loop.run(copy_into_twin(pg, "etcd_copy_twin", chunks, copy));
  const auto cpu_line = cpu.stop();  // before the session ends: its backend's CPU is counted
  pg.close();
  const double rate = copy.rows / copy.seconds;
  detail(format("reference: COPY of the same %lld rows into etcd_copy_twin (LIKE etcd INCLUDING ALL): %.2f s, %.0f rows/s",
                static_cast<long long>(copy.rows), copy.seconds, rate));
  detail("during the COPY: " + cpu_line);
  env.env.db().exec("DROP TABLE etcd_copy_twin");
  return copy;
}

asio::awaitable<void> range_read(EtcdClient& etcd, std::string prefix, RangeFigures& out) {
  auto range = prefix_range(prefix);
  etcdserverpb::RangeRequest request;
  request.set_key(range.key);
  request.set_range_end(range.range_end);
  request.set_limit(kRangeFirstPageKeys);
  const auto began = Clock::now();
  for (;;) {
    request.set_revision(out.revision);  // 0 for the first page: etcd's current revision, then pinned
    auto page = co_await etcd.range(request);
    if (out.revision == 0) out.revision = page.header().revision();
    ++out.pages;
    for (const auto& kv : page.kvs()) out.bytes += static_cast<std::int64_t>(kv.key().size() + kv.value().size());
    out.keys += page.kvs_size();
    if (!page.more() || page.kvs().empty()) break;
    request.set_limit(next_range_page_limit(page.ByteSizeLong(), page.kvs_size()));
    request.set_key(page.kvs(page.kvs_size() - 1).key() + '\0');
  }
  out.seconds = seconds_since(began);
}

}  // namespace etcd_sync::bench
