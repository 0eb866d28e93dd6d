#pragma once
// The one-shot commands (README, "Commands"). Each returns the process exit code.

#include "reactor/config/config.hpp"

namespace etcd_sync {

/// `config validate`: prints every error (file, line, key) and returns 1, or prints "ok" and 0.
int command_config_validate(const ConfigLoad& load);
/// `migrate`: applies pending schema migrations; 0, or 2/3/4 like start.
int command_migrate(const Config& config);
/// `sync --force`: sets failed etcd_wal rows back to pending (retry_count 0); the trigger's NOTIFY
/// wakes a running service.
int command_sync_force(const Config& config);
/// `status`: one report (text or JSON) of the service row, the checkpoint, etcd's revision and WAL
/// counts; with `watch`, again every `interval_seconds` until interrupted.
int command_status(const Config& config, bool json, bool watch, double interval_seconds);
/// `validate`: compares etcd under the prefix with the mirror's latest rows at one revision; prints
/// each difference; 1 when there is one. With `fix`, repairs through the resync path.
int command_validate(const Config& config, bool fix);

}  // namespace etcd_sync
