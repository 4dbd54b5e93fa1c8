#include "tests/support/test_support.h"

#include <boost/test/results_collector.hpp>
#include <boost/test/tree/observer.hpp>

#include <boost/test/unit_test.hpp>
#include <cstdio>
#include <fstream>
#include <string>
#include <string_view>

#include "backends/sim/sim_config.h"

namespace polyloop::testing {

namespace {
// The value of --NAME=VALUE among the test's arguments (after `--`), or "".
std::string test_arg(std::string_view name) {
  auto& suite = boost::unit_test::framework::master_test_suite();
  std::string prefix = "--" + std::string(name) + "=";
  std::string found;
  for (int i = 1; i < suite.argc; ++i) {
    std::string_view arg = suite.argv[i];
    if (arg.rfind(prefix, 0) == 0) found = std::string(arg.substr(prefix.size()));
  }
  return found;
}

bool static_dispatch() {
  static const bool is_static = test_arg("dispatch") == "static";
  return is_static;
}
}  // namespace

const std::string& backend_under_test() {
  static const std::string name = test_arg("backend");
  return name;
}

namespace {
// On a simulated backend, a failed test case prints the seed and faults it
// ran with, so that the run can be replayed exactly.
struct sim_seed_on_failure : boost::unit_test::test_observer {
  void test_unit_finish(const boost::unit_test::test_unit& tu, unsigned long) override {
    if (tu.p_type != boost::unit_test::TUT_CASE) return;
    if (boost::unit_test::results_collector.results(tu.p_id).passed()) return;
    if (!skip_when_simulated_quietly()) return;
    std::string config = backends::sim_config::from_env().describe();
    std::fprintf(stderr,
                 "polyloop sim: '%s' failed with %s; replay it with POLYLOOP_SIM_SEED=%s "
                 "(and the same POLYLOOP_SIM_* variables)\n",
                 tu.p_name.get().c_str(), config.c_str(),
                 std::to_string(backends::sim_config::from_env().seed).c_str());
  }
  static bool skip_when_simulated_quietly() {
    static const bool simulated = [] {
      std::unique_ptr<Backend> b = make_backend(backend_under_test());
      return b->own_clock() != nullptr;
    }();
    return simulated;
  }
};
struct install_sim_seed_on_failure {
  sim_seed_on_failure observer;
  void setup() { boost::unit_test::framework::register_observer(observer); }
  void teardown() { boost::unit_test::framework::deregister_observer(observer); }
};
BOOST_TEST_GLOBAL_FIXTURE(install_sim_seed_on_failure);
}  // namespace

bool skip_when_simulated(const char* why) {
  bool simulated = sim_seed_on_failure::skip_when_simulated_quietly();
  if (simulated) BOOST_TEST_MESSAGE("skipped on a simulated backend: " << why);
  return simulated;
}

std::unique_ptr<EventLoop> make_loop() { return make_loop(SteadyClock::instance()); }

std::unique_ptr<EventLoop> make_loop(Clock& clock) {
  if (static_dispatch()) return new_static_event_loop(backend_under_test(), clock);
  return new_event_loop(backend_under_test(), clock);
}

int thread_count() {
  std::ifstream in("/proc/self/status");
  std::string key;
  while (in >> key) {
    if (key == "Threads:") {
      int n = 0;
      in >> n;
      return n;
    }
    std::getline(in, key);
  }
  return -1;
}

double ms(std::chrono::nanoseconds d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

long long ns(std::chrono::nanoseconds d) { return d.count(); }

std::function<bool(const std::exception&)> message_has(std::string part) {
  return [part](const std::exception& e) {
    std::string what = e.what();
    BOOST_TEST(what.find(part) != std::string::npos,
               "message \"" << what << "\" should contain \"" << part << "\"");
    return true;
  };
}

void run_one_iteration(EventLoop& loop) {
  loop.stop();
  loop.run_forever();
}

Task<> pause(Clock::duration d) { co_await polyloop::sleep(d); }

Task<int> value_after(int v, Clock::duration d, std::vector<std::string>* log) {
  co_await polyloop::sleep(d);
  if (log != nullptr) log->push_back(std::to_string(v));
  co_return v;
}

Task<> void_after(bool* flag, Clock::duration d) {
  co_await polyloop::sleep(d);
  *flag = true;
}

}  // namespace polyloop::testing
