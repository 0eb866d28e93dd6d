#include "reactor/ha/elector.hpp"

#include "reactor/engine/database.hpp"
#include "reactor/engine/host.hpp"
#include "reactor/ha/campaign.hpp"
#include "reactor/ha/reachability.hpp"
#include "reactor/keys/keys.hpp"
#include "reactor/loop/gate.hpp"
#include "reactor/loop/logging.hpp"
#include "reactor/loop/spawn.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <csignal>
#include <fstream>

#include <unistd.h>

namespace etcd_sync {

const char* to_string(HaState state) {
  switch (state) {
    case HaState::campaigning: return "campaigning";
    case HaState::standby: return "standby";
    case HaState::leader: return "leader";
    case HaState::demoting: return "demoting";
    case HaState::backing_off: return "backing_off";
    case HaState::stopped: return "stopped";
  }
  return "unknown";
}

namespace {

/// A predecessor with our instance_id counts as alive while its heartbeat is this fresh.
constexpr double kLiveHeartbeatSeconds = 3.0;
/// How often a leader looks at whether it can still do its work, and a standby that may not lead
/// whether it may again (reachability.hpp).
constexpr std::chrono::milliseconds kReachabilityCheck{250};

/// Whether process `pid` of this host runs (and is not a zombie).
bool process_alive(int pid) {
  if (pid <= 0 || ::kill(pid, 0) != 0) return false;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  auto paren = text.rfind(')');
  return paren == std::string::npos || paren + 2 >= text.size() || text[paren + 2] != 'Z';
}

// Plain functions, not coroutine code: g++ 12 mishandles class temporaries there.
std::string demote_reason(const std::string& why) { return why.empty() ? std::string("stopping") : why; }
LogFields demote_fields(const std::string& why) { return {{"why", why}}; }

std::string key_value(const std::string& instance_id) {
  return nlohmann::json{{"instance_id", instance_id}, {"host", host_name()}, {"pid", getpid()}}.dump();
}

/// A permission_denied error that names the permission the etcd role lacks.
SyncError named_permission(const SyncError& error, const std::string& needed) {
  if (error.kind() != ErrorKind::permission_denied) return error;
  return SyncError(ErrorKind::permission_denied,
                   "the etcd role etcd-sync runs as lacks " + needed + " (" + error.what() + ")", Peer::etcd);
}

/// The Txn that puts our key only where none is: else it reads the one there.
etcdserverpb::TxnRequest create_key_txn(const std::string& key, const std::string& value, std::int64_t lease) {
  etcdserverpb::TxnRequest txn;
  auto* compare = txn.add_compare();
  compare->set_key(key);
  compare->set_result(etcdserverpb::Compare::EQUAL);
  compare->set_target(etcdserverpb::Compare::CREATE);
  compare->set_create_revision(0);
  auto* put = txn.add_success()->mutable_request_put();
  put->set_key(key);
  put->set_value(value);
  put->set_lease(lease);
  txn.add_failure()->mutable_request_range()->set_key(key);
  return txn;
}

/// The Txn that deletes `key` only if it is still the one created at `create_revision`.
etcdserverpb::TxnRequest delete_key_txn(const std::string& key, std::int64_t create_revision) {
  etcdserverpb::TxnRequest txn;
  auto* compare = txn.add_compare();
  compare->set_key(key);
  compare->set_result(etcdserverpb::Compare::EQUAL);
  compare->set_target(etcdserverpb::Compare::CREATE);
  compare->set_create_revision(create_revision);
  txn.add_success()->mutable_request_delete_range()->set_key(key);
  return txn;
}

}  // namespace

Elector::Elector(asio::io_context& io, std::shared_ptr<const Config> config, EtcdClient& etcd, SyncStats& stats,
                 Hooks hooks)
    : io_(io),
      config_(std::move(config)),
      etcd_(etcd),
      stats_(stats),
      hooks_(std::move(hooks)),
      status_("elector", HaState::campaigning, HaState::backing_off, stats),
      pg_(io, config_->postgresql.conninfo, "election", config_->postgresql.request_timeout),
      key_(campaign_key(config_->ha.election_prefix, config_->ha.instance_id)),
      wakeup_(io),
      keepalive_wakeup_(io),
      reachability_wakeup_(io) {}

void Elector::interrupt() {
  wakeup_.notify();
  keepalive_wakeup_.notify();
  reachability_wakeup_.notify();
  if (watch_) watch_->cancel();
}

void Elector::stop() {
  stopping_ = true;
  interrupt();
}

void Elector::demoted() {
  demoted_ = true;
  wakeup_.notify();
}

void Elector::step_down(const std::string& why) {
  if (status_.state() != HaState::leader || !lost_why_.empty()) return;
  lost_why_ = why;
  interrupt();
}

void Elector::lease_gone(const std::string& why) {
  if (clock_) clock_->lost();
  if (!lost_why_.empty()) return;
  lost_why_ = why;
  log_warn("etcd lease lost", {{"component", "elector"}, {"lease", lease_id_}, {"why", why}});
  interrupt();
}

asio::awaitable<void> Elector::run() {
  while (!stopping_) {
    config_.adopt();
    if (auto refusal = lead_refusal(stats_.postgresql)) {
      // Campaigning would only put this instance in line to lead without PostgreSQL.
      status_.set(HaState::backing_off, {{"why", *refusal + "; not campaigning"}});
      co_await wakeup_.wait(kReachabilityCheck);
      continue;
    }
    lost_why_.clear();
    demoted_ = false;
    epoch_ = 0;
    std::optional<SyncError> failure;
    std::exception_ptr fatal;
    Gate round(io_);
    try {
      status_.set(HaState::campaigning);
      co_await etcd_.ensure_connected();
      co_await grant_lease();
      spawn(io_, round, keep_alive(), "elector keep-alive");
      epoch_ = co_await put_own_key();
      status_.working(Peer::etcd);
      co_await wait_until_leading();
      elected_revision_ = co_await current_revision();
      if (lost_why_.empty() && !stopping_) {
        status_.set(HaState::leader, {{"epoch", epoch_}, {"key", key_}});
        stats_.is_leader = true;
        ++stats_.leader_changes;
        hooks_.elected(LeaderTerm{epoch_, key_, effective_prefix(config_->etcd.prefix), elected_revision_});
        spawn(io_, round, watch_reachability(), "elector reachability");
        co_await hold_leadership();
        const std::string why = demote_reason(lost_why_);
        status_.set(HaState::demoting, demote_fields(why));
        stats_.is_leader = false;
        ++stats_.leader_changes;
        hooks_.lost(why);
        while (!demoted_) co_await wakeup_.wait();
      }
    } catch (const FatalError&) {
      fatal = std::current_exception();
    } catch (const SyncError& error) {
      if (error.kind() == ErrorKind::permission_denied) fatal = std::current_exception();
      failure = error;
    }
    // The round ends: no more keep-alives; the lease (and with it our key) goes, so a standby (or
    // our next round) takes over at once instead of waiting out the ttl.
    if (lost_why_.empty()) lost_why_ = "round over";
    keepalive_wakeup_.notify();
    reachability_wakeup_.notify();
    co_await round.close();
    co_await revoke();
    pg_.close();
    if (fatal) std::rethrow_exception(fatal);
    if (failure && !stopping_) {
      const auto delay = status_.failed(*failure, config_->sync.retry);
      co_await wakeup_.wait(delay);
      // PostgreSQL is only the elector's to look at a predecessor with its instance_id: its
      // reachability is the listener's to say. Left marked, the failure would keep this instance
      // from campaigning (lead_refusal) with nothing to clear it.
      if (status_.failing_peer() == Peer::postgresql) status_.forget_peer();
    }
  }
  status_.clear();
  status_.set(HaState::stopped);
}

asio::awaitable<void> Elector::grant_lease() {
  etcdserverpb::LeaseGrantRequest request;
  const auto ttl_seconds = (config_->ha.ttl.count() + 999) / 1000;
  request.set_ttl(ttl_seconds);
  const auto sent = LeaseClock::clock::now();
  etcdserverpb::LeaseGrantResponse response;
  std::optional<SyncError> failure;
  try {
    response = co_await etcd_.lease_grant(request);
  } catch (const SyncError& error) {
    failure = named_permission(error, "the permission to grant leases (LeaseGrant)");
  }
  if (failure) throw *failure;
  if (!response.error().empty())
    throw SyncError(ErrorKind::transient, "etcd LeaseGrant: " + response.error(), Peer::etcd);
  lease_id_ = response.id();
  const auto ttl = std::chrono::milliseconds(response.ttl() * 1000);
  clock_.emplace(ttl, lease_margin(ttl));
  clock_->granted(sent);
  log_debug("etcd lease granted", {{"component", "elector"}, {"lease", lease_id_}, {"ttl_s", response.ttl()}});
}

asio::awaitable<std::int64_t> Elector::current_revision() {
  etcdserverpb::RangeRequest request;
  request.set_key(key_);
  request.set_count_only(true);
  auto response = co_await etcd_.range(request);  // linearizable: no member's stale revision
  co_return response.header().revision();
}

asio::awaitable<std::int64_t> Elector::put_own_key() {
  const auto value = key_value(config_->ha.instance_id);
  const std::string needed = "readwrite permission on [ha] election_prefix \"" + config_->ha.election_prefix + "\"";
  for (;;) {
    etcdserverpb::TxnResponse response;
    std::optional<SyncError> failure;
    try {
      response = co_await etcd_.txn(create_key_txn(key_, value, lease_id_));
    } catch (const SyncError& error) {
      failure = named_permission(error, needed);
    }
    if (failure) throw *failure;
    if (response.succeeded()) co_return response.header().revision();
    if (response.responses_size() == 0 || response.responses(0).response_range().kvs_size() == 0) continue;  // gone meanwhile
    const auto existing = response.responses(0).response_range().kvs(0);
    if (existing.lease() == lease_id_) co_return existing.create_revision();
    co_await replace_predecessor(existing);
    co_await etcd_.txn(delete_key_txn(key_, existing.create_revision()));
  }
}

asio::awaitable<void> Elector::replace_predecessor(const mvccpb::KeyValue& existing) {
  // Our key, left by an earlier run with our instance_id (a restart, a crash) or held by another
  // live instance configured with the same instance_id (an operator's mistake: refuse to start).
  co_await open_database(pg_, config_.get());
  auto row = co_await pg_.query(
      "SELECT host, pid, state, extract(epoch FROM now() - heartbeat_at) FROM etcd_sync_service WHERE instance_id = $1",
      pg_params(PgParam::text(config_->ha.instance_id)));
  status_.working(Peer::postgresql);
  const std::string me = host_name();
  bool alive = false;
  std::string other = "an unknown process";
  if (row.rows() > 0 && row.optional_text(0, 2).value_or("") != "stopped") {
    const std::string host = row.optional_text(0, 0).value_or("");
    const int pid = static_cast<int>(row.int64(0, 1, 0));
    const double age = row.is_null(0, 3) ? 1e9 : std::stod(std::string(row.text(0, 3)));
    other = "host " + host + " pid " + std::to_string(pid) + " (heartbeat " + std::to_string(age) + " s ago)";
    if (host == me)
      alive = pid != getpid() && process_alive(pid);
    else
      alive = age < kLiveHeartbeatSeconds;
  }
  if (alive)
    throw FatalError(1, "[ha] instance_id \"" + config_->ha.instance_id + "\" is already used by a live instance: " +
                            other + "; this instance is host " + me + " pid " + std::to_string(getpid()) +
                            ". Give each instance its own instance_id");
  log_info("taking over the election key of an earlier run of this instance",
           {{"component", "elector"}, {"key", key_}, {"create_revision", existing.create_revision()}, {"previous", other}});
}

asio::awaitable<void> Elector::wait_until_leading() {
  while (lost_why_.empty() && !stopping_) {
    auto look = co_await etcd_.range(predecessor_range(config_->ha.election_prefix, epoch_));
    auto step = read_predecessor(look);
    if (step.leads) {
      if (auto refusal = lead_refusal(stats_.postgresql)) {
        // Its turn, but it could not do the work: the next in line (or this one, once PostgreSQL
        // answers again) leads instead.
        lost_why_ = *refusal + "; not taking the lead";
        log_warn("not taking the lead", {{"component", "elector"}, {"why", lost_why_}});
        co_return;
      }
      // Confirm our own key is still there and ours before leading: the look above says only that
      // no key was created before ours, not that ours still exists (its lease may have expired, or
      // someone deleted it, while this instance waited).
      const bool ours = co_await own_key_is_ours();
      if (!ours) throw SyncError(ErrorKind::transient, "our election key vanished while campaigning", Peer::etcd);
      co_return;
    }
    if (status_.state() != HaState::standby)
      status_.set(HaState::standby, {{"epoch", epoch_}, {"waits_for", campaign_instance(config_->ha.election_prefix, step.wait_for)}});
    const bool deleted = co_await wait_deleted(step.wait_for, step.watch_from, true);
    if (!deleted && (!lost_why_.empty() || stopping_)) co_return;
  }
}

asio::awaitable<bool> Elector::own_key_is_ours() {
  etcdserverpb::RangeRequest request;
  request.set_key(key_);
  auto response = co_await etcd_.range(request);
  co_return response.kvs_size() == 1 && response.kvs(0).create_revision() == epoch_ && response.kvs(0).lease() == lease_id_;
}

asio::awaitable<bool> Elector::wait_deleted(const std::string& key, std::int64_t from, bool also_own) {
  WatchStream stream(etcd_);
  etcdserverpb::WatchCreateRequest create;
  if (also_own && key != key_) {
    // One watch over the range from the lower of the two keys to just past the higher; events of
    // the other campaign keys between them are passed over.
    create.set_key(std::min(key, key_));
    create.set_range_end(std::max(key, key_) + std::string(1, '\0'));
  } else {
    create.set_key(key);
  }
  create.set_start_revision(from);
  co_await stream.start(create);
  watch_ = &stream;
  bool deleted = false;
  bool own_gone = false;
  bool broken = false;
  while (!deleted && lost_why_.empty() && !stopping_) {
    auto response = co_await stream.read();
    if (!response) {
      broken = true;
      break;
    }
    if (response->compact_revision() > 0 || response->canceled()) {
      broken = true;
      break;
    }
    for (const auto& event : response->events()) {
      // Deleted, or replaced by a key of another create_revision: either way not the key waited for.
      const bool gone = event.type() == mvccpb::Event::DELETE || event.kv().create_revision() != epoch_;
      if (event.kv().key() == key && (event.type() == mvccpb::Event::DELETE || (key == key_ && gone))) deleted = true;
      if (also_own && key != key_ && event.kv().key() == key_ && gone) own_gone = true;
    }
    if (own_gone) break;
  }
  watch_ = nullptr;
  stream.cancel();
  auto ended = co_await stream.finish();
  if (own_gone)
    throw SyncError(ErrorKind::transient, "our election key " + key_ + " was deleted while standing by", Peer::etcd);
  if (deleted) co_return true;
  if (!lost_why_.empty() || stopping_) co_return false;
  if (broken) throw ended;
  co_return false;
}

asio::awaitable<void> Elector::hold_leadership() {
  etcdserverpb::RangeRequest request;
  request.set_key(key_);
  while (lost_why_.empty() && !stopping_) {
    std::optional<SyncError> failure;
    try {
      auto response = co_await etcd_.range(request);
      if (response.kvs_size() != 1 || response.kvs(0).create_revision() != epoch_) {
        lost_why_ = "the election key " + key_ + " was deleted";
        break;
      }
      const bool deleted = co_await wait_deleted(key_, response.header().revision() + 1);
      if (deleted) {
        lost_why_ = "the election key " + key_ + " was deleted";
        break;
      }
    } catch (const SyncError& error) {
      failure = error;
    }
    // etcd unreachable: we still lead until the lease counts as lost (the keep-alive decides).
    if (failure && lost_why_.empty() && !stopping_) co_await wakeup_.wait(std::chrono::milliseconds(200));
  }
}

asio::awaitable<void> Elector::watch_reachability() {
  while (lost_why_.empty() && !stopping_) {
    if (auto why = resign_reason(stats_.postgresql, stats_.etcd, config_->ha.ttl, std::chrono::steady_clock::now())) {
      log_warn("resigning the lead: this instance cannot do its work", {{"component", "elector"}, {"why", *why}});
      step_down(*why);
      co_return;
    }
    co_await reachability_wakeup_.wait(kReachabilityCheck);
  }
}

asio::awaitable<void> Elector::keep_alive() {
  etcdserverpb::LeaseKeepAliveRequest request;
  request.set_id(lease_id_);
  const auto interval = keepalive_interval(clock_->ttl());
  while (lost_why_.empty()) {
    KeepAliveStream stream(etcd_, "LeaseKeepAlive");
    Gate reader(io_);
    bool opened = false;
    try {
      auto& stub = etcd_.lease_stub();
      co_await stream.start([&stub](grpc::ClientContext* context, grpc::CompletionQueue* queue) {
        return stub.PrepareAsyncLeaseKeepAlive(context, queue);
      });
      opened = true;
    } catch (const SyncError& error) {
      log_debug("lease keep-alive stream did not open", {{"component", "elector"}, {"error", error.what()}});
    }
    keepalive_stream_broken_ = !opened;
    if (opened) spawn(io_, reader, read_keepalives(stream), "elector keep-alive reader");
    auto next_send = LeaseClock::clock::now();
    while (lost_why_.empty() && !keepalive_stream_broken_) {
      const auto now = LeaseClock::clock::now();
      if (clock_->expired(now)) {
        lease_gone("no keep-alive was acknowledged within the lease's ttl");
        break;
      }
      if (const auto oldest = clock_->oldest_unanswered();
          oldest && now - *oldest >= keepalive_silence_limit(clock_->ttl())) {
        // The member holds the connection open but answers nothing (frozen, cut off): renew the
        // lease through another member before it counts as lost, and watch there too.
        log_warn("lease keep-alive stream silent; opening it on another member",
                 {{"component", "elector"}, {"endpoint", stream.endpoint()},
                  {"unanswered_ms", std::chrono::duration_cast<std::chrono::milliseconds>(now - *oldest).count()}});
        SyncError silent(ErrorKind::transient,
                         "etcd LeaseKeepAlive at " + stream.endpoint() + ": no answer within " +
                             std::to_string(keepalive_silence_limit(clock_->ttl()).count()) + " ms",
                         Peer::etcd);
        status_.peer_failing(silent.at(stream.endpoint()));
        if (etcd_.current_endpoint() == stream.endpoint()) etcd_.fail_over();
        // A standby's watch on its predecessor there would miss the deletion that makes it lead:
        // it watches again on another member. (A leader's watch on its own key is left: cancelling
        // it would put the leader into a Range on the silent member just when the lease may
        // count as lost, and the keep-alives through another member keep the key.)
        if (watch_ && watch_->endpoint() == stream.endpoint() && status_.state() != HaState::leader) watch_->cancel();
        break;
      }
      if (now >= next_send) {
        clock_->sent(now);
        next_send = now + interval;
        const bool written = co_await stream.write(request);
        if (!written) break;
      }
      // Wake for the next keep-alive, the lease's deadline, or the moment the oldest unanswered
      // one counts as silent.
      const auto wake = keepalive_wake_time(*clock_, next_send);
      co_await keepalive_wakeup_.wait_until(wake);
    }
    clock_->stream_lost();
    stream.cancel();
    co_await reader.close();
    co_await stream.finish();
    // A broken stream is opened again (perhaps on another endpoint) while the lease may still live.
    if (lost_why_.empty()) {
      if (clock_->expired(LeaseClock::clock::now())) {
        lease_gone("no keep-alive was acknowledged within the lease's ttl");
        break;
      }
      co_await keepalive_wakeup_.wait_until(
          std::min(LeaseClock::clock::now() + std::chrono::milliseconds(200), clock_->deadline()));
    }
  }
}

asio::awaitable<void> Elector::read_keepalives(KeepAliveStream& stream) {
  for (;;) {
    auto response = co_await stream.read();
    if (!response) break;
    if (!clock_->answered(response->ttl())) {
      lease_gone("etcd says the lease has expired");
      break;
    }
    status_.working(Peer::etcd);
  }
  keepalive_stream_broken_ = true;
  keepalive_wakeup_.notify();
}

asio::awaitable<void> Elector::revoke() {
  if (lease_id_ == 0) co_return;
  const auto lease = lease_id_;
  lease_id_ = 0;
  etcdserverpb::LeaseRevokeRequest request;
  request.set_id(lease);
  try {
    co_await etcd_.lease_revoke(request);
    log_debug("etcd lease revoked", {{"component", "elector"}, {"lease", lease}});
  } catch (const SyncError& error) {
    // It expires by itself within the ttl.
    log_debug("etcd lease not revoked", {{"component", "elector"}, {"lease", lease}, {"error", error.what()}});
  }
}

}  // namespace etcd_sync
