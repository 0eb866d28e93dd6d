#include "perf/mirror_latency.hpp"
#include "reactor/loop/wakeup.hpp"

namespace etcd_sync::bench {

namespace {

using namespace std::chrono_literals;

asio::awaitable<void> timed_put(EtcdClient& etcd, std::string key, const std::string& value, TimedPut& out) {
  etcdserverpb::PutRequest request;
  request.set_key(std::move(key));
  request.set_value(value);
  out.sent_us = wall_micros();
  auto response = co_await etcd.put(request);
  out.committed_us = wall_micros();
  out.revision = response.header().revision();
}

}  // namespace

asio::awaitable<void> pace_puts(Loop& loop, PacedPuts& state, double rate) {
  Wakeup done(loop.io());
  const auto period = std::chrono::nanoseconds(static_cast<std::int64_t>(1e9 / rate));
  const auto start = Clock::now() + 20ms;
  for (std::size_t i = 0; i < state.limit && !state.stop; ++i) {
    auto due = start + period * static_cast<std::int64_t>(i);
    co_await sleep_until(due);
    if (state.stop) break;
    auto& put = state.puts.emplace_back();
    put.late_ms = std::chrono::duration<double, std::milli>(Clock::now() - due).count();
    ++state.running;
    asio::co_spawn(loop.io(),
                   timed_put(loop.etcd(), state.key_prefix + std::to_string(i % state.keys), state.value, put),
                   [&state, &done](std::exception_ptr e) {
                     if (e && !state.failure) state.failure = e;
                     --state.running;
                     done.notify();
                   });
  }
  while (state.running > 0) co_await done.wait(1s);
  if (state.failure) std::rethrow_exception(state.failure);
}

asio::awaitable<void> wait_checkpoint(PgConnection& pg, std::int64_t revision, std::chrono::seconds deadline) {
  auto began = Clock::now();
  while (co_await mirror_checkpoint(pg) < revision) {
    if (Clock::now() - began > deadline)
      throw std::runtime_error("the mirror did not reach revision " + std::to_string(revision) + " in time");
    co_await sleep_for(20ms);
  }
}

void install_seen_trigger(testing::PgClient& db, const std::string& schema) {
  // Fires at the mirror's COMMIT (deferred), so clock_timestamp() is when the row becomes visible.
  // Every name is qualified: the mirror's session has its own search_path.
  const std::string s = "\"" + schema + "\".";
  db.exec("CREATE TABLE " + s + "bench_seen (revision bigint PRIMARY KEY, seen timestamptz NOT NULL);"
          "CREATE FUNCTION " + s + "bench_seen_row() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
          "  INSERT INTO " + s + "bench_seen VALUES (NEW.revision, clock_timestamp()) ON CONFLICT DO NOTHING; "
          "  RETURN NULL; END $$;"
          "CREATE CONSTRAINT TRIGGER bench_seen AFTER INSERT ON " + s + "etcd DEFERRABLE INITIALLY DEFERRED "
          "  FOR EACH ROW EXECUTE FUNCTION " + s + "bench_seen_row();");
}

std::map<std::int64_t, std::int64_t> read_seen(testing::PgClient& db, const std::string& schema) {
  std::map<std::int64_t, std::int64_t> seen;
  for (const auto& row : db.exec("SELECT revision, (extract(epoch FROM seen) * 1000000)::bigint FROM \"" + schema +
                                 "\".bench_seen"))
    seen[std::stoll(*row[0])] = std::stoll(*row[1]);
  return seen;
}

MirrorLatency mirror_latency(const std::deque<TimedPut>& puts, const std::map<std::int64_t, std::int64_t>& seen,
                             const std::function<bool(const TimedPut&)>& chosen) {
  MirrorLatency m;
  std::vector<double> latency, from_send, put_ms, late;
  std::int64_t first_sent = 0, last_sent = 0;
  for (const auto& p : puts) {
    if (chosen && !chosen(p)) continue;
    if (m.puts++ == 0) first_sent = p.sent_us;
    last_sent = p.sent_us;
    put_ms.push_back((p.committed_us - p.sent_us) / 1000.0);
    late.push_back(p.late_ms);
    auto it = seen.find(p.revision);
    if (it == seen.end()) {
      ++m.missing;
      continue;
    }
    latency.push_back((it->second - p.committed_us) / 1000.0);
    from_send.push_back((it->second - p.sent_us) / 1000.0);
  }
  m.sending_seconds = (last_sent - first_sent) / 1e6;
  m.achieved_rate = m.puts > 1 && m.sending_seconds > 0 ? (m.puts - 1) / m.sending_seconds : 0;
  m.visible_ms = distribution(latency);
  m.from_send_ms = distribution(from_send);
  m.put_ms = distribution(put_ms);
  m.late_ms = distribution(late);
  return m;
}

void print_mirror_latency(const MirrorLatency& m) {
  detail("put commit -> row visible in PostgreSQL: " + describe_ms(m.visible_ms));
  detail("put sent -> row visible in PostgreSQL:   " + describe_ms(m.from_send_ms));
  detail("etcd Put round trip (sent -> answered):  " + describe_ms(m.put_ms));
  detail("generator lateness vs schedule:          " + describe_ms(m.late_ms));
}

}  // namespace etcd_sync::bench
