// etcd-sync: keeps etcd (v3) and PostgreSQL in sync in both directions. See README.md.

#include "reactor/commands/commands.hpp"
#include "reactor/config/config.hpp"
#include "reactor/loop/logging.hpp"
#include "reactor/service/service.hpp"

#include <CLI/CLI.hpp>

#include <iostream>
#include <string>
#include <vector>

using namespace etcd_sync;

int main(int argc, char** argv) {
  CLI::App app{"etcd-sync: keeps etcd (v3 API) and PostgreSQL in sync in both directions", "etcd-sync"};
  app.set_version_flag("--version", std::string("etcd-sync ") + ETCD_SYNC_VERSION);
  app.require_subcommand(1);

  ConfigOverrides overrides;
  std::string config_file, postgres_dsn, etcd_dsn, log_level;
  std::vector<CLI::Option*> postgres_dsn_options;  // one per command; the parsed one has count() 1
  auto add_common = [&](CLI::App* command) {
    command->add_option("-c,--config", config_file, "TOML configuration file");
    postgres_dsn_options.push_back(
        command->add_option("-p,--postgres-dsn", postgres_dsn, "libpq conninfo or URI; overrides [postgresql]"));
    command->add_option("-e,--etcd-dsn", etcd_dsn,
                        "etcd://[user[:password]@]host:port[,host:port]/[prefix][?tls=enabled&dial_timeout=5s&request_timeout=10s]");
    command->add_option("-l,--log-level", log_level, "trace|debug|info|warn|error");
  };

  bool dry_run = false, force = false, fix = false, watch = false;
  std::string format = "text";
  double interval = 2.0;

  auto* start = app.add_subcommand("start", "run in the foreground until SIGINT/SIGTERM; SIGHUP reloads");
  add_common(start);
  start->add_flag("--dry-run", dry_run, "log what would be written, write nothing");
  // The quickstart guide's `start --daemon --pid-file FILE`: accepted by the parser (and hidden
  // from --help) only to be refused with what to do instead.
  bool daemon = false;
  std::string pid_file;
  auto* daemon_flag = start->add_flag("--daemon", daemon)->group("");
  auto* pid_file_option = start->add_option("--pid-file", pid_file)->group("");

  auto* status = app.add_subcommand("status", "show the service's state, lag and counters");
  add_common(status);
  status->add_option("--format", format, "text|json")->check(CLI::IsMember({"text", "json"}));
  status->add_flag("--watch", watch, "repeat every --interval seconds");
  status->add_option("--interval", interval, "seconds between reports with --watch")->check(CLI::PositiveNumber);

  auto* validate = app.add_subcommand("validate", "compare etcd with the mirror; exit 1 on a difference");
  add_common(validate);
  validate->add_flag("--fix", fix, "repair differences by resynchronizing");

  auto* sync = app.add_subcommand("sync", "requeue failed etcd_wal rows (with --force)");
  add_common(sync);
  sync->add_flag("--force", force, "set failed rows back to pending")->required();

  auto* config_cmd = app.add_subcommand("config", "configuration commands");
  config_cmd->require_subcommand(1);
  auto* config_validate = config_cmd->add_subcommand("validate", "check the configuration; exit 1 on an error");
  add_common(config_validate);

  auto* migrate = app.add_subcommand("migrate", "create or upgrade the PostgreSQL schema");
  add_common(migrate);

  // One example per command, as etcdctl's help has (a subcommand copies its parent's footer only
  // when it is created, so each gets its own).
  app.footer("Example: etcd-sync start -c /etc/etcd-sync/config.toml");
  start->footer("Example: etcd-sync start -c /etc/etcd-sync/config.toml");
  status->footer("Example: etcd-sync status -c /etc/etcd-sync/config.toml --format json");
  validate->footer("Example: etcd-sync validate -c /etc/etcd-sync/config.toml --fix");
  sync->footer("Example: etcd-sync sync --force -c /etc/etcd-sync/config.toml");
  config_cmd->footer("Example: etcd-sync config validate -c /etc/etcd-sync/config.toml");
  config_validate->footer("Example: etcd-sync config validate -c /etc/etcd-sync/config.toml");
  migrate->footer("Example: etcd-sync migrate -p 'host=db.example.com dbname=sync_db user=sync_user'");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? 0 : exit_config;
  }

  if (daemon_flag->count() > 0 || pid_file_option->count() > 0) {
    std::cerr << "etcd-sync: " << (daemon_flag->count() > 0 ? "--daemon" : "--pid-file")
              << ": etcd-sync runs in the foreground; use the systemd unit in conf/ (etcd-sync.service)\n";
    return exit_config;
  }

  if (!config_file.empty()) overrides.config_file = config_file;
  // Given at all, even empty, -p counts: -p "" means "libpq's PG* variables and ~/.pgpass only".
  for (const CLI::Option* option : postgres_dsn_options) {
    if (option->count() > 0) overrides.postgres_dsn = postgres_dsn;
  }
  if (!etcd_dsn.empty()) overrides.etcd_dsn = etcd_dsn;
  if (!log_level.empty()) overrides.log_level = log_level;

  auto load = load_config(overrides, process_environment());
  configure_logging(load.config.logging.level, load.config.logging.format);
  // Only where stdout carries logs anyway: status and validate print reports there (and
  // `status --format json` is piped into jq).
  if (start->parsed() || config_validate->parsed()) {
    for (const auto& w : load.warnings) log_warn(w.message, {{"file", w.file}});
  }
  if (config_validate->parsed()) return command_config_validate(load);
  if (!load.ok()) {
    for (const auto& e : load.errors) std::cerr << "etcd-sync: " << e.to_string() << "\n";
    return exit_config;
  }
  const Config& config = load.config;
  if (migrate->parsed()) return command_migrate(config);
  if (sync->parsed()) return command_sync_force(config);
  if (status->parsed()) return command_status(config, format == "json", watch, interval);
  if (validate->parsed()) return command_validate(config, fix);
  Service service(config, overrides, dry_run);
  return service.run();
}
