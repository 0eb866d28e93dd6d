// lowest_notified_id (reactor/service/listener.hpp): which etcd_wal ids a batch of NOTIFY etcd_changes
// payloads names, so the outbox knows where new pending rows can be.

#include "reactor/service/listener.hpp"

#include <gtest/gtest.h>

namespace etcd_sync {
namespace {

PgNotification note(const std::string& payload) { return PgNotification{"etcd_changes", payload, 42}; }

TEST(LowestNotifiedId, TakesTheLowestIdOfTheTriggersPayloads) {
  // As schema/004 sends them: an INSERT statement's first pending row, a requeued row.
  EXPECT_EQ(lowest_notified_id({note(R"({"id" : 120, "key" : "/a", "count" : 3, "op" : "insert"})")}), 120);
  EXPECT_EQ(lowest_notified_id({note(R"({"id":120,"op":"insert"})"), note(R"({"id":7,"op":"requeue"})"),
                                note(R"({"id":300,"op":"insert"})")}),
            7);
}

TEST(LowestNotifiedId, APayloadWithoutAnIdMeansAnyRowMayBeNew) {
  // NOTIFY etcd_changes by hand, or with some other payload: nothing narrows the search.
  EXPECT_EQ(lowest_notified_id({note("")}), std::nullopt);
  EXPECT_EQ(lowest_notified_id({note(R"({"id":5})"), note("wake up")}), std::nullopt);
  EXPECT_EQ(lowest_notified_id({note(R"({"op":"insert"})")}), std::nullopt);
  EXPECT_EQ(lowest_notified_id({note(R"({"id":"12"})")}), std::nullopt);
  EXPECT_EQ(lowest_notified_id({note(R"([1, 2])")}), std::nullopt);
  EXPECT_EQ(lowest_notified_id({}), std::nullopt);
}

}  // namespace
}  // namespace etcd_sync
