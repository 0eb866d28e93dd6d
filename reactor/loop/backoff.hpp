#pragma once
// Exponential backoff with equal jitter ("Exponential Backoff And Jitter", AWS Architecture Blog):
// attempt n waits a uniform random time in [0.5, 1] * min(max, initial * 2^(n-1)), so a fleet of
// retries spreads out but never waits less than half the nominal delay (full jitter, [0, 1] *
// delay, would let a retry come at once).

#include <chrono>
#include <random>

namespace etcd_sync {

class Backoff {
 public:
  /// `initial` and `max` in milliseconds; `max` >= `initial` > 0.
  Backoff(std::chrono::milliseconds initial, std::chrono::milliseconds max, std::uint64_t seed = std::random_device{}());

  /// The delay before retry number `attempt` (1 = the first retry), jittered.
  std::chrono::milliseconds delay(int attempt);
  /// The delay before the next retry of a sequence, counting attempts internally.
  std::chrono::milliseconds next() { return delay(++attempts_); }
  /// Starts a new sequence (after a success).
  void reset() { attempts_ = 0; }
  int attempts() const { return attempts_; }
  void set_limits(std::chrono::milliseconds initial, std::chrono::milliseconds max);

  /// The un-jittered delay for `attempt`: min(max, initial * 2^(attempt-1)).
  std::chrono::milliseconds nominal(int attempt) const;

 private:
  std::chrono::milliseconds initial_;
  std::chrono::milliseconds max_;
  int attempts_ = 0;
  std::mt19937_64 random_;
};

}  // namespace etcd_sync
