// A three-member etcd cluster from test/support: it forms, serves, loses its leader, elects a new
// one and takes the lost member back.
#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <set>
#include <string>

#include "test/support/servers.hpp"

namespace etcd_sync::testing {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using std::chrono::steady_clock;

/// The value of `key` as `member` holds it locally (a serializable read: no quorum needed, so a
/// member that has not caught up shows its stale copy).
std::string local_value(EtcdServer& member, const std::string& key) {
  try {
    return member.etcdctl({"get", "--consistency=s", "--print-value-only", key});
  } catch (const std::exception&) {
    return "<unreachable>";
  }
}

TEST(EtcdClusterTest, ElectsANewLeaderAndTakesTheKilledMemberBack) {
  TempDir dir;
  EtcdCluster cluster(dir.path(), 3);
  cluster.start();
  ASSERT_EQ(cluster.size(), 3u);
  const auto endpoints = cluster.endpoints();
  EXPECT_EQ(std::set<std::string>(endpoints.begin(), endpoints.end()).size(), 3u) << "distinct endpoints";

  cluster.etcdctl({"put", "/cluster/a", "one"});
  for (std::size_t i = 0; i < cluster.size(); ++i) {
    EXPECT_EQ(cluster.member(i).etcdctl({"get", "--print-value-only", "/cluster/a"}), "one\n") << "member " << i;
  }

  const std::size_t old_leader = cluster.wait_for_leader(seconds(10));
  const std::string old_endpoint = cluster.member(old_leader).endpoint();
  cluster.member(old_leader).kill9();
  EXPECT_FALSE(cluster.member(old_leader).is_running());
  const auto killed_at = steady_clock::now();
  const std::size_t new_leader = cluster.wait_for_leader(seconds(10));
  const auto election = std::chrono::duration_cast<milliseconds>(steady_clock::now() - killed_at);
  EXPECT_NE(new_leader, old_leader);
  EXPECT_LT(election, seconds(5)) << "a new leader took " << election.count() << " ms";

  // The two survivors have quorum; the cluster-wide etcdctl skips the dead endpoint.
  cluster.etcdctl({"put", "/cluster/b", "while-down"});

  cluster.member(old_leader).start();
  EXPECT_EQ(cluster.member(old_leader).endpoint(), old_endpoint) << "same ports after a restart";
  EXPECT_TRUE(wait_until([&] { return local_value(cluster.member(old_leader), "/cluster/b") == "while-down\n"; },
                         seconds(10)))
      << "the restarted member did not catch up: " << local_value(cluster.member(old_leader), "/cluster/b");
  EXPECT_EQ(local_value(cluster.member(old_leader), "/cluster/a"), "one\n");
  EXPECT_NO_THROW(cluster.wait_for_leader(seconds(10)));

  // A graceful restart of one member keeps it too.
  const std::size_t other = (old_leader + 1) % cluster.size();
  cluster.member(other).restart();
  cluster.etcdctl({"put", "/cluster/c", "after-restart"});
  EXPECT_TRUE(wait_until([&] { return local_value(cluster.member(other), "/cluster/c") == "after-restart\n"; },
                         seconds(10)));
}

TEST(EtcdClusterTest, StopsAndStartsAsAWhole) {
  TempDir dir;
  EtcdCluster cluster(dir.path(), 3);
  cluster.start();
  cluster.etcdctl({"put", "/cluster/durable", "kept"});
  cluster.stop();
  for (std::size_t i = 0; i < cluster.size(); ++i) EXPECT_FALSE(cluster.member(i).is_running());
  cluster.start();  // no member alone has quorum: all launch before any is awaited
  EXPECT_EQ(cluster.etcdctl({"get", "--print-value-only", "/cluster/durable"}), "kept\n");
}

TEST(EtcdClusterTest, SingleMemberClusterLeadsItself) {
  TempDir dir;
  EtcdCluster cluster(dir.path(), 1);
  cluster.start();
  EXPECT_EQ(cluster.wait_for_leader(seconds(5)), 0u);
  cluster.member(0).kill9();
  EXPECT_EQ(cluster.leader_index(), std::nullopt) << "no member answers";
  cluster.member(0).start();
  EXPECT_EQ(cluster.wait_for_leader(seconds(5)), 0u);
}

}  // namespace
}  // namespace etcd_sync::testing
