// EtcdClient and WatchStream against a real etcd (3.4 or 3.5): KV calls, pagination, transactions, watches
// (including a compacted start revision), dial failures and recovery after a restart.
#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "adapters/etcd_client.hpp"
#include "adapters/etcd_watch.hpp"
#include "adapters/grpc_bridge.hpp"
#include "reactor/keys/keys.hpp"
#include "test/support/run_coroutine.hpp"
#include "test/support/server_programs.hpp"
#include "test/support/servers.hpp"

namespace etcd_sync::testing {
namespace {

using namespace std::chrono_literals;
using std::chrono::milliseconds;
using etcdserverpb::WatchResponse;

constexpr milliseconds kDeadline = 20s;

etcdserverpb::PutRequest put_request(const std::string& key, const std::string& value) {
  etcdserverpb::PutRequest request;
  request.set_key(key);
  request.set_value(value);
  return request;
}

etcdserverpb::RangeRequest get_request(const std::string& key) {
  etcdserverpb::RangeRequest request;
  request.set_key(key);
  return request;
}

etcdserverpb::WatchCreateRequest watch_prefix(const std::string& prefix, std::int64_t start_revision = 0) {
  const auto range = prefix_range(prefix);
  etcdserverpb::WatchCreateRequest create;
  create.set_key(range.key);
  create.set_range_end(range.range_end);
  create.set_start_revision(start_revision);
  return create;
}

/// Reads `stream` until a response satisfies `match`; nullopt when the stream ends first or
/// `timeout` passes (the stream is then cancelled, so the pending read returns).
asio::awaitable<std::optional<WatchResponse>> read_until(WatchStream& stream,
                                                         std::function<bool(const WatchResponse&)> match,
                                                         milliseconds timeout) {
  asio::steady_timer timer(co_await asio::this_coro::executor, timeout);
  timer.async_wait([&stream](boost::system::error_code ec) {
    if (!ec) stream.cancel();
  });
  std::optional<WatchResponse> found;
  while (auto response = co_await stream.read()) {
    if (match(*response)) {
      found = std::move(response);
      break;
    }
  }
  timer.cancel();
  co_return found;
}

/// Ends a watch stream the way the service does: cancel, then Finish for the status.
asio::awaitable<SyncError> close_watch(WatchStream& stream) {
  stream.cancel();
  co_return co_await stream.finish();
}

class EtcdAdapterTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    temp_dir_ = std::make_unique<TempDir>();
    etcd_ = std::make_unique<EtcdServer>(temp_dir_->path());
    etcd_->start();
  }

  static void TearDownTestSuite() {
    etcd_.reset();
    temp_dir_.reset();
  }

  void SetUp() override {
    ASSERT_TRUE(etcd_ && etcd_->is_running()) << "etcd did not start";
    bridge_ = std::make_unique<GrpcBridge>(io_);
    EtcdClientOptions options;
    options.endpoints = {etcd_->endpoint()};
    options.request_timeout = 5s;
    client_ = std::make_unique<EtcdClient>(*bridge_, options);
    prefix_ = std::string("/it/") + ::testing::UnitTest::GetInstance()->current_test_info()->name() + "/";
  }

  /// Runs a test coroutine; on a hang cancels every gRPC call of `client` (default: client_).
  template <class Make>
  void run(Make&& make, EtcdClient* client = nullptr) {
    EtcdClient* target = client ? client : client_.get();
    run_coroutine(io_, std::forward<Make>(make), kDeadline, [target] { target->cancel_all(); });
  }

  static inline std::unique_ptr<TempDir> temp_dir_;
  static inline std::unique_ptr<EtcdServer> etcd_;
  // Destroyed in reverse: the client, then the bridge (joins its thread), then the loop.
  asio::io_context io_;
  std::unique_ptr<GrpcBridge> bridge_;
  std::unique_ptr<EtcdClient> client_;
  std::string prefix_;  // keys of this test live under it
};

