#include "test/support/temp_dir.hpp"

#include <sys/stat.h>

#include <cstdlib>
#include <string>
#include <system_error>
#include <utility>

#include "test/support/posix.hpp"

namespace etcd_sync::testing {

namespace fs = std::filesystem;

TempDir::TempDir() {
  const char* tmpdir = std::getenv("TMPDIR");
  std::string pattern = (tmpdir != nullptr && *tmpdir != '\0') ? tmpdir : "/tmp";
  pattern += "/etcd-sync-test-XXXXXX";
  if (::mkdtemp(pattern.data()) == nullptr) throw_errno("mkdtemp " + pattern);
  path_ = fs::absolute(pattern);
  if (::chmod(path_.c_str(), 0755) != 0) throw_errno("chmod " + path_.string());
}

TempDir::~TempDir() { remove(); }

TempDir::TempDir(TempDir&& other) noexcept
    : path_(std::exchange(other.path_, {})), keep_(std::exchange(other.keep_, false)) {}

TempDir& TempDir::operator=(TempDir&& other) noexcept {
  if (this != &other) {
    remove();
    path_ = std::exchange(other.path_, {});
    keep_ = std::exchange(other.keep_, false);
  }
  return *this;
}

void TempDir::remove() {
  if (path_.empty() || keep_) return;
  std::error_code ignored;
  fs::remove_all(path_, ignored);
}

}  // namespace etcd_sync::testing
