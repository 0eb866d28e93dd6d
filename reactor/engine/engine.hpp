#pragma once
// What every engine is to the service: started with a configuration snapshot, run until stopped,
// reconfigured in place at its own defined points. A configuration generation runs the elector
// and the listener on every instance; a term, started when this instance is elected and stopped
// when it no longer leads (or with its generation), runs the engines that write (mirror, outbox,
// history pruner), fenced with the term's epoch. Each group runs inside its own gate. The
// lifecycle that drives them is Service::lifecycle() (reactor/service/service.cpp; described in
// docs/architecture.md, "Lifecycle: Service, generation, term, engines").

#include "reactor/config/config.hpp"

#include <boost/asio/awaitable.hpp>

#include <memory>
#include <string>

namespace etcd_sync {

namespace asio = boost::asio;

class Engine {
 public:
  virtual ~Engine() = default;
  /// "mirror", "outbox", "history", "elector", "listener": the `component` of its log lines.
  virtual const char* name() const = 0;
  /// Runs until stop(). Outages are handled inside (backoff and retry); an exception that escapes
  /// is a bug, logged and escalated by the service.
  virtual asio::awaitable<void> run() = 0;
  /// Asks run() to return soon: no new work starts; work in flight finishes or is left safely
  /// pending for the next start.
  virtual void stop() = 0;
  /// After stop(), once the shutdown's grace period is over: ends every PostgreSQL call still in
  /// flight at once (its connection is closed; the transaction rolls back and its work stays
  /// pending for the next start). The service cancels the etcd calls itself.
  virtual void abort() = 0;
  /// A reload of the settings that apply in place, taken at the engine's next defined point.
  virtual void reconfigure(std::shared_ptr<const Config> config) = 0;
  /// The engine's state for status and the heartbeat, e.g. "watching" or "backing_off (etcd)".
  virtual std::string describe() const = 0;
};

}  // namespace etcd_sync
