// A silent etcd member is left behind: etcd-sync talks to one member of a three-member cluster,
// that member is frozen (SIGSTOP: its sockets stay open, its streams just go quiet) while the
// other two keep quorum, and both directions carry on through the others within seconds.
//
// A frozen member, unlike a stopped one, sends no RST or GOAWAY: only etcd-sync's own deadlines
// (on calls, on a silent Watch or keep-alive stream) can tell it from a slow one.

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <iostream>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "test/support/config_edit.hpp"
#include "test/support/frozen.hpp"
#include "test/support/log_lines.hpp"
#include "test/support/sync_fixture.hpp"

namespace etcd_sync::testing {
namespace {

using namespace std::chrono_literals;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

milliseconds since(steady_clock::time_point start) {
  return std::chrono::duration_cast<milliseconds>(steady_clock::now() - start);
}

/// A put through `client` retried on a transient error for up to 10 s, as an application would: a
/// put that reaches a follower while the leader is lost is refused ("no leader") until the
/// election ends, or abandoned when the new term starts. The revision of the attempt that
/// answered; throws the last error when none did.
std::int64_t put_retrying(EtcdTestClient& client, const std::string& key, const std::string& value) {
  std::int64_t revision = 0;
  std::optional<SyncError> last;
  const bool put = wait_until(
      [&] {
        try {
          revision = client.put(key, value);
          return true;
        } catch (const SyncError& error) {
          if (!error.transient()) throw;
          last = error;
          return false;
        }
      },
      10s, 50ms);
  if (!put && last) throw *last;
  return revision;
}

class HungMemberTest : public SyncSuite {
 protected:
  /// etcd-sync lists member0, member1, member2 and talks to member0, the first that answers (its
  /// log says so, and that no client skipped it). member0 is frozen, as etcd's raft leader when `member0_leads` (the others then
  /// elect a new one first) or as a follower. A put made through the other members is mirrored
  /// into the `etcd` table within 5 s of its answer, and an etcd_wal row inserted at the freeze
  /// reaches etcd within 5 s of its insert: the mirror's Watch, the outbox's calls and the
  /// elector's keep-alive all leave the silent member. etcd's request_timeout is 2 s (as in the HA
  /// tests): a call to the frozen member may take that long before the client moves on. Prints the
  /// measured times.
  void freeze_the_member_in_use(bool member0_leads, const std::string& prefix) {
    constexpr milliseconds kDeadline = 5s;
    const std::string name = member0_leads ? "hung-leader" : "hung-follower";  // files of its own
    EtcdCluster cluster(env_->dir.path(), 3, name + "-etcd");
    cluster.start();
    const auto endpoints = cluster.endpoints();
    // The leadership is placed before etcd-sync starts: a leader change later would be an event of
    // its own for etcd-sync's clients.
    if (member0_leads) {
      cluster.move_leader_to(0);
    } else if (cluster.wait_for_leader(10s) == 0) {
      cluster.move_leader_to(1);
    }
    auto settings = settings_for(prefix);
    settings.request_timeout = "2s";
    auto path = env_->write_config(settings, name + ".toml");
    replace_in_file(path, "endpoints = [\"" + env_->etcd.endpoint() + "\"]",
                    "endpoints = [\"" + endpoints[0] + "\", \"" + endpoints[1] + "\", \"" + endpoints[2] + "\"]");
    // Each of etcd-sync's clients (startup, elector, term) takes the first endpoint whose channel
    // is READY when it looks, so one may skip member0 if member1 finished its handshake first (it
    // then logs "etcd endpoint does not answer; using another"). The test needs every client on
    // member0: a start where one skipped it is started again (3 starts at most).
    ServiceProcess service(env_->dir.path(), name);
    EtcdTestClient others(std::vector<std::string>{endpoints[1], endpoints[2]});
    bool all_on_member0 = false;
    for (int start = 1; start <= 3 && !all_on_member0; ++start) {
      if (service.running()) {
        ASSERT_EQ(service.terminate(5s), 0);
      }
      env_->start_service(service, path);
      // Every engine works once before the freeze, so every client has chosen its member.
      const auto warm = others.put(prefix + "warm", std::to_string(start));
      ASSERT_TRUE(env_->wait_mirrored(warm, 10s, prefix));
      const auto warm_row = env_->insert_wal(prefix + "warm-row", std::to_string(start), std::nullopt);
      ASSERT_TRUE(wait_until([&] { return env_->db().scalar("SELECT status FROM etcd_wal WHERE id = " + std::to_string(warm_row)) == "success"; }, 10s))
          << env_->wal_status_counts();
      const auto log = service.log_since_mark();
      const auto connected = find_log_line(log, {{"msg", "connected to etcd"}});
      ASSERT_TRUE(connected) << log;
      const auto skipped = find_log_line(log, {{"msg", "etcd endpoint does not answer; using another"}});
      all_on_member0 = connected->value("endpoint", "") == endpoints[0] && !skipped;
      if (!all_on_member0)
        std::cout << "[ note     ] start " << start << ": a client is not on member 0 ("
                  << (skipped ? skipped->dump() : connected->dump()) << ")" << std::endl;
    }
    ASSERT_TRUE(all_on_member0) << "three starts of etcd-sync did not all use member 0 (" << endpoints[0] << "):\n"
                                << service.log_text();

    const auto leader_before = cluster.wait_for_leader(10s);
    ASSERT_EQ(leader_before == 0, member0_leads) << "etcd's leader is member " << leader_before;

    service.mark_log();
    Frozen member0(cluster.member(0).pid());
    ASSERT_TRUE(member0.stopped()) << "member 0 was not seen stopped";
    const auto frozen_at = steady_clock::now();
    const std::string wal_key = prefix + "from-postgres";
    env_->insert_wal(wal_key, "row", std::nullopt);
    const auto row_inserted_at = steady_clock::now();
    const std::string etcd_key = prefix + "from-etcd";
    const auto revision = put_retrying(others, etcd_key, "put");  // waits out an election if member 0 led
    const auto put_at = steady_clock::now();
    const auto put_took = since(frozen_at);

    // Both directions at once, each against its own clock.
    std::optional<milliseconds> mirrored, applied;
    const std::string mirrored_sql = "SELECT count(*) FROM etcd WHERE key = '" + etcd_key +
                                     "' AND revision = " + std::to_string(revision);
    wait_until(
        [&] {
          if (!mirrored && env_->db().scalar(mirrored_sql) == "1") mirrored = since(put_at);
          if (!applied) {
            auto kv = others.get(wal_key);
            if (kv && kv->value() == "row") applied = since(row_inserted_at);
          }
          return (mirrored && applied) || (since(put_at) > kDeadline && since(row_inserted_at) > kDeadline);
        },
        kDeadline + 1s);
    auto shown = [](const std::optional<milliseconds>& t) { return t ? std::to_string(t->count()) + " ms" : std::string("never"); };
    std::cout << "[ measured ] member 0 frozen as etcd's " << (member0_leads ? "leader" : "follower") << ": the put took "
              << put_took.count() << " ms; mirrored " << shown(mirrored) << " after the put's answer; etcd_wal row in etcd "
              << shown(applied) << " after its insert" << std::endl;
    EXPECT_TRUE(mirrored && *mirrored <= kDeadline)
        << "the put through another member was not mirrored within " << kDeadline.count() << " ms:\n"
        << service.log_since_mark();
    EXPECT_TRUE(applied && *applied <= kDeadline)
        << "the etcd_wal row did not reach etcd within " << kDeadline.count() << " ms (" << env_->wal_status_counts()
        << "):\n" << service.log_since_mark();

    member0.thaw();
    EXPECT_EQ(service.terminate(5s), 0);
  }
};

// The member etcd-sync talks to is frozen while it follows: no election, the other two serve at once.
TEST_F(HungMemberTest, AFrozenFollowerIsLeftAndBothDirectionsCarryOnWithinSeconds) {
  freeze_the_member_in_use(false, "/hung-follower/");
}

// The member etcd-sync talks to is frozen while it leads: the other two elect a leader, and
// etcd-sync leaves the silent member as it does a follower.
TEST_F(HungMemberTest, AFrozenLeaderIsLeftAndBothDirectionsCarryOnWithinSeconds) {
  freeze_the_member_in_use(true, "/hung-leader/");
}

}  // namespace
}  // namespace etcd_sync::testing
