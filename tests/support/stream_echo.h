// A stream handler the network tests share: echo until end of stream.
#pragma once

#include <string>

#include "net/stream.h"

namespace polyloop::testing {

// Writes back whatever arrives until the peer ends its side, then closes.
// Errors (a reset) propagate: the test that wants them sees them.
inline Task<> echo_until_eof(net::Stream s) {
  while (true) {
    std::string data = co_await s.read();
    if (data.empty()) break;
    s.write(data);
    co_await s.drain();
  }
  s.close();
  co_await s.wait_closed();
}

}  // namespace polyloop::testing
