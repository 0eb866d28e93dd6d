// Two POSIX helpers the test-support files share: errno as an exception, and a descriptor that
// closes itself. Header-only, test-side code.
#pragma once

#include <unistd.h>

#include <cerrno>
#include <string>
#include <system_error>

namespace etcd_sync::testing {

/// Throws std::system_error for the current errno, with `what` (the failed call) as its message.
[[noreturn]] inline void throw_errno(const std::string& what) {
  throw std::system_error(errno, std::generic_category(), what);
}

/// A descriptor closed on scope exit (-1: none).
class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() { reset(); }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_;
};

}  // namespace etcd_sync::testing
