// Leaks a pipe (both ends) unless run with `-- --no-leak`: the global fixture
// of fd_check.cc must fail this binary and name the two descriptors.
#define BOOST_TEST_MODULE fd_leak_demo
#include <unistd.h>

#include <boost/test/unit_test.hpp>
#include <string_view>

BOOST_AUTO_TEST_CASE(opens_a_pipe) {
  int fds[2];
  BOOST_TEST_REQUIRE(::pipe(fds) == 0);
  auto& suite = boost::unit_test::framework::master_test_suite();
  bool leak = !(suite.argc > 1 && std::string_view(suite.argv[suite.argc - 1]) == "--no-leak");
  if (!leak) {
    ::close(fds[0]);
    ::close(fds[1]);
  }
}
