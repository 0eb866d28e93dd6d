// What an operator installs: the Debian package CPack builds from this build directory
// (cmake/packaging.cmake), unpacked into a throwaway root with `dpkg -x` (nothing is installed on
// this machine), and the alerting rules shipped in it (conf/prometheus-rules.yml).

#include "reactor/service/metrics.hpp"
#include "test/support/servers.hpp"
#include "test/support/service_process.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <regex>
#include <set>
#include <sstream>
#include <string>

namespace etcd_sync::testing {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

const fs::path source_dir = ETCD_SYNC_SOURCE_DIR;

bool executable(const fs::path& path) { return ::access(path.c_str(), X_OK) == 0; }

/// The .deb, built once for all tests of this file into a directory of its own (so a parallel
/// scripts/package in build/package is not disturbed).
class PackageTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    // etcd-sync is built at the top of the build directory, beside CPackConfig.cmake.
    const fs::path cpack_config = service_binary().parent_path() / "CPackConfig.cmake";
    ASSERT_TRUE(fs::exists(cpack_config)) << cpack_config;
    cpack_ = new CommandResult(run_command("/usr/bin/cpack", {"--config", cpack_config.string(), "-B",
                                                              (dir_->path() / "out").string()},
                                           {}, 180s));
    const auto arch = run_command("/usr/bin/dpkg", {"--print-architecture"});
    deb_ = dir_->path() / "out" /
           ("etcd-sync_" + std::string(ETCD_SYNC_VERSION) + "_" + arch.stdout_text.substr(0, arch.stdout_text.find('\n')) +
            ".deb");
  }
  static void TearDownTestSuite() {
    delete cpack_;
    delete dir_;
  }
  void SetUp() override {
    ASSERT_EQ(cpack_->exit_code, 0) << cpack_->shown();
    ASSERT_TRUE(fs::exists(deb_)) << deb_ << " not built\n" << cpack_->shown();
  }

  static inline TempDir* dir_ = nullptr;
  static inline CommandResult* cpack_ = nullptr;
  static inline fs::path deb_;
};

TEST_F(PackageTest, UnpackedIntoAThrowawayRootItRunsAndHoldsWhatTheReadmeSays) {
  const fs::path root = dir_->path() / "root";
  auto r = run_command("/usr/bin/dpkg", {"-x", deb_.string(), root.string()});
  ASSERT_EQ(r.exit_code, 0) << r.shown();

  const fs::path binary = root / "usr/bin/etcd-sync";
  ASSERT_TRUE(executable(binary)) << binary;
  r = run_command(binary, {"--version"});
  EXPECT_EQ(r.exit_code, 0) << r.shown();
  EXPECT_EQ(r.stdout_text, "etcd-sync " + std::string(ETCD_SYNC_VERSION) + "\n");

  // The unit runs the packaged binary; otherwise it is conf/etcd-sync.service.
  const std::string unit = read_text_file(root / "usr/lib/systemd/system/etcd-sync.service");
  EXPECT_NE(unit.find("\nExecStart=/usr/bin/etcd-sync start --config /etc/etcd-sync/config.toml\n"), std::string::npos)
      << unit;
  EXPECT_NE(unit.find("\nDocumentation=file:///usr/share/doc/etcd-sync/README.md\n"), std::string::npos) << unit;
  EXPECT_EQ(unit.find("\nExecStart=/usr/local"), std::string::npos) << unit;
  EXPECT_NE(unit.find("\nUser=etcd-sync\n"), std::string::npos) << unit;

  const fs::path doc = root / "usr/share/doc/etcd-sync";
  EXPECT_EQ(read_text_file(doc / "README.md"), read_text_file(source_dir / "README.md"));
  EXPECT_TRUE(fs::exists(doc / "copyright"));
  EXPECT_TRUE(fs::exists(doc / "changelog.gz"));
  EXPECT_TRUE(fs::exists(root / "usr/share/man/man1/etcd-sync.1.gz"));
  // Every example of conf/, as it is in the tree; the maintainer scripts are not examples.
  int examples = 0;
  for (const auto& entry : fs::directory_iterator(source_dir / "conf")) {
    if (entry.is_directory()) continue;
    ++examples;
    const fs::path packaged = doc / "examples" / entry.path().filename();
    EXPECT_EQ(read_text_file(packaged), read_text_file(entry.path())) << packaged;
  }
  EXPECT_GE(examples, 5) << "local.toml, quickstart.toml, tls-auth.toml, etcd-sync.service, prometheus-rules.yml";
  EXPECT_FALSE(fs::exists(doc / "examples/debian"));
}

