// Waiting on a condition with a deadline: how tests wait, never on fixed sleeps.
#pragma once

#include <chrono>
#include <functional>

namespace etcd_sync::testing {

/// Polls `pred` every `poll` until it returns true or `deadline` has passed; returns the result
/// of the last evaluation, so a condition that turns true at the deadline still counts.
bool wait_until(const std::function<bool()>& pred, std::chrono::milliseconds deadline,
                std::chrono::milliseconds poll = std::chrono::milliseconds(20));

}  // namespace etcd_sync::testing
