#include "polyloop/polyloop.h"  // first: the header under test compiles on its own

#define BOOST_TEST_MODULE smoke
#include <boost/test/unit_test.hpp>

#include "tests/support/test_support.h"

namespace pl = polyloop;

BOOST_AUTO_TEST_CASE(loop_runs_on_the_backend_under_test) {
  auto loop = pl::testing::make_loop();
  BOOST_TEST(loop->backend_name() == pl::testing::backend_under_test());
}
