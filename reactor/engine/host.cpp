#include "reactor/engine/host.hpp"

#include <unistd.h>

namespace etcd_sync {

std::string host_name() {
  char buffer[256] = {};
  gethostname(buffer, sizeof buffer - 1);
  return buffer;
}

}  // namespace etcd_sync
