#include "tests/support/test_support.h"

#include <boost/test/unit_test.hpp>
#include <fstream>
#include <string_view>

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

bool skip_when_simulated(const char* why) {
  static const bool simulated = [] {
    std::unique_ptr<Backend> b = make_backend(backend_under_test());
    return b->own_clock() != nullptr;
  }();
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