TEST_F(PackageTest, ControlFieldsAndMaintainerScripts) {
  auto r = run_command("/usr/bin/dpkg-deb", {"-f", deb_.string(), "Package", "Version", "Depends"});
  ASSERT_EQ(r.exit_code, 0) << r.shown();
  EXPECT_NE(r.stdout_text.find("Package: etcd-sync\n"), std::string::npos) << r.stdout_text;
  EXPECT_NE(r.stdout_text.find("Version: " + std::string(ETCD_SYNC_VERSION) + "\n"), std::string::npos) << r.stdout_text;
  // dpkg-shlibdeps found the shared libraries; the postinst needs adduser.
  std::set<std::string> depends;
  const auto at = r.stdout_text.find("Depends: ");
  ASSERT_NE(at, std::string::npos) << r.stdout_text;
  std::istringstream list(r.stdout_text.substr(at + 9, r.stdout_text.find('\n', at) - at - 9));
  for (std::string item; std::getline(list, item, ',');) {
    std::istringstream words(item);
    std::string package;
    words >> package;
    depends.insert(package);
  }
  // Each distribution's own names: Debian 13 renamed some libraries in its 64-bit time_t
  // transition (libgrpc++1.51t64, libprotobuf32t64).
  for (const std::string dependency : {"adduser", "libpq5", "libgrpc++1.51", "libprotobuf32", "libsystemd0"}) {
    EXPECT_EQ(depends.count(dependency) + depends.count(dependency + "t64"), 1u)
        << dependency << " missing in " << r.stdout_text;
  }

  const fs::path control = dir_->path() / "control";
  r = run_command("/usr/bin/dpkg-deb", {"-e", deb_.string(), control.string()});
  ASSERT_EQ(r.exit_code, 0) << r.shown();
  for (const char* script : {"postinst", "postrm"}) {
    EXPECT_TRUE(executable(control / script)) << script;
    EXPECT_EQ(read_text_file(control / script), read_text_file(source_dir / "conf/debian" / script)) << script;
    r = run_command("/bin/sh", {"-n", (control / script).string()});
    EXPECT_EQ(r.exit_code, 0) << script << "\n" << r.shown();
  }
  const std::string postinst = read_text_file(control / "postinst");
  EXPECT_NE(postinst.find("adduser --system --group"), std::string::npos);
  EXPECT_NE(postinst.find(" etcd-sync\n"), std::string::npos);
}

TEST_F(PackageTest, LintianReportsNothingButTheExplainedOverrides) {
  // Every tag lintian shows, down to info and pedantic, is a failure: a tag that stays has to be
  // explained in conf/debian/etcd-sync.lintian-overrides.
  auto r = run_command("/usr/bin/lintian", {"--display-info", "--pedantic", "--fail-on", "info,pedantic,warning,error",
                                            deb_.string()},
                       {}, 120s);
  EXPECT_EQ(r.exit_code, 0) << r.shown();
  EXPECT_FALSE(std::regex_search(r.stdout_text, std::regex("^[EWIPX]: ", std::regex::multiline))) << r.shown();
}

// --- conf/prometheus-rules.yml ------------------------------------------------------------------

// Metrics the rules use before etcd-sync exports them, and why (none now).
const std::set<std::string> metrics_still_to_come = {};

TEST(AlertRules, NameOnlyMetricsEtcdSyncExports) {
  const std::string rules = read_text_file(source_dir / "conf/prometheus-rules.yml");
  ASSERT_FALSE(rules.empty());
  SyncStats stats;
  stats.wal_rows_known = true;  // etcd_sync_wal_rows is exported once the heartbeat has counted
  const std::string exported = render_metrics(stats, "test");
  std::set<std::string> used;
  const std::regex name("\\betcd_sync_[a-z_]+\\b");
  for (auto it = std::sregex_iterator(rules.begin(), rules.end(), name); it != std::sregex_iterator(); ++it) {
    used.insert(it->str());
  }
  EXPECT_GE(used.size(), 6u);
  for (const auto& metric : used) {
    if (metrics_still_to_come.count(metric) > 0) continue;
    EXPECT_NE(exported.find("# TYPE " + metric + " "), std::string::npos)
        << "conf/prometheus-rules.yml uses " << metric << ", which /metrics does not export";
  }
}

TEST(AlertRules, PromtoolAcceptsThemWhereItIsInstalled) {
  // promtool comes only with Debian's prometheus package, which scripts/install-deps leaves out
  // (332 MB, and a server it starts); where it is installed, it checks the rules.
  const fs::path promtool = "/usr/bin/promtool";
  if (!executable(promtool)) GTEST_SKIP() << "promtool is not installed (Debian package prometheus)";
  const auto r = run_command(promtool, {"check", "rules", (source_dir / "conf/prometheus-rules.yml").string()});
  EXPECT_EQ(r.exit_code, 0) << r.shown();
  EXPECT_NE(r.stdout_text.find("SUCCESS"), std::string::npos) << r.shown();
}

}  // namespace
}  // namespace etcd_sync::testing
