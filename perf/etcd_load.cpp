#include "perf/etcd_load.hpp"
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

}  // namespace etcd_sync::bench
