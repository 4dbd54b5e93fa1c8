// The loop's callback storage (detail): the pooled node a call_soon /
// call_at callable lives in, the pool that hands nodes out, and the box a
// call_soon_threadsafe callable travels in. Only core/loop uses these.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <type_traits>
#include <utility>
#include <vector>

#include "core/backend/ready_queue.h"
#include "core/errors/invariant.h"

namespace polyloop {
class EventLoop;
}

namespace polyloop::detail {

class callback_pool;

// A scheduled callback, from a pool owned by the loop. Small callables are
// stored inline, so call_soon allocates nothing in steady state.
struct callback_node : ready_node {
  static constexpr std::size_t inline_size = 48;

  // 96 bytes, laid out without padding: a loop with 200,000 timers touches
  // 19 MB of nodes, and every byte is a page fault when it is new.
  void (*invoke)(void* storage) = nullptr;
  // The callable; while the node is free, the pool's link to the next one.
  alignas(std::max_align_t) unsigned char storage[inline_size];
  void (*destroy)(void* storage) noexcept = nullptr;
  callback_pool* pool = nullptr;
  std::uint32_t generation = 0;
  std::uint32_t timer_seq = 0;  // orders timers with equal deadlines (wraps)
  bool cancelled = false;
  bool in_timer_heap = false;
  bool free = false;  // on the pool's free list

  callback_node* next_free() const noexcept {
    callback_node* next;
    std::memcpy(&next, storage, sizeof next);
    return next;
  }
  void set_next_free(callback_node* next) noexcept { std::memcpy(storage, &next, sizeof next); }

  template <class F>
  void emplace(F&& f) {
    using Fn = std::decay_t<F>;
    if constexpr (sizeof(Fn) <= inline_size && alignof(Fn) <= alignof(std::max_align_t) &&
                  std::is_nothrow_move_constructible_v<Fn>) {
      ::new (static_cast<void*>(storage)) Fn(std::forward<F>(f));
      invoke = [](void* s) { (*std::launder(static_cast<Fn*>(s)))(); };
      if constexpr (std::is_trivially_destructible_v<Fn>) {
        destroy = nullptr;  // nothing to do: spare release() an indirect call
      } else {
        destroy = [](void* s) noexcept { std::launder(static_cast<Fn*>(s))->~Fn(); };
      }
    } else {
      // Too big to store inline: one allocation, as std::function would.
      *reinterpret_cast<Fn**>(storage) = new Fn(std::forward<F>(f));
      invoke = [](void* s) { (**reinterpret_cast<Fn**>(s))(); };
      destroy = [](void* s) noexcept { delete *reinterpret_cast<Fn**>(s); };
    }
  }
  // Releases the callable (and what it captured) once it ran or was cancelled.
  // Safe to re-enter: the callable's destructor may cancel handles, even
  // this node's own.
  void release() noexcept {
    void (*d)(void*) noexcept = std::exchange(destroy, nullptr);
    invoke = nullptr;
    if (d) d(storage);
  }
};
static_assert(sizeof(callback_node) <= 96, "callback_node grew: see the comment on its layout");

// A callable queued by another thread: heap-allocated, since the loop's pool
// is not thread-safe, and itself a ready_node.
template <class F>
struct threadsafe_box : ready_node {
  F fn;
  explicit threadsafe_box(F&& f) : ready_node{&run}, fn(std::move(f)) {}
  static void run(ready_node* n, ready_node::action what);
};

// Counts a threadsafe callable run in the running loop's stats().
void count_threadsafe_callback() noexcept;

// Tells the running loop's exception handler what a threadsafe callable threw.
[[gnu::cold]] void report_threadsafe_exception() noexcept;


// Hands out callback nodes in chunks and takes them back; owned by one loop.
class callback_pool {
 public:
  explicit callback_pool(EventLoop& loop) : loop_(loop) {}
  callback_pool(const callback_pool&) = delete;
  callback_pool& operator=(const callback_pool&) = delete;

  callback_node* acquire() {
    make_room();
    return acquire_free();
  }
  bool has_free() const noexcept { return free_ != nullptr; }
  void make_room() {
    if (free_ == nullptr) grow();
  }
  // acquire() when has_free().
  callback_node* acquire_free() noexcept {
    callback_node* n = free_;
    free_ = n->next_free();
    n->free = false;
    n->cancelled = false;
    return n;
  }
  // Stores `f` in the node acquire_free() gave; if copying or moving it
  // throws (or its heap box cannot be had), the node goes back to the free
  // list before the exception leaves, instead of being lost to the pool.
  template <class F>
  void emplace_or_release(callback_node* n, F&& f) {
    try {
      n->emplace(std::forward<F>(f));
    } catch (...) {
      release(n);  // a node acquired and never filled: destroy and invoke are null
      throw;
    }
  }
  void release(callback_node* n) noexcept {
    POLYLOOP_INVARIANT(!n->free, "a callback node released twice");
    n->free = true;
    n->release();
    ++n->generation;  // outstanding handles no longer match
    n->set_next_free(free_);
    free_ = n;
  }
  EventLoop& loop() noexcept { return loop_; }
  // Every callback node's ready_node::fn. The loop's run_ready() does not
  // call it for action::run: it recognises the pointer and calls
  // run_popped() inline (one indirect call per callback, the callable's).
  static void run(ready_node* node, ready_node::action what);
  // Runs, or (if cancelled) only releases, a node popped from the ready queue.
  void run_popped(callback_node* n) {
    if (n->cancelled) [[unlikely]] {
      ++cancelled_popped_;
      release(n);
      return;
    }
    // From here on the callback counts as run: a Handle::cancel() from inside
    // it no longer matches, so it cannot destroy the callable mid-call.
    ++n->generation;
    try {
      n->invoke(n->storage);
    } catch (...) {
      report_exception(loop_);
    }
    release_ran(n);
  }
  // Cancelled nodes run_popped() only released: the loop subtracts them from
  // the nodes it popped to derive LoopStats::callbacks_run.
  std::uint64_t cancelled_popped() const noexcept { return cancelled_popped_; }

 private:
  // release() for a node run_popped() ran: its generation already moved on
  // (so no handle matches it), and its invoke pointer is never called again.
  void release_ran(callback_node* n) noexcept {
    POLYLOOP_INVARIANT(!n->free, "a callback node released twice");
    n->free = true;
    if (n->destroy != nullptr) n->release();
    n->set_next_free(free_);
    free_ = n;
  }
  [[gnu::noinline, gnu::cold]] static void report_exception(EventLoop& loop) noexcept;
  void grow();
  EventLoop& loop_;
  callback_node* free_ = nullptr;
  std::uint64_t cancelled_popped_ = 0;
  std::vector<std::unique_ptr<callback_node[]>> chunks_;
};

template <class F>
void threadsafe_box<F>::run(ready_node* n, ready_node::action what) {
  auto* self = static_cast<threadsafe_box*>(n);
  std::unique_ptr<threadsafe_box> owner(self);
  if (what == ready_node::action::discard) return;
  count_threadsafe_callback();
  try {
    self->fn();
  } catch (...) {
    report_threadsafe_exception();
  }
}

}  // namespace polyloop::detail
