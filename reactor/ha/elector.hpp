#pragma once
// Leader election through etcd, on the reactor (campaign.hpp has the recipe). The elector holds
// this instance's lease (granted, kept alive from the event loop every ttl/3, counted as lost per
// lease_clock.hpp) and its campaign key, waits for its predecessor's key to be deleted, and tells
// the service when this instance starts or stops leading. The service runs the leader's engines
// (a term) in between.

#include "adapters/etcd_client.hpp"
#include "adapters/etcd_watch.hpp"
#include "adapters/pg_connection.hpp"
#include "reactor/engine/config_view.hpp"
#include "reactor/engine/engine.hpp"
#include "reactor/engine/engine_status.hpp"
#include "reactor/engine/fencing.hpp"
#include "reactor/ha/lease_clock.hpp"
#include "reactor/loop/wakeup.hpp"

#include <functional>
#include <optional>
#include <stdexcept>
#include <string>

namespace etcd_sync {

/// Where this instance stands in the election; each change is logged once.
enum class HaState {
  campaigning,  ///< getting a lease and putting its campaign key
  standby,      ///< waiting for its predecessor's key to be deleted; ready to lead at once
  leader,       ///< leads: the term's engines run
  demoting,     ///< stopped leading (lease lost, key deleted, fenced, stopping): its engines are being stopped
  backing_off,  ///< etcd unreachable: waiting before campaigning again
  stopped,      ///< run() has returned
};
const char* to_string(HaState state);

/// A configuration the service cannot run with, found at runtime (the exit code says which).
class FatalError : public std::runtime_error {
 public:
  FatalError(int exit_code, const std::string& message) : std::runtime_error(message), exit_code_(exit_code) {}
  int exit_code() const { return exit_code_; }

 private:
  int exit_code_;
};

class Elector final : public Engine {
 public:
  struct Hooks {
    std::function<void(LeaderTerm)> elected;           ///< this instance leads now: start its term
    std::function<void(const std::string& why)> lost;  ///< it no longer leads: stop the term, then demoted()
  };

  /// `config->ha.instance_id` must be resolved (not empty).
  Elector(asio::io_context& io, std::shared_ptr<const Config> config, EtcdClient& etcd, SyncStats& stats, Hooks hooks);

  const char* name() const override { return "elector"; }
  /// Campaigns, leads, stands by again, until stop(). A clash of instance_id with a live instance
  /// throws FatalError (exit 1); an etcd role without lease or election-prefix permissions throws
  /// SyncError(permission_denied) (exit 3).
  asio::awaitable<void> run() override;
  /// Stops campaigning; a leader first reports lost() and waits for demoted(). The lease is
  /// revoked on the way out, so the next instance leads at once.
  void stop() override;
  void abort() override { pg_.close(); }
  void reconfigure(std::shared_ptr<const Config> config) override { config_.offer(std::move(config)); }
  std::string describe() const override { return status_.describe(); }
  HaState state() const { return status_.state(); }
  bool leads() const { return status_.state() == HaState::leader; }

  /// The service has stopped the term that lost() ended: the elector gives up its key and campaigns
  /// again (or, when stopping, ends).
  void demoted();
  /// The term was fenced (another instance's epoch in PostgreSQL, or its Txns deposed): step down
  /// as if the lease were lost.
  void step_down(const std::string& why);

 private:
  asio::awaitable<void> grant_lease();
  asio::awaitable<std::int64_t> put_own_key();
  /// etcd's current revision, from a linearizable Range of our key. Throws SyncError.
  asio::awaitable<std::int64_t> current_revision();
  /// Deletes our key left by a predecessor with our instance_id, unless that one still lives.
  asio::awaitable<void> replace_predecessor(const mvccpb::KeyValue& existing);
  asio::awaitable<void> wait_until_leading();
  /// Waits until `key` is deleted (true), or the wait must end (lease lost, stop: false). `from`:
  /// the revision to watch from. With `also_own` (a standby waiting for its predecessor) our own
  /// key is watched too: its deletion throws SyncError(transient), and the elector campaigns again.
  asio::awaitable<bool> wait_deleted(const std::string& key, std::int64_t from, bool also_own = false);
  asio::awaitable<bool> own_key_is_ours();
  asio::awaitable<void> hold_leadership();
  asio::awaitable<void> keep_alive();
  /// While leading: resigns (step_down) once resign_reason() gives a reason.
  asio::awaitable<void> watch_reachability();
  asio::awaitable<void> read_keepalives(KeepAliveStream& stream);
  asio::awaitable<void> revoke();
  void lease_gone(const std::string& why);
  void interrupt();

  asio::io_context& io_;
  ConfigView config_;
  EtcdClient& etcd_;
  SyncStats& stats_;
  Hooks hooks_;
  EngineStatus<HaState> status_;
  PgConnection pg_;  ///< only to look at a predecessor with our instance_id
  std::string key_;
  std::int64_t lease_id_ = 0;
  std::int64_t epoch_ = 0;
  std::int64_t elected_revision_ = 0;  ///< etcd's revision (a linearizable read) when elected
  std::optional<LeaseClock> clock_;
  std::string lost_why_;    ///< set when the lease is gone or leadership must end
  bool stopping_ = false;
  bool demoted_ = false;
  Wakeup wakeup_;           ///< interrupt(): the lease is gone, step_down, demoted, stop
  Wakeup keepalive_wakeup_;
  Wakeup reachability_wakeup_;
  WatchStream* watch_ = nullptr;  ///< the watch the main loop waits on, cancelled by interrupt()
  bool keepalive_stream_broken_ = false;
};

}  // namespace etcd_sync
