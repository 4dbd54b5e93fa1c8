// The bytes subprocess_test and its child program exchange: a stream of a
// length and a seed, not periodic at any small power of two, so a byte lost,
// repeated or moved shows.
#pragma once

#include <cstddef>

namespace polyloop::testing {

inline char pattern_byte(std::size_t i, unsigned seed) {
  return static_cast<char>((i * 131 + seed * 17 + (i >> 12) * 7) & 0xff);
}

}  // namespace polyloop::testing
