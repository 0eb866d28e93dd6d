// host_to_resolve (adapters/pg_connection.hpp): which conninfo strings name a host that
// PgConnection must look up itself before libpq would block the event loop in getaddrinfo.

#include "adapters/pg_connection.hpp"

#include <gtest/gtest.h>

#include <cstdlib>

namespace etcd_sync {
namespace {

/// Clears libpq's environment defaults for the test's duration.
class PgHostTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* name : {"PGHOST", "PGHOSTADDR", "PGPORT", "PGSERVICE"}) {
      if (const char* value = std::getenv(name)) saved_.emplace_back(name, value);
      unsetenv(name);
    }
  }
  void TearDown() override {
    for (const auto& [name, value] : saved_) setenv(name.c_str(), value.c_str(), 1);
  }
  std::vector<std::pair<std::string, std::string>> saved_;
};

TEST_F(PgHostTest, HostNamesAreResolvedWithTheirPort) {
  auto target = host_to_resolve("host=db.example.com port=6543 dbname=sync_db");
  ASSERT_TRUE(target.has_value());
  EXPECT_EQ(target->host, "db.example.com");
  EXPECT_EQ(target->port, "6543");
  target = host_to_resolve("postgresql://sync_user:secret@localhost/sync_db");
  ASSERT_TRUE(target.has_value());
  EXPECT_EQ(target->host, "localhost");
  EXPECT_EQ(target->port, "5432") << "libpq's default port";
}

TEST_F(PgHostTest, NothingToResolveIsLeftToLibpq) {
  EXPECT_FALSE(host_to_resolve("host=127.0.0.1 port=5432"));
  EXPECT_FALSE(host_to_resolve("host=::1"));
  EXPECT_FALSE(host_to_resolve("host=/var/run/postgresql")) << "a Unix-domain socket directory";
  EXPECT_FALSE(host_to_resolve("host=db1,db2")) << "several hosts: libpq's own failover";
  EXPECT_FALSE(host_to_resolve("host=db.example.com hostaddr=10.0.0.7")) << "the address is given";
  EXPECT_FALSE(host_to_resolve("service=sync")) << "a pg_service.conf entry";
  EXPECT_FALSE(host_to_resolve("dbname=sync_db")) << "no host: the default socket";
  EXPECT_FALSE(host_to_resolve("host='unterminated")) << "libpq reports the bad conninfo itself";
}

TEST_F(PgHostTest, EnvironmentDefaultsCountAsLibpqWouldUseThem) {
  setenv("PGHOST", "db.internal", 1);
  setenv("PGPORT", "6000", 1);
  auto target = host_to_resolve("dbname=sync_db");
  ASSERT_TRUE(target.has_value());
  EXPECT_EQ(target->host, "db.internal");
  EXPECT_EQ(target->port, "6000");
  EXPECT_EQ(host_to_resolve("host=other.internal")->host, "other.internal") << "the conninfo wins";
  setenv("PGHOSTADDR", "10.0.0.8", 1);
  EXPECT_FALSE(host_to_resolve("dbname=sync_db"));
}

}  // namespace
}  // namespace etcd_sync
