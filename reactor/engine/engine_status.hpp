#pragma once
// The status every engine keeps, in one helper: its state (an enum class with to_string), the
// peer it is failing on, "log the failure once per outage", and the backoff before the next
// attempt with limits from the engine's current configuration.

#include "adapters/errors.hpp"
#include "reactor/config/config.hpp"
#include "reactor/engine/sync_stats.hpp"
#include "reactor/loop/backoff.hpp"
#include "reactor/loop/logging.hpp"

#include <algorithm>
#include <chrono>
#include <initializer_list>
#include <optional>
#include <string>
#include <vector>

namespace etcd_sync {

/// The name of a peer in logs and status: "etcd", "postgresql", or "" for unknown.
const char* to_string(Peer peer);

/// Counts an engine's failing peer in SyncStats (PeerHealth), one peer at a time.
class PeerMark {
 public:
  explicit PeerMark(SyncStats& stats) : stats_(stats) {}
  PeerMark(const PeerMark&) = delete;
  PeerMark& operator=(const PeerMark&) = delete;
  ~PeerMark() { clear(); }
  /// The engine now fails on `error.peer()` (unknown: on neither). The first engine to fail on a
  /// peer begins its outage: a warn line "peer unreachable" (for a transient error, else "peer
  /// failing") naming the peer, the endpoint and the error, and PeerHealth::failing_since.
  void failing(const SyncError& error);
  /// The engine worked with `peer`: it is seen, and no longer failing if it was. The last engine to
  /// recover ends the outage: an info line "peer reachable again" with how long it lasted.
  void working(Peer peer);
  /// The engine stops counting (it is stopping): ends nothing in the logs, since nothing was seen
  /// working.
  void clear() { move_to(Peer::unknown, nullptr, false); }
  Peer peer() const { return peer_; }

 private:
  PeerHealth* health(Peer peer);
  void move_to(Peer peer, const SyncError* error, bool recovered);
  SyncStats& stats_;
  Peer peer_ = Peer::unknown;
};

/// The longest wait between two attempts during an outage (EngineStatus::failed).
inline constexpr std::chrono::milliseconds kOutageRetry{1000};

template <class State>
class EngineStatus {
 public:
  /// `component` names the engine in log lines. `backing_off` is the state failed() enters.
  /// Changes into a `routine` state (idle <-> applying flips with every batch) are logged at debug,
  /// into `backing_off` at warn, the rest at info.
  EngineStatus(std::string component, State initial, State backing_off, SyncStats& stats,
               std::initializer_list<State> routine = {})
      : component_(std::move(component)),
        state_(initial),
        backing_off_(backing_off),
        routine_(routine),
        stats_(stats),
        peer_(stats),
        backoff_(std::chrono::milliseconds(1000), std::chrono::milliseconds(30000)) {}

  State state() const { return state_; }
  /// The peer of the outage in progress, or Peer::unknown.
  Peer failing_peer() const { return peer_.peer(); }
  /// "backing_off (etcd)" while failing on a known peer, else to_string(state()).
  std::string describe() const {
    std::string text = to_string(state_);
    if (state_ == backing_off_ && peer_.peer() != Peer::unknown) text += std::string(" (") + to_string(peer_.peer()) + ")";
    return text;
  }
  /// Failed attempts since the engine last worked.
  int attempts() const { return backoff_.attempts(); }

  /// Moves to `to`, logging the change once (with `fields`). No-op when already there.
  void set(State to, const LogFields& fields = {}) {
    if (to == state_) return;
    LogFields all{{"component", component_}, {"from", to_string(state_)}, {"to", to_string(to)}};
    all.insert(all.end(), fields.begin(), fields.end());
    state_ = to;
    bool routine = std::find(routine_.begin(), routine_.end(), to) != routine_.end();
    log(to == backing_off_ ? LogLevel::warn : routine ? LogLevel::debug : LogLevel::info,
        component_ + " state changed", all);
  }

  /// Records a failure: the backing-off state (logged with the error when it is news), the peer
  /// marked as failing, stats.last_error. Returns the wait before the next attempt: exponential
  /// with jitter within `retry`'s limits (read on every call, so a reload applies at once), and at
  /// most kOutageRetry for a transient error of a known peer.
  std::chrono::milliseconds failed(const SyncError& error, const RetryConfig& retry) {
    stats_.last_error = error.what();
    peer_.failing(error);
    LogFields fields{{"error", error.what()}, {"kind", to_string(error.kind())}};
    if (error.peer() != Peer::unknown) fields.push_back({"peer", to_string(error.peer())});
    if (state_ != backing_off_) {
      set(backing_off_, fields);
    } else if (last_error_ != error.what()) {
      fields.insert(fields.begin(), {"component", component_});
      log_warn(component_ + " still backing off", fields);
    }
    last_error_ = error.what();
    backoff_.set_limits(retry.initial_backoff, retry.max_backoff);
    auto delay = backoff_.next();
    // An outage (a peer unreachable, or past its deadline) is retried on a fresh connection at
    // least every kOutageRetry, so work resumes within about a second of the heal instead of
    // after the backoff's tail; each attempt is bounded by its own connect or request deadline.
    if (error.transient() && error.peer() != Peer::unknown) delay = std::min(delay, kOutageRetry);
    log_debug(component_ + " retry scheduled",
              {{"component", component_}, {"attempt", backoff_.attempts()}, {"delay_ms", delay.count()}});
    return delay;
  }

  /// Marks `error.peer()` as failing (the outage's log line, stats.last_error) without a state
  /// change or a backoff: for an engine that goes on in its state while a peer does not answer
  /// (the elector's keep-alives, until the lease counts as lost). working() ends it.
  void peer_failing(const SyncError& error) {
    stats_.last_error = error.what();
    peer_.failing(error);
  }
  /// The engine worked with `peer`: clears that peer's outage and, once nothing is failing, the
  /// backoff. Does not change the state (the engine sets the state it is in now).
  void working(Peer peer) {
    peer_.working(peer);
    if (peer_.peer() == Peer::unknown) {
      backoff_.reset();
      last_error_.clear();
    }
  }
  /// Stops counting this engine on the peer it failed on, without saying it works again (no log
  /// line, the backoff kept): for an engine whose use of that peer is over.
  void forget_peer() { peer_.clear(); }
  /// Forgets the outage (the engine is stopping or starting over).
  void clear() {
    peer_.clear();
    backoff_.reset();
    last_error_.clear();
  }

 private:
  std::string component_;
  State state_;
  State backing_off_;
  std::vector<State> routine_;
  SyncStats& stats_;
  PeerMark peer_;
  Backoff backoff_;
  std::string last_error_;
};

}  // namespace etcd_sync