TEST_F(EtcdAdapterTest, PutThenRangeReturnsValueAndRevisions) {
  const std::string key = prefix_ + "a";
  const std::string value("bin\x00\xff value", 11);
  run([&]() -> asio::awaitable<void> {
    co_await client_->connect();
    auto first = co_await client_->put(put_request(key, value));
    const auto put_revision = first.header().revision();
    EXPECT_GT(put_revision, 0);

    auto got = co_await client_->range(get_request(key));
    EXPECT_EQ(got.header().revision(), put_revision);
    EXPECT_EQ(got.count(), 1);
    EXPECT_FALSE(got.more());
    EXPECT_EQ(got.kvs_size(), 1);
    if (got.kvs_size() == 1) {
      EXPECT_EQ(got.kvs(0).key(), key);
      EXPECT_EQ(got.kvs(0).value(), value);
      EXPECT_EQ(got.kvs(0).mod_revision(), put_revision);
      EXPECT_EQ(got.kvs(0).create_revision(), put_revision);
      EXPECT_EQ(got.kvs(0).version(), 1);
    }

    auto second = co_await client_->put(put_request(key, "v2"));
    EXPECT_EQ(second.header().revision(), put_revision + 1);
    auto again = co_await client_->range(get_request(key));
    EXPECT_EQ(again.kvs_size(), 1);
    if (again.kvs_size() == 1) {
      EXPECT_EQ(again.kvs(0).value(), "v2");
      EXPECT_EQ(again.kvs(0).mod_revision(), put_revision + 1);
      EXPECT_EQ(again.kvs(0).create_revision(), put_revision);
      EXPECT_EQ(again.kvs(0).version(), 2);
    }

    auto missing = co_await client_->range(get_request(prefix_ + "missing"));
    EXPECT_EQ(missing.kvs_size(), 0);
    EXPECT_EQ(missing.count(), 0);

    auto status = co_await client_->status();
    EXPECT_EQ(status.version(), etcd_version()) << "the etcd the harness started";
    EXPECT_EQ(status.header().revision(), put_revision + 1);
  });
  EXPECT_EQ(client_->current_endpoint(), etcd_->endpoint());
}

TEST_F(EtcdAdapterTest, RangePaginatesInKeyOrderAtOneRevision) {
  std::vector<std::string> expected;
  for (int i = 0; i < 25; ++i) expected.push_back(prefix_ + "k" + (i < 10 ? "0" : "") + std::to_string(i));
  std::vector<std::string> keys;
  std::vector<int> page_sizes;
  std::vector<bool> more_flags;
  std::vector<std::int64_t> counts, header_revisions;
  run([&]() -> asio::awaitable<void> {
    co_await client_->connect();
    for (auto it = expected.rbegin(); it != expected.rend(); ++it)  // put out of order
      co_await client_->put(put_request(*it, "value of " + *it));

    const auto range = prefix_range(prefix_);
    etcdserverpb::RangeRequest page;
    page.set_key(range.key);
    page.set_range_end(range.range_end);
    page.set_limit(10);
    for (int n = 0; n < 10; ++n) {  // bounded: a pagination bug must not loop forever
      auto response = co_await client_->range(page);
      if (n == 0) {
        page.set_revision(response.header().revision());  // pin every later page to this snapshot
        // Written after the snapshot: must not show up on later pages.
        co_await client_->put(put_request(prefix_ + "k99-late", "late"));
      }
      page_sizes.push_back(response.kvs_size());
      more_flags.push_back(response.more());
      counts.push_back(response.count());
      header_revisions.push_back(response.header().revision());
      for (const auto& kv : response.kvs()) {
        keys.push_back(kv.key());
        EXPECT_EQ(kv.value(), "value of " + kv.key());
      }
      if (!response.more() || response.kvs_size() == 0) break;
      page.set_key(response.kvs(response.kvs_size() - 1).key() + '\0');  // just after the last key
    }
  });
  EXPECT_EQ(keys, expected);
  EXPECT_EQ(page_sizes, (std::vector<int>{10, 10, 5}));
  EXPECT_EQ(more_flags, (std::vector<bool>{true, true, false}));
  // count is the number of keys in [key, range_end) at the revision, from the page's start key.
  EXPECT_EQ(counts, (std::vector<std::int64_t>{25, 15, 5}));
  ASSERT_EQ(header_revisions.size(), 3u);
  // The header reports the store's current revision, one past the pinned snapshot after "late".
  EXPECT_EQ(header_revisions[1], header_revisions[0] + 1);
  EXPECT_EQ(header_revisions[2], header_revisions[0] + 1);
}

TEST_F(EtcdAdapterTest, TxnWithFailedCompareRunsTheFailureBranch) {
  const std::string key = prefix_ + "guarded";
  std::int64_t revision = 0;
  etcdserverpb::TxnResponse failed, succeeded;
  std::string value_after_failed;
  run([&]() -> asio::awaitable<void> {
    co_await client_->connect();
    revision = (co_await client_->put(put_request(key, "original"))).header().revision();

    const auto conditional_put = [&](std::int64_t expected_revision) {
      etcdserverpb::TxnRequest txn;
      auto* compare = txn.add_compare();
      compare->set_key(key);
      compare->set_target(etcdserverpb::Compare::MOD);
      compare->set_result(etcdserverpb::Compare::EQUAL);
      compare->set_mod_revision(expected_revision);
      *txn.add_success()->mutable_request_put() = put_request(key, "replaced");
      *txn.add_failure()->mutable_request_range() = get_request(key);
      return txn;
    };
    failed = co_await client_->txn(conditional_put(revision - 1));
    auto after_failed = co_await client_->range(get_request(key));
    if (after_failed.kvs_size() == 1) value_after_failed = after_failed.kvs(0).value();
    succeeded = co_await client_->txn(conditional_put(revision));
  });
  EXPECT_FALSE(failed.succeeded());
  EXPECT_EQ(failed.header().revision(), revision);  // nothing was written
  ASSERT_EQ(failed.responses_size(), 1);
  ASSERT_TRUE(failed.responses(0).has_response_range());
  const auto& current = failed.responses(0).response_range();
  ASSERT_EQ(current.kvs_size(), 1);
  EXPECT_EQ(current.kvs(0).value(), "original");
  EXPECT_EQ(current.kvs(0).mod_revision(), revision);
  EXPECT_EQ(value_after_failed, "original");

  EXPECT_TRUE(succeeded.succeeded());
  EXPECT_EQ(succeeded.header().revision(), revision + 1);
  ASSERT_EQ(succeeded.responses_size(), 1);
  EXPECT_TRUE(succeeded.responses(0).has_response_put());
}

