// Wrapper for Boost.Asio (header-only, Boost 1.74 from Debian).
//
// Boost 1.74's <boost/asio/awaitable.hpp> uses std::exchange without including
// <utility>, which g++ 12 in C++20 mode no longer pulls in transitively. A
// `-include utility` copt on the cc_library would not reach dependents, and
// clang-format (Google style) would sort <boost/...> before <utility> if both
// were included from a project file, so project code includes this header
// instead of any <boost/asio...> header:
//
//   #include "third_party/asio/asio.h"
#ifndef POLYLOOP_THIRD_PARTY_ASIO_ASIO_H_
#define POLYLOOP_THIRD_PARTY_ASIO_ASIO_H_

// clang-format off
#include <utility>  // Must come before any Boost.Asio header; see above.
#include <boost/asio.hpp>
// clang-format on

#endif  // POLYLOOP_THIRD_PARTY_ASIO_ASIO_H_
