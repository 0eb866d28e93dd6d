#include "test/support/netns.hpp"

#include <net/if.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <system_error>

#include "test/support/posix.hpp"

namespace etcd_sync::testing {
namespace {

namespace fs = std::filesystem;
using std::chrono::seconds;

constexpr const char* kNamePrefix = "etcd-sync-test-";
constexpr int kMaxHosts = 256;  ///< 10.213.0.0/30 .. 10.213.255.0/30

/// What enter_private_network() found; guarded by state_mutex.
struct PrivateNetworkState {
  bool tried = false;
  bool entered = false;
  std::string error = "not tried";
};

std::mutex state_mutex;
PrivateNetworkState private_network;
std::set<int> hosts_in_use;  ///< indices of live IsolatedHosts

/// The absolute path of a system program (iproute2's `ip`, `iptables`), which may sit in sbin
/// directories missing from a non-root PATH.
fs::path system_program(const std::string& name) {
  for (const char* dir : {"/usr/sbin", "/sbin", "/usr/bin", "/bin"}) {
    const fs::path path = fs::path(dir) / name;
    if (::access(path.c_str(), X_OK) == 0) return path;
  }
  throw std::runtime_error(name + " not found in /usr/sbin, /sbin, /usr/bin or /bin (scripts/install-deps installs it)");
}

/// Runs `ip ARGS`; throws std::runtime_error with its output when it fails.
void ip(const std::vector<std::string>& args) {
  const auto result = run_command(system_program("ip"), args, {}, seconds(10));
  if (result.exit_code != 0 || result.timed_out)
    throw std::runtime_error("ip " + join_args(args) + " failed: " + result.shown());
}

/// Brings `lo` up in the calling thread's network namespace.
bool bring_loopback_up(std::string& error) {
  Fd fd(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  ifreq request{};
  std::strncpy(request.ifr_name, "lo", IFNAMSIZ - 1);
  if (fd.get() < 0 || ::ioctl(fd.get(), SIOCGIFFLAGS, &request) != 0) {
    error = std::string("reading lo's flags: ") + std::strerror(errno);
    return false;
  }
  request.ifr_flags = static_cast<short>(request.ifr_flags | IFF_UP);
  if (::ioctl(fd.get(), SIOCSIFFLAGS, &request) != 0) {
    error = std::string("bringing lo up: ") + std::strerror(errno);
    return false;
  }
  return true;
}

/// The test process's pid in a host's name "etcd-sync-test-<pid>-<n>", or nullopt for other names.
std::optional<pid_t> owner_pid(const std::string& name) {
  if (name.rfind(kNamePrefix, 0) != 0) return std::nullopt;
  const std::string rest = name.substr(std::strlen(kNamePrefix));
  const auto dash = rest.find('-');
  if (dash == 0 || dash == std::string::npos) return std::nullopt;
  const std::string pid = rest.substr(0, dash);
  if (!std::all_of(pid.begin(), pid.end(), [](char c) { return c >= '0' && c <= '9'; })) return std::nullopt;
  return static_cast<pid_t>(std::stol(pid));
}

/// Deletes the isolated hosts whose test process is dead (a crashed or killed run). Their veth
/// pairs went with the dead process's private namespace; only the named namespaces remain.
void sweep_stale_hosts() {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/run/netns", ec)) {
    const std::string name = entry.path().filename().string();
    const auto pid = owner_pid(name);
    if (!pid || *pid == ::getpid()) continue;
    if (::kill(*pid, 0) == 0 || errno != ESRCH) continue;  // alive (or not ours to judge)
    try {
      ip({"netns", "del", name});
    } catch (const std::exception&) {
      // Another test process swept it first.
    }
  }
}

}  // namespace

bool enter_private_network() {
  std::lock_guard lock(state_mutex);
  if (private_network.tried) return private_network.entered;
  private_network.tried = true;
  if (::unshare(CLONE_NEWNET) != 0) {
    const int error = errno;
    private_network.error = std::string("unshare(CLONE_NEWNET): ") + std::strerror(error) +
                            (error == EPERM ? " (network faults need root: CAP_SYS_ADMIN and CAP_NET_ADMIN)" : "");
    return false;
  }
  std::string error;
  if (!bring_loopback_up(error)) {
    // A namespace without loopback is no use, and there is no way back: say so.
    private_network.error = "in a private network namespace, but " + error;
    return false;
  }
  private_network.entered = true;
  private_network.error.clear();
  return true;
}

bool in_private_network() {
  std::lock_guard lock(state_mutex);
  return private_network.entered;
}

std::string private_network_error() {
  std::lock_guard lock(state_mutex);
  return private_network.error;
}

// --- IsolatedHost --------------------------------------------------------------------------------

IsolatedHost::IsolatedHost() : index_(-1) {
  {
    std::lock_guard lock(state_mutex);
    if (!private_network.entered) {
      throw std::logic_error("IsolatedHost outside a private network namespace (enter_private_network(): " +
                             private_network.error + "): its veth would land in the machine's namespace");
    }
    for (int n = 0; n < kMaxHosts; ++n) {
      if (hosts_in_use.insert(n).second) {
        index_ = n;
        break;
      }
    }
    if (index_ < 0) throw std::runtime_error("more than 256 isolated hosts at once");
  }
  sweep_stale_hosts();
  const std::string n = std::to_string(index_);
  name_ = kNamePrefix + std::to_string(::getpid()) + "-" + n;
  host_link_ = "esync-h" + n;
  instance_link_ = "esync-i" + n;
  try {
    ip({"netns", "add", name_});
    ip({"link", "add", host_link_, "type", "veth", "peer", "name", instance_link_, "netns", name_});
    ip({"addr", "add", server_address() + "/30", "dev", host_link_});
    ip({"link", "set", host_link_, "up"});
    ip({"-n", name_, "addr", "add", host_address() + "/30", "dev", instance_link_});
    ip({"-n", name_, "link", "set", instance_link_, "up"});
    ip({"-n", name_, "link", "set", "lo", "up"});
  } catch (...) {
    remove();
    throw;
  }
}

IsolatedHost::~IsolatedHost() { remove(); }

void IsolatedHost::remove() {
  // Deleting one veth end deletes both; the namespace would take its end along too, but only
  // once the kernel gets to it, and a new host may want the names at once.
  for (const auto& args : {std::vector<std::string>{"link", "del", host_link_},
                           std::vector<std::string>{"netns", "del", name_}}) {
    try {
      run_command(system_program("ip"), args, {}, seconds(10));
    } catch (const std::exception&) {
    }
  }
  std::lock_guard lock(state_mutex);
  hosts_in_use.erase(index_);
}

std::string IsolatedHost::server_address() const { return "10.213." + std::to_string(index_) + ".1"; }

std::string IsolatedHost::host_address() const { return "10.213." + std::to_string(index_) + ".2"; }

std::vector<std::string> IsolatedHost::exec_prefix() const {
  return {system_program("ip").string(), "netns", "exec", name_};
}

CommandResult IsolatedHost::run(const fs::path& program, const std::vector<std::string>& args,
                                const std::map<std::string, std::string>& env,
                                std::chrono::milliseconds timeout) const {
  std::vector<std::string> full = exec_prefix();
  full.erase(full.begin());
  full.push_back(program.string());
  full.insert(full.end(), args.begin(), args.end());
  return run_command(system_program("ip"), full, env, timeout);
}

void IsolatedHost::iptables(const std::vector<std::string>& args) {
  std::vector<std::string> full = {"-w"};
  full.insert(full.end(), args.begin(), args.end());
  const auto result = run(system_program("iptables"), full, {}, seconds(10));
  if (result.exit_code != 0 || result.timed_out)
    throw std::runtime_error("iptables " + join_args(full) + " in " + name_ + " failed: " + result.shown());
}

void IsolatedHost::cut(int port) {
  if (cut_ports_.count(port) > 0) return;
  const std::string p = std::to_string(port);
  iptables({"-A", "OUTPUT", "-p", "tcp", "--dport", p, "-j", "DROP"});
  iptables({"-A", "INPUT", "-p", "tcp", "--sport", p, "-j", "DROP"});
  cut_ports_.insert(port);
}

void IsolatedHost::heal(int port) {
  if (cut_ports_.count(port) == 0) return;
  const std::string p = std::to_string(port);
  // A deleted rule's count is lost with it: keep it.
  const std::uint64_t before = counted_drops();
  iptables({"-D", "OUTPUT", "-p", "tcp", "--dport", p, "-j", "DROP"});
  iptables({"-D", "INPUT", "-p", "tcp", "--sport", p, "-j", "DROP"});
  dropped_before_ += before - std::min(before, counted_drops());
  cut_ports_.erase(port);
}

void IsolatedHost::cut_all() {
  if (all_cut_) return;
  iptables({"-A", "OUTPUT", "-o", instance_link_, "-j", "DROP"});
  iptables({"-A", "INPUT", "-i", instance_link_, "-j", "DROP"});
  all_cut_ = true;
}

void IsolatedHost::lossy(int percent) {
  if (percent < 1 || percent > 100) throw std::invalid_argument("lossy: percent must be 1-100, not " + std::to_string(percent));
  const auto rule = [this](const char* chain, const char* direction, int loss) {
    char probability[16];
    std::snprintf(probability, sizeof probability, "%.2f", loss / 100.0);
    return std::vector<std::string>{chain, direction, instance_link_, "-m", "statistic", "--mode", "random",
                                    "--probability", probability, "-j", "DROP"};
  };
  const auto with = [](const char* op, std::vector<std::string> args) {
    args.insert(args.begin(), op);
    return args;
  };
  if (loss_percent_ > 0) {
    const std::uint64_t before = counted_drops();
    iptables(with("-D", rule("OUTPUT", "-o", loss_percent_)));
    iptables(with("-D", rule("INPUT", "-i", loss_percent_)));
    dropped_before_ += before - std::min(before, counted_drops());
    loss_percent_ = 0;
  }
  iptables(with("-A", rule("OUTPUT", "-o", percent)));
  iptables(with("-A", rule("INPUT", "-i", percent)));
  loss_percent_ = percent;
}

void IsolatedHost::heal_all() {
  dropped_before_ += counted_drops();
  iptables({"-F", "OUTPUT"});
  iptables({"-F", "INPUT"});
  cut_ports_.clear();
  all_cut_ = false;
  loss_percent_ = 0;
}

std::uint64_t IsolatedHost::counted_drops() {
  // `iptables -L -v -x -n`: per rule "pkts bytes target prot opt in out source destination".
  std::uint64_t dropped = 0;
  for (const char* chain : {"INPUT", "OUTPUT"}) {
    const auto result = run(system_program("iptables"), {"-w", "-L", chain, "-v", "-x", "-n"}, {}, seconds(10));
    if (result.exit_code != 0 || result.timed_out)
      throw std::runtime_error("iptables -L " + std::string(chain) + " in " + name_ + " failed: " + result.shown());
    std::istringstream lines(result.stdout_text);
    std::string line;
    while (std::getline(lines, line)) {
      std::istringstream fields(line);
      std::string packets, bytes, target;
      if (!(fields >> packets >> bytes >> target) || target != "DROP") continue;
      if (!packets.empty() && std::all_of(packets.begin(), packets.end(), [](char c) { return c >= '0' && c <= '9'; }))
        dropped += std::stoull(packets);
    }
  }
  return dropped;
}

std::uint64_t IsolatedHost::dropped_packets() { return dropped_before_ + counted_drops(); }

}  // namespace etcd_sync::testing