TEST_F(EtcdAdapterTest, WatchSeesPutAndDelete) {
  const std::string key = prefix_ + "watched";
  std::optional<WatchResponse> created, put_event, delete_event;
  std::int64_t put_revision = 0, delete_revision = 0;
  std::optional<SyncError> end;
  run([&]() -> asio::awaitable<void> {
    co_await client_->connect();
    auto stream = client_->open_watch();
    co_await stream->start(watch_prefix(prefix_));
    // Until the server confirms the watch, a put might precede it and not be seen.
    created = co_await read_until(*stream, [](const WatchResponse& r) { return r.created(); }, 5s);
    put_revision = (co_await client_->put(put_request(key, "hello"))).header().revision();
    put_event = co_await read_until(*stream, [](const WatchResponse& r) { return r.events_size() > 0; }, 5s);
    etcdserverpb::DeleteRangeRequest erase;
    erase.set_key(key);
    delete_revision = (co_await client_->delete_range(erase)).header().revision();
    delete_event = co_await read_until(*stream, [](const WatchResponse& r) { return r.events_size() > 0; }, 5s);
    end = co_await close_watch(*stream);
  });
  ASSERT_TRUE(created.has_value()) << "no created response";
  EXPECT_FALSE(created->canceled());

  ASSERT_TRUE(put_event.has_value()) << "no event for the put";
  EXPECT_EQ(put_event->watch_id(), created->watch_id());
  ASSERT_EQ(put_event->events_size(), 1);
  const auto& put = put_event->events(0);
  EXPECT_EQ(put.type(), mvccpb::Event::PUT);
  EXPECT_EQ(put.kv().key(), key);
  EXPECT_EQ(put.kv().value(), "hello");
  EXPECT_EQ(put.kv().mod_revision(), put_revision);
  EXPECT_EQ(put_event->header().revision(), put_revision);

  ASSERT_TRUE(delete_event.has_value()) << "no event for the delete";
  ASSERT_EQ(delete_event->events_size(), 1);
  EXPECT_EQ(delete_event->events(0).type(), mvccpb::Event::DELETE);
  EXPECT_EQ(delete_event->events(0).kv().key(), key);
  EXPECT_EQ(delete_event->events(0).kv().mod_revision(), delete_revision);

  ASSERT_TRUE(end.has_value());
  EXPECT_EQ(end->kind(), ErrorKind::cancelled) << end->what();
}

TEST_F(EtcdAdapterTest, WatchFromCompactedRevisionReportsCompactRevision) {
  const std::string key = prefix_ + "churn";
  std::vector<std::int64_t> revisions;
  std::optional<WatchResponse> compacted;
  std::optional<SyncError> old_range_error, end;
  run([&]() -> asio::awaitable<void> {
    co_await client_->connect();
    for (int i = 0; i < 5; ++i)
      revisions.push_back((co_await client_->put(put_request(key, "v" + std::to_string(i)))).header().revision());
    etcdserverpb::CompactionRequest compact;
    compact.set_revision(revisions[3]);
    compact.set_physical(true);
    co_await client_->compact(compact);

    // A Range below the compaction is refused as "compacted", not as a plain failure.
    auto old = get_request(key);
    old.set_revision(revisions[0]);
    old_range_error = co_await capture_error(client_->range(old));

    auto stream = client_->open_watch();
    co_await stream->start(watch_prefix(prefix_, revisions[0]));
    compacted = co_await read_until(*stream, [](const WatchResponse& r) { return r.compact_revision() > 0; }, 5s);
    end = co_await close_watch(*stream);
  });
  ASSERT_EQ(revisions.size(), 5u);
  ASSERT_TRUE(old_range_error.has_value()) << "a Range at a compacted revision succeeded";
  EXPECT_EQ(old_range_error->kind(), ErrorKind::compacted) << old_range_error->what();
  ASSERT_TRUE(compacted.has_value()) << "no response with compact_revision";
  EXPECT_EQ(compacted->compact_revision(), revisions[3]);
  EXPECT_TRUE(compacted->canceled());
  EXPECT_EQ(compacted->events_size(), 0);
  ASSERT_TRUE(end.has_value());
}

