#pragma once
// When our etcd lease counts as lost, on this process's steady clock. Pure: unit-tested.
//
// etcd renews a lease for its TTL from the moment it handles a keep-alive, and a keep-alive is
// handled after it was sent, so the lease surely lives until (send time of the last acknowledged
// keep-alive) + TTL. We count it as lost a margin before that: a pause of the process (SIGSTOP, a
// stalled loop) or lost keep-alives cannot then leave us believing we lead after etcd expired the
// lease and another instance took over.

#include <algorithm>
#include <chrono>
#include <deque>
#include <optional>

namespace etcd_sync {

class LeaseClock {
 public:
  using clock = std::chrono::steady_clock;

  /// `ttl`: the lease's TTL as granted; `margin`: how much sooner than ttl it counts as lost.
  LeaseClock(std::chrono::milliseconds ttl, std::chrono::milliseconds margin) : ttl_(ttl), margin_(margin) {}

  /// The lease was granted by a request sent at `sent` (its TTL runs from then at the latest).
  void granted(clock::time_point sent) { acked_ = sent; }
  /// A keep-alive was sent at `at`; its answer will come in order.
  void sent(clock::time_point at) { outstanding_.push_back(at); }
  /// The oldest outstanding keep-alive was answered with `ttl_left_seconds` (0 or less: the lease
  /// is gone). Returns false when the lease is gone.
  bool answered(long long ttl_left_seconds) {
    if (outstanding_.empty()) return ttl_left_seconds > 0;
    const auto at = outstanding_.front();
    outstanding_.pop_front();
    if (ttl_left_seconds <= 0) {
      gone_ = true;
      return false;
    }
    acked_ = std::max(acked_.value_or(at), at);
    return true;
  }
  /// When the oldest keep-alive still unanswered was sent; nullopt when none is.
  std::optional<clock::time_point> oldest_unanswered() const {
    if (outstanding_.empty()) return std::nullopt;
    return outstanding_.front();
  }
  /// A keep-alive stream broke: its unanswered keep-alives will never be answered.
  void stream_lost() { outstanding_.clear(); }
  /// The lease is known to be gone (etcd said so, or it was revoked).
  void lost() { gone_ = true; }

  /// When the lease counts as lost: the last acknowledged send + ttl - margin.
  clock::time_point deadline() const {
    if (gone_ || !acked_) return clock::time_point::min();
    return *acked_ + ttl_ - margin_;
  }
  bool expired(clock::time_point now) const { return now >= deadline(); }
  std::chrono::milliseconds ttl() const { return ttl_; }

 private:
  std::chrono::milliseconds ttl_;
  std::chrono::milliseconds margin_;
  std::optional<clock::time_point> acked_;
  std::deque<clock::time_point> outstanding_;
  bool gone_ = false;
};

/// The margin for a lease of `ttl`: a fifth of it, between 500 ms and 2 s.
inline std::chrono::milliseconds lease_margin(std::chrono::milliseconds ttl) {
  return std::clamp(ttl / 5, std::chrono::milliseconds(500), std::chrono::milliseconds(2000));
}

/// How often keep-alives are sent for a lease of `ttl`: a third of it (as etcd's client does).
inline std::chrono::milliseconds keepalive_interval(std::chrono::milliseconds ttl) { return ttl / 3; }

/// How long a keep-alive may stay unanswered before its stream counts as silent (its member frozen
/// or cut off with the connection open) and is opened again on another member: a sixth of the ttl,
/// between 500 ms and 2 s. A keep-alive sent one interval after the last acknowledged one is
/// given up on interval + limit after it, well before the lease counts as lost (ttl - margin), so
/// the lease is renewed through a live member in time.
inline std::chrono::milliseconds keepalive_silence_limit(std::chrono::milliseconds ttl) {
  return std::clamp(ttl / 6, std::chrono::milliseconds(500), std::chrono::milliseconds(2000));
}

/// When the keep-alive loop wakes next: the next keep-alive's time `next_send`, the lease's
/// deadline, or the moment the oldest unanswered keep-alive counts as silent, whichever is first.
inline LeaseClock::clock::time_point keepalive_wake_time(const LeaseClock& clock, LeaseClock::clock::time_point next_send) {
  auto wake = std::min(next_send, clock.deadline());
  if (const auto oldest = clock.oldest_unanswered()) wake = std::min(wake, *oldest + keepalive_silence_limit(clock.ttl()));
  return wake;
}

}  // namespace etcd_sync
