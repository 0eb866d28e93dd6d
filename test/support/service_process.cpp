#include "test/support/service_process.hpp"

#include <gtest/gtest.h>

#include <csignal>
#include <fstream>
#include <iostream>
#include <string_view>
#include <system_error>
#include <utility>

namespace etcd_sync::testing {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;

/// Whether a log line is above debug level (JSON lines at debug or trace are not).
bool above_debug(std::string_view line) {
  return line.find("\"level\":\"debug\"") == std::string_view::npos &&
         line.find("\"level\":\"trace\"") == std::string_view::npos;
}

}  // namespace

fs::path service_binary() { return fs::path(ETCD_SYNC_BINARY); }

ServiceProcess::ServiceProcess(const fs::path& log_dir, std::string name)
    : log_path_(log_dir / (name + ".log")) {
  fs::create_directories(log_dir);
}

ServiceProcess::~ServiceProcess() {
  // A failed test shows what etcd-sync was doing: whether it was still running (or how it ended)
  // and the end of its log. ChildProcess then kills and reaps it.
  if (!::testing::Test::HasFailure() || starts_ == 0) return;
  const bool alive = process_.running();
  const std::string log = read_text_file(log_path_);
  std::cerr << "---- etcd-sync " << log_path_.filename().string() << ": "
            << (alive ? std::string("still running") : "exited with " + std::to_string(process_.exit_code().value_or(-1)))
            << "; its last lines above debug, then its last lines of any level ----\n"
            << last_lines(log, kLogLinesOnFailure, above_debug) << "---- ... ----\n"
            << last_lines(log, kLogLinesOnFailure / 4) << "---- end of " << log_path_.string() << " ----\n";
}

void ServiceProcess::start(const std::vector<std::string>& args,
                           const std::map<std::string, std::string>& env) {
  if (process_.running()) {
    throw std::runtime_error("etcd-sync is already running (pid " +
                             std::to_string(process_.pid()) + ")");
  }
  {
    std::ofstream log(log_path_, std::ios::app | std::ios::binary);
    log << "---- test harness: start #" << ++starts_ << ": ";
    for (const auto& word : wrapper_) log << word << ' ';
    log << service_binary().string();
    for (const auto& arg : args) log << ' ' << arg;
    log << " ----\n";
  }
  mark_log();
  SpawnSpec spec;
  if (wrapper_.empty()) {
    spec.program = service_binary();
    spec.args = args;
  } else {
    spec.program = wrapper_.front();
    spec.args.assign(wrapper_.begin() + 1, wrapper_.end());
    spec.args.push_back(service_binary().string());
    spec.args.insert(spec.args.end(), args.begin(), args.end());
  }
  spec.env = env;
  spec.output_path = log_path_;
  spec.death_signal = SIGKILL;
  process_.start(spec);
}

bool ServiceProcess::wait_for_log(const std::string& needle, milliseconds deadline) {
  bool found = false;
  wait_until(
      [&] {
        // Check liveness first: a process that has exited has written its last line.
        const bool alive = process_.running();
        found = log_since_mark().find(needle) != std::string::npos;
        return found || !alive;
      },
      deadline);
  return found;
}

void ServiceProcess::mark_log() { mark_ = file_size_or_zero(log_path_); }

std::string ServiceProcess::log_text() const { return read_text_file(log_path_); }

std::string ServiceProcess::log_since_mark() const { return read_text_file(log_path_, mark_); }

int ServiceProcess::terminate(milliseconds deadline) { return process_.stop(SIGTERM, deadline); }

std::optional<int> ServiceProcess::wait_exit(milliseconds deadline) {
  return process_.wait_exit(deadline);
}

void ServiceProcess::signal(int sig) { process_.signal(sig); }

void ServiceProcess::kill9() { process_.stop(SIGKILL, milliseconds(0)); }

bool ServiceProcess::running() { return process_.running(); }

CommandResult run_binary(const std::vector<std::string>& args,
                         const std::map<std::string, std::string>& env, milliseconds timeout) {
  return run_command(service_binary(), args, env, timeout);
}

}  // namespace etcd_sync::testing