TEST_F(EtcdAdapterTest, ConnectToClosedPortFailsWithinDialTimeout) {
  const int port = free_loopback_port();
  const std::string endpoint = "127.0.0.1:" + std::to_string(port);
  EtcdClientOptions options;
  options.endpoints = {endpoint};
  options.dial_timeout = 500ms;
  options.request_timeout = 2s;
  EtcdClient dead(*bridge_, options);
  std::optional<SyncError> connect_error, put_error, watch_error;
  const auto started = std::chrono::steady_clock::now();
  std::chrono::steady_clock::duration connect_took{};
  run(
      [&]() -> asio::awaitable<void> {
        connect_error = co_await capture_error(dead.connect());
        connect_took = std::chrono::steady_clock::now() - started;
        put_error = co_await capture_error(dead.put(put_request("/x", "y")));
        auto stream = dead.open_watch();
        watch_error = co_await capture_error(stream->start(watch_prefix("/x")));
      },
      &dead);
  EXPECT_GE(connect_took, 450ms);
  EXPECT_LT(connect_took, 2s);
  ASSERT_TRUE(connect_error.has_value()) << "connect to a closed port succeeded";
  EXPECT_EQ(connect_error->kind(), ErrorKind::transient) << connect_error->what();
  EXPECT_EQ(connect_error->peer(), Peer::etcd);
  EXPECT_NE(std::string(connect_error->what()).find(endpoint), std::string::npos) << connect_error->what();
  EXPECT_NE(std::string(connect_error->what()).find("500 ms"), std::string::npos) << connect_error->what();
  ASSERT_TRUE(put_error.has_value()) << "a Put to a closed port succeeded";
  EXPECT_EQ(put_error->kind(), ErrorKind::transient) << put_error->what();
  EXPECT_NE(std::string(put_error->what()).find(endpoint), std::string::npos) << put_error->what();
  ASSERT_TRUE(watch_error.has_value()) << "a watch on a closed port started";
  EXPECT_EQ(watch_error->kind(), ErrorKind::transient) << watch_error->what();
}

TEST_F(EtcdAdapterTest, RecoversAfterServerRestart) {
  const std::string key = prefix_ + "durable";
  std::unique_ptr<WatchStream> stream;
  std::optional<WatchResponse> created;
  run([&]() -> asio::awaitable<void> {
    co_await client_->connect();
    co_await client_->put(put_request(key, "before"));
    stream = client_->open_watch();
    co_await stream->start(watch_prefix(prefix_));
    created = co_await read_until(*stream, [](const WatchResponse& r) { return r.created(); }, 5s);
  });
  ASSERT_TRUE(created.has_value());

  etcd_->restart();

  std::optional<WatchResponse> after_restart;
  std::optional<SyncError> watch_end;
  std::vector<SyncError> failures;
  bool recovered = false;
  std::string value;
  run([&]() -> asio::awaitable<void> {
    // The old watch stream ends and says why; the mirror would resync from here.
    after_restart = co_await read_until(*stream, [](const WatchResponse&) { return true; }, 10s);
    watch_end = co_await stream->finish();
    // Unary calls: transient failures until the channel reconnects, then success.
    asio::steady_timer poll(co_await asio::this_coro::executor);
    const auto give_up = std::chrono::steady_clock::now() + 15s;
    while (!recovered && std::chrono::steady_clock::now() < give_up) {
      auto error = co_await capture_error(client_->put(put_request(key, "after")));
      if (!error) {
        recovered = true;
        break;
      }
      failures.push_back(*error);
      poll.expires_after(50ms);  // poll interval of the retry loop
      co_await poll.async_wait(asio::use_awaitable);
    }
    if (recovered) {
      auto got = co_await client_->range(get_request(key));
      if (got.kvs_size() == 1) value = got.kvs(0).value();
    }
  });
  EXPECT_FALSE(after_restart.has_value()) << "the watch stream survived a server restart";
  ASSERT_TRUE(watch_end.has_value());
  EXPECT_EQ(watch_end->kind(), ErrorKind::transient) << watch_end->what();
  EXPECT_TRUE(recovered) << failures.size() << " failures, last: "
                         << (failures.empty() ? "" : failures.back().what());
  for (const auto& failure : failures) EXPECT_EQ(failure.kind(), ErrorKind::transient) << failure.what();
  EXPECT_EQ(value, "after");
  stream.reset();
}

}  // namespace
}  // namespace etcd_sync::testing
