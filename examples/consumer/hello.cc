// A program in another Bazel workspace that depends on @polyloop//:polyloop.
#include <chrono>
#include <cstdio>

#include "polyloop/polyloop.h"

namespace pl = polyloop;
using namespace std::chrono_literals;

pl::Task<int> square_later(int x) {
  co_await pl::sleep(10ms);
  co_return x * x;
}

pl::Task<int> sum_of_squares() {
  auto [a, b, c] = co_await pl::gather(square_later(1), square_later(2), square_later(3));
  co_return a + b + c;
}

int main(int argc, char** argv) try {
  auto loop = pl::new_event_loop(pl::backend_from_args(argc, argv));
  int sum = loop->run_until_complete(sum_of_squares());
  std::printf("backend: %s\nsum of squares: %d\n", std::string(loop->backend_name()).c_str(), sum);
  loop->close();
  return sum == 14 ? 0 : 1;
} catch (const std::exception& e) {
  std::fprintf(stderr, "hello: %s\n", e.what());
  return 2;
}
