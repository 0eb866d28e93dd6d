// The etcd DSN (`-e`), host:port checks, and password redaction (README, "Commands" and "Configuration").

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "reactor/config/config.hpp"

namespace etcd_sync {
namespace {

using namespace std::chrono_literals;
using Endpoints = std::vector<std::string>;

// --- apply_etcd_dsn ------------------------------------------------------------------------------

TEST(ApplyEtcdDsn, SingleHostWithPrefix) {
  EtcdConfig etcd;
  EXPECT_EQ(apply_etcd_dsn("etcd://127.0.0.1:2379/app", etcd), "");
  EXPECT_EQ(etcd.endpoints, Endpoints{"127.0.0.1:2379"});
  EXPECT_EQ(etcd.prefix, "/app");
  EXPECT_EQ(etcd.username, "");
  EXPECT_FALSE(etcd.tls);
}

TEST(ApplyEtcdDsn, SeveralHostsAndTheRootPrefix) {
  EtcdConfig etcd;
  etcd.prefix = "/before";
  EXPECT_EQ(apply_etcd_dsn("etcd://etcd-1:2379,etcd-2:2380,[::1]:2381/", etcd), "");
  EXPECT_EQ(etcd.endpoints, (Endpoints{"etcd-1:2379", "etcd-2:2380", "[::1]:2381"}));
  EXPECT_EQ(etcd.prefix, "/");
}

TEST(ApplyEtcdDsn, PrefixKeepsItsSlashesAndIsPercentDecoded) {
  EtcdConfig etcd;
  EXPECT_EQ(apply_etcd_dsn("etcd://h:1/config/app/", etcd), "");
  EXPECT_EQ(etcd.prefix, "/config/app/");
  EXPECT_EQ(apply_etcd_dsn("etcd://h:1/a%40b%20c", etcd), "");
  EXPECT_EQ(etcd.prefix, "/a@b c");
}

TEST(ApplyEtcdDsn, WithoutAPathThePrefixStays) {
  EtcdConfig etcd;
  etcd.prefix = "/kept";
  EXPECT_EQ(apply_etcd_dsn("etcd://h:1", etcd), "");
  EXPECT_EQ(etcd.prefix, "/kept");
  EXPECT_EQ(apply_etcd_dsn("etcd://h:1?tls=enabled", etcd), "");
  EXPECT_EQ(etcd.prefix, "/kept");
  EXPECT_TRUE(etcd.tls);
}

TEST(ApplyEtcdDsn, Credentials) {
  EtcdConfig etcd;
  EXPECT_EQ(apply_etcd_dsn("etcd://alice:s3cr%40t@h:1/", etcd), "");
  EXPECT_EQ(etcd.username, "alice");
  EXPECT_EQ(etcd.password, "s3cr@t");
  EXPECT_EQ(etcd.endpoints, Endpoints{"h:1"});
}

TEST(ApplyEtcdDsn, PasswordMayHoldSlashesColonsAndAtSigns) {
  EtcdConfig etcd;
  EXPECT_EQ(apply_etcd_dsn("etcd://bob:p@s:s/w?x@h:1/app", etcd), "");
  EXPECT_EQ(etcd.username, "bob");
  EXPECT_EQ(etcd.password, "p@s:s/w?x");
  EXPECT_EQ(etcd.endpoints, Endpoints{"h:1"});
  EXPECT_EQ(etcd.prefix, "/app");
}

TEST(ApplyEtcdDsn, UserWithoutPasswordClearsThePassword) {
  EtcdConfig etcd;
  etcd.password = "old";
  EXPECT_EQ(apply_etcd_dsn("etcd://carol@h:1/", etcd), "");
  EXPECT_EQ(etcd.username, "carol");
  EXPECT_EQ(etcd.password, "");
}

TEST(ApplyEtcdDsn, WithoutCredentialsTheConfiguredOnesStay) {
  EtcdConfig etcd;
  etcd.username = "root";
  etcd.password = "pw";
  EXPECT_EQ(apply_etcd_dsn("etcd://h:1/", etcd), "");
  EXPECT_EQ(etcd.username, "root");
  EXPECT_EQ(etcd.password, "pw");
}

TEST(ApplyEtcdDsn, QueryParameters) {
  EtcdConfig etcd;
  EXPECT_EQ(apply_etcd_dsn("etcd://h:1/p?tls=enabled&dial_timeout=2s&request_timeout=1m30s", etcd),
            "");
  EXPECT_TRUE(etcd.tls);
  EXPECT_EQ(etcd.dial_timeout, 2000ms);
  EXPECT_EQ(etcd.request_timeout, 90000ms);
  EXPECT_EQ(etcd.prefix, "/p");

  EXPECT_EQ(apply_etcd_dsn("etcd://h:1/p?tls=disabled&", etcd), "");
  EXPECT_FALSE(etcd.tls);
  EXPECT_EQ(etcd.dial_timeout, 2000ms);  // not given this time: unchanged
}

TEST(ApplyEtcdDsn, ExactErrorMessages) {
  EtcdConfig etcd;
  EXPECT_EQ(apply_etcd_dsn("etcd://h:70000/", etcd),
            "endpoint \"h:70000\": port must be a number from 1 to 65535, got \"70000\"");
  EXPECT_EQ(apply_etcd_dsn("etcd://h:1/?color=blue", etcd),
            "unknown query parameter \"color\" (known: tls, dial_timeout, request_timeout)");
  EXPECT_EQ(apply_etcd_dsn("etcd://h:1/?tls=maybe", etcd),
            "tls must be enabled or disabled, got \"maybe\"");
  EXPECT_EQ(apply_etcd_dsn("http://h:1/", etcd),
            "must have the form etcd://[user[:password]@]host:port[,host:port]/[prefix]"
            "[?tls=enabled&dial_timeout=5s&request_timeout=10s]");
}

TEST(ApplyEtcdDsn, BadFormsFailAndLeaveTheConfigAlone) {
  for (const char* dsn : {"",
                          "h:1",
                          "http://h:1/",
                          "etcd://",
                          "etcd:///x",
                          "etcd://h/",
                          "etcd://h:/",
                          "etcd://h:0/",
                          "etcd://h:65536/",
                          "etcd://h:1,/",
                          "etcd://,h:1/",
                          "etcd://h:x/",
                          "etcd://::1:2379/",
                          "etcd://h:1/?tls",
                          "etcd://h:1/?tls=maybe",
                          "etcd://h:1/?dial_timeout=5",
                          "etcd://h:1/?dial_timeout=0s",
                          "etcd://h:1/?request_timeout=-1s",
                          "etcd://h:1/?foo=bar",
                          "etcd://:pw@h:1/",
                          "etcd://u:p@/",
                          "etcd://h:1/a#b",
                          "etcd://h:1/%zz",
                          "etcd://h:1/%4",
                          "etcd://h 1:2/",
                          "etcd://a%zz@h:1/"}) {
    EtcdConfig etcd;
    etcd.endpoints = {"kept:1"};
    etcd.prefix = "/kept";
    etcd.username = "kept";
    EXPECT_NE(apply_etcd_dsn(dsn, etcd), "") << "accepted \"" << dsn << "\"";
    EXPECT_EQ(etcd.endpoints, Endpoints{"kept:1"}) << dsn;
    EXPECT_EQ(etcd.prefix, "/kept") << dsn;
    EXPECT_EQ(etcd.username, "kept") << dsn;
  }
}

TEST(ApplyEtcdDsn, ErrorsNeverContainThePassword) {
  for (const char* dsn :
       {"etcd://u:hunter2@h:0/", "etcd://u:hunter2@h:1/?bogus=1", "etcd://u:hun/ter2@:1/",
        "etcd://u:hunter2@h:1/?tls=x", "etcd://u:hunter2%zz@h:1/", "etcd://u:hunter2@/",
        "etcd://u:hunter2@h:1/#frag", "etcd://u:hunter2@h:1:2/"}) {
    EtcdConfig etcd;
    const std::string error = apply_etcd_dsn(dsn, etcd);
    EXPECT_NE(error, "") << dsn;
    EXPECT_EQ(error.find("hunter2"), std::string::npos) << error;
    EXPECT_EQ(error.find("hun/ter2"), std::string::npos) << error;
    EXPECT_EQ(error.find("ter2"), std::string::npos) << error;
  }
}

// --- check_host_port -----------------------------------------------------------------------------

TEST(CheckHostPort, AcceptsNamesAddressesAndBracketedIpv6) {
  for (const char* address : {"127.0.0.1:2379", "localhost:1", "etcd-1.example.internal:65535",
                              "[::1]:2379", "[fe80::1%eth0]:2379", "my_host:80"}) {
    EXPECT_EQ(check_host_port(address), "") << address;
  }
}

TEST(CheckHostPort, SaysWhatIsWrong) {
  EXPECT_EQ(check_host_port("localhost"),
            "missing port; expected host:port, e.g. \"127.0.0.1:2379\"");
  EXPECT_EQ(check_host_port(":2379"), "missing host; expected host:port, e.g. \"127.0.0.1:2379\"");
  EXPECT_EQ(check_host_port("h:0"), "port must be a number from 1 to 65535, got \"0\"");
  EXPECT_EQ(check_host_port("h:"), "port must be a number from 1 to 65535, got \"\"");
  EXPECT_EQ(check_host_port("::1:2379"),
            "an IPv6 address must be in brackets, e.g. \"[::1]:2379\"");
  EXPECT_EQ(check_host_port("h st:1"), "\"h st\" is not a host name or IP address");
  for (const char* address :
       {"", "[::1]2379", "[::1]", "[]:1", "h:123456", "h:-1", "http://h:1", "h:1/"}) {
    EXPECT_NE(check_host_port(address), "") << address;
  }
}

// --- redact_conninfo -----------------------------------------------------------------------------

struct Redaction {
  const char* input;
  const char* expected;
};

TEST(RedactConninfo, KeywordForm) {
  const Redaction cases[] = {
      {"host=h password=secret dbname=d", "host=h password=******** dbname=d"},
      {"password=secret", "password=********"},
      {"host=h password = 'se cret' user=u", "host=h password = ******** user=u"},
      {"password='it\\'s \\\\ secret' user=u", "password=******** user=u"},
      {"password=sec\\ ret user=u", "password=******** user=u"},
      {"PASSWORD=secret host=h", "PASSWORD=******** host=h"},
      {"host=h\tpassword=secret\nuser=u", "host=h\tpassword=********\nuser=u"},
      {"host=h user=u dbname=d", "host=h user=u dbname=d"},
      {"", ""},
      // Malformed input is still hidden: a missing '=', an unterminated quote, an empty value.
      {"password secret host=h", "password ******** host=h"},
      {"host=h password='secret user=u", "host=h password=********"},
      {"host=h password=", "host=h password=********"},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(redact_conninfo(c.input), c.expected) << c.input;
  }
}

TEST(RedactConninfo, UriForm) {
  const Redaction cases[] = {
      {"postgresql://user:secret@host:5432/db", "postgresql://user:********@host:5432/db"},
      {"postgres://user:secret@host/db?sslmode=require",
       "postgres://user:********@host/db?sslmode=require"},
      {"postgresql://user@host/db?password=secret&sslmode=require",
       "postgresql://user@host/db?password=********&sslmode=require"},
      {"postgresql://host/db?sslmode=require&password=secret",
       "postgresql://host/db?sslmode=require&password=********"},
      {"postgresql://u:se/cr?et@h/db", "postgresql://u:********@h/db"},
      {"postgresql://u:sec@ret@h1:5432,h2:5433/db", "postgresql://u:********@h1:5432,h2:5433/db"},
      {"  postgresql://u:secret@h/db", "  postgresql://u:********@h/db"},
      {"postgresql://user@host:5432/db", "postgresql://user@host:5432/db"},
      {"postgresql://host/db", "postgresql://host/db"},
      {"postgresql://", "postgresql://"},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(redact_conninfo(c.input), c.expected) << c.input;
  }
}

TEST(RedactConninfo, NeverLetsThePasswordThrough) {
  for (const char* conninfo :
       {"password=secret", "password = \"secret\"", "password='se\\'cret'",
        "host=a password=secret port=1", "postgresql://u:secret@h/d", "postgres://u:secret@h",
        "postgresql://h/d?password=secret", "postgresql://h/d?a=1&password=secret&b=2",
        "postgresql://u:secret@", "postgresql://u:s@cret@h/d",
        "postgresql://h:1/d?password=secret@x"}) {
    const std::string shown = redact_conninfo(conninfo);
    EXPECT_EQ(shown.find("secret"), std::string::npos) << conninfo << " -> " << shown;
    EXPECT_EQ(shown.find("cret"), std::string::npos) << conninfo << " -> " << shown;
  }
}

// --- redact_etcd_dsn -----------------------------------------------------------------------------

TEST(RedactEtcdDsn, HidesThePasswordOnly) {
  const Redaction cases[] = {
      {"etcd://alice:hunter2@h:1,h:2/app?tls=enabled",
       "etcd://alice:********@h:1,h:2/app?tls=enabled"},
      {"etcd://alice@h:1/app", "etcd://alice@h:1/app"},
      {"etcd://h:1/app", "etcd://h:1/app"},
      {"etcd://a:x@y/z@h:1/", "etcd://a:********@h:1/"},
      {"etcd://a:@h:1/", "etcd://a:********@h:1/"},
      {"u:pw@h:1", "u:********@h:1"},
      {"u:a://b@h:1", "u:********@h:1"},
      {"", ""},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(redact_etcd_dsn(c.input), c.expected) << c.input;
  }
}

}  // namespace
}  // namespace etcd_sync
