#include "tests/support/test_support.h"

#include <boost/test/unit_test.hpp>
#include <string_view>

namespace polyloop::testing {

const std::string& backend_under_test() {
  static const std::string name = [] {
    auto& suite = boost::unit_test::framework::master_test_suite();
    std::string found;
    for (int i = 1; i < suite.argc; ++i) {
      std::string_view arg = suite.argv[i];
      if (arg.rfind("--backend=", 0) == 0) found = std::string(arg.substr(10));
    }
    return found;
  }();
  return name;
}

std::unique_ptr<EventLoop> make_loop() { return new_event_loop(backend_under_test()); }

std::unique_ptr<EventLoop> make_loop(Clock& clock) {
  return new_event_loop(backend_under_test(), clock);
}

}  // namespace polyloop::testing
