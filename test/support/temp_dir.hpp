// A throwaway directory for a test's servers, logs and config files.
#pragma once

#include <filesystem>

namespace etcd_sync::testing {

/// A fresh directory under $TMPDIR (or /tmp), mode 0755 so the postgres user can traverse it,
/// removed recursively when the object is destroyed. Declare it before the servers that live in
/// it, so they stop before their files go.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(TempDir&& other) noexcept;
  TempDir& operator=(TempDir&& other) noexcept;
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  /// The directory's absolute path (empty after a move).
  const std::filesystem::path& path() const { return path_; }
  /// Leaves the directory in place when this object goes (a failed run's logs stay for a person
  /// to read); path() still names it.
  void keep() { keep_ = true; }

 private:
  void remove();

  std::filesystem::path path_;
  bool keep_ = false;
};

}  // namespace etcd_sync::testing
