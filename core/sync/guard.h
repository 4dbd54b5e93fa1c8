// Guard<P>: holds a Lock or a Semaphore acquired with `co_await p.scoped()`
// and releases it when it goes out of scope, so an exception (a
// CancelledError included) cannot leave it held.
//
// Why this form: C++ has no async destructor, but release() never suspends,
// so a plain destructor can release. The only way to get a Guard is to await
// scoped(), so a Guard always owns what it releases, and it is move-only.
// It is [[nodiscard]], but g++ 12 does not warn about a discarded co_await
// result: `co_await lock.scoped();` on its own compiles and releases at once.
// Always name it: `auto guard = co_await lock.scoped();`.
#pragma once

#include <utility>

namespace polyloop {

template <class Primitive>
class [[nodiscard]] Guard {
 public:
  Guard(Guard&& o) noexcept : held_(std::exchange(o.held_, nullptr)) {}
  Guard& operator=(Guard&& o) noexcept {
    if (this != &o) {
      reset();
      held_ = std::exchange(o.held_, nullptr);
    }
    return *this;
  }
  ~Guard() { reset(); }

  // Releases now instead of at the end of the scope (once).
  void release() { reset(); }
  // False once released (or moved from).
  bool owns() const noexcept { return held_ != nullptr; }

 private:
  friend Primitive;
  explicit Guard(Primitive& p) noexcept : held_(&p) {}
  void reset() noexcept {
    // release() of a held primitive on its own thread cannot fail.
    if (held_ != nullptr) std::exchange(held_, nullptr)->release();
  }
  Primitive* held_;
};

}  // namespace polyloop
