// The fault suite's randomness: every decision comes from a PRNG seeded from the run's seed, one
// stream per writer and one for the faults, so a seed replays the same decisions (the timing of
// threads and servers still varies).
#pragma once

#include <cstddef>
#include <cstdint>
#include <random>
#include <vector>

namespace etcd_sync::chaos {

/// A seed for stream `stream` of the run seeded with `seed` (splitmix64 of the pair), so the
/// streams' sequences do not overlap.
inline std::uint64_t stream_seed(std::uint64_t seed, std::uint64_t stream) {
  std::uint64_t z = seed + 0x9e3779b97f4a7c15ULL * (stream + 1);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

class Random {
 public:
  explicit Random(std::uint64_t seed) : engine_(seed) {}
  /// True with probability `p`.
  bool chance(double p) { return std::uniform_real_distribution<double>(0, 1)(engine_) < p; }
  /// Uniform in [lo, hi].
  double uniform(double lo, double hi) { return std::uniform_real_distribution<double>(lo, hi)(engine_); }
  /// Uniform in [lo, hi].
  std::int64_t between(std::int64_t lo, std::int64_t hi) {
    return std::uniform_int_distribution<std::int64_t>(lo, hi)(engine_);
  }
  /// One element of a non-empty vector.
  template <class T>
  const T& pick(const std::vector<T>& items) {
    return items[static_cast<std::size_t>(between(0, static_cast<std::int64_t>(items.size()) - 1))];
  }

 private:
  std::mt19937_64 engine_;
};

}  // namespace etcd_sync::chaos
