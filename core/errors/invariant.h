// POLYLOOP_INVARIANT(cond, "what must hold"): an always-on check, in every
// build mode, at the places where a broken invariant would corrupt memory
// (a node released twice, an operation started twice, a frame freed to the
// wrong pool, a loop used from the wrong thread). It aborts with file, line,
// the condition and the sentence, since nothing safe can follow.
//
// Keep it to cheap conditions: it stays on in optimised builds. The failure
// path is out of line and cold, so a passing check costs one predictable
// branch.
#pragma once

namespace polyloop::detail {

[[noreturn, gnu::cold, gnu::noinline]] void invariant_failed(const char* file, int line,
                                                             const char* condition,
                                                             const char* what) noexcept;

}  // namespace polyloop::detail

#define POLYLOOP_INVARIANT(cond, what)                                              \
  do {                                                                              \
    if (!(cond)) [[unlikely]]                                                       \
      ::polyloop::detail::invariant_failed(__FILE__, __LINE__, #cond, what);        \
  } while (false)
