#pragma once
// Configuration generations, as an engine sees them. An engine runs on an immutable snapshot of
// the configuration it was started with. A reload that changes a connection setting never reaches
// a running engine: the service stops that generation and starts a new one. A reload of settings
// that apply in place (batch size, retry, intervals, conflict resolution, log level) is offered
// here and taken only where the engine calls adopt(), so one operation never sees two
// configurations.

#include "reactor/config/config.hpp"

#include <memory>

namespace etcd_sync {

class ConfigView {
 public:
  explicit ConfigView(std::shared_ptr<const Config> config) : current_(std::move(config)) {}

  /// The snapshot in force.
  const Config& get() const { return *current_; }
  const Config* operator->() const { return current_.get(); }
  /// The snapshot in force, for work that must keep it past the next adopt() (a batch in flight).
  std::shared_ptr<const Config> snapshot() const { return current_; }

  /// From the service on reload: `next` is taken at the engine's next adopt().
  void offer(std::shared_ptr<const Config> next) { offered_ = std::move(next); }
  /// At a defined point of the engine: takes the offered snapshot, if any. True when it changed.
  bool adopt() {
    if (!offered_) return false;
    current_ = std::move(offered_);
    offered_.reset();
    return true;
  }

 private:
  std::shared_ptr<const Config> current_;
  std::shared_ptr<const Config> offered_;
};

}  // namespace etcd_sync
