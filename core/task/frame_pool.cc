#include "core/task/frame_pool.h"

#include "core/errors/invariant.h"

#include <sys/mman.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <new>
#include <utility>

namespace polyloop::detail {

// Coroutine frames up to 1 KiB come from a pool, in size classes of 16
// bytes: spawning many short tasks then costs a free-list pop (or a bump of
// a pointer), not malloc, and a frame costs its own size and no more (no
// malloc header, no rounding to a coarse class). Every cost of a fresh frame
// is paid twice when a program spawns many tasks at once: once in the
// instructions, once in the page faults of the memory it touches.
//
// The frames are carved from one region of address space reserved once per
// process (reserved, not committed: a page costs memory only once a frame is
// put there). Each thread takes 64 KiB chunks of it and keeps free lists of
// its own, so allocation takes no lock. A frame freed on another thread joins
// that thread's lists; a thread that exits hands its free frames to the
// process, and the next thread that runs out of a chunk adopts them. Memory
// in the region is kept for the life of the process and reused: at most the
// region's size (256 MiB) stays resident, the peak the frames ever reached.
// Once the region is used up, frames come from operator new as larger ones
// always do; free_frame tells them apart by address.
//
// Under AddressSanitizer frames go straight to operator new, so a use of a
// freed frame is still caught.
#if defined(__SANITIZE_ADDRESS__)
#define POLYLOOP_FRAME_POOL 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define POLYLOOP_FRAME_POOL 0
#endif
#endif
#ifndef POLYLOOP_FRAME_POOL
#define POLYLOOP_FRAME_POOL 1
#endif

namespace {

constexpr std::size_t granule = 16;
constexpr std::size_t classes = 64;  // 16 B .. 1 KiB
constexpr std::size_t region_bytes = std::size_t{256} << 20;
constexpr std::size_t chunk_bytes = std::size_t{64} << 10;

struct free_frame_entry {
  free_frame_entry* next;
};

// The process-wide reservation frames are carved from, made by the first
// thread that needs a chunk. Never unmapped: a frame may be freed by any
// thread, at any time until the process exits.
class frame_region {
 public:
  bool contains(const void* p) const noexcept {
    // base_ is 0 until the region exists (or if it could not be made).
    std::uintptr_t base = base_.load(std::memory_order_acquire);
    return base != 0 && reinterpret_cast<std::uintptr_t>(p) - base < region_bytes;
  }
  // A fresh chunk, or nullptr once the region is used up.
  char* take_chunk() noexcept {
    std::call_once(reserved_, [this] { reserve(); });
    std::size_t size = size_.load(std::memory_order_relaxed);
    if (size == 0) return nullptr;
    std::size_t at = used_.fetch_add(chunk_bytes, std::memory_order_relaxed);
    if (at + chunk_bytes > size) return nullptr;
    return reinterpret_cast<char*>(base_.load(std::memory_order_relaxed) + at);
  }

  // Free frames of threads that have exited, by class.
  std::mutex orphans_mutex;
  free_frame_entry* orphans[classes] = {};

 private:
  void reserve() noexcept {
    void* p = ::mmap(nullptr, region_bytes, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) return;
    size_.store(region_bytes, std::memory_order_relaxed);
    base_.store(reinterpret_cast<std::uintptr_t>(p), std::memory_order_release);
  }

  std::once_flag reserved_;
  std::atomic<std::uintptr_t> base_{0};
  std::atomic<std::size_t> size_{0};
  std::atomic<std::size_t> used_{0};
};

// Constant-initialised and never destroyed: threads may free frames while
// the process exits.
constinit frame_region region;

void push_list(free_frame_entry*& head, free_frame_entry* list) noexcept {
  if (list == nullptr) return;
  free_frame_entry* last = list;
  while (last->next != nullptr) last = last->next;
  last->next = head;
  head = list;
}

// A thread's own lists. Trivially destructible, so that reaching them is a
// plain thread-local access; the exit hook below hands them to the process.
struct frame_cache {
  free_frame_entry* heads[classes];
  char* bump;
  char* bump_end;
  bool hooked;  // the exit hook is armed
  bool exited;  // the thread is exiting: frees go to the orphans
};
constinit thread_local frame_cache cache{};

struct exit_hook {
  ~exit_hook() {
    std::lock_guard<std::mutex> lock(region.orphans_mutex);
    for (std::size_t c = 0; c < classes; ++c) {
      push_list(region.orphans[c], cache.heads[c]);
      cache.heads[c] = nullptr;
    }
    cache.exited = true;  // frames freed later by this thread go to the orphans
  }
};
thread_local exit_hook hook;

// Called the first time a thread keeps a free frame.
void arm_exit_hook() noexcept {
  cache.hooked = true;
  [[maybe_unused]] exit_hook& h = hook;  // constructs it, which registers its destructor
}

// The slow path: the class's list is empty and the chunk cannot hold one.
void* refill(std::size_t cls) noexcept {
  if (!cache.hooked) arm_exit_hook();
  {
    std::lock_guard<std::mutex> lock(region.orphans_mutex);
    if (free_frame_entry* list = region.orphans[cls - 1]) {
      if (cache.exited) {
        // An exiting thread's lists are not handed over again: take one.
        region.orphans[cls - 1] = list->next;
      } else {
        region.orphans[cls - 1] = nullptr;
        cache.heads[cls - 1] = list->next;
      }
      return list;
    }
  }
  if (cache.exited) return nullptr;
  char* chunk = region.take_chunk();
  if (chunk == nullptr) return nullptr;
  // The rest of the old chunk is left unused (less than one frame's worth
  // of this class).
  cache.bump = chunk + cls * granule;
  cache.bump_end = chunk + chunk_bytes;
  return chunk;
}

}  // namespace

void* allocate_frame(std::size_t size) {
  std::size_t cls = (size + granule - 1) / granule;
  if (POLYLOOP_FRAME_POOL && cls <= classes && cls > 0) {
    frame_cache& c = cache;
    free_frame_entry*& head = c.heads[cls - 1];
    if (head != nullptr) {
      free_frame_entry* e = head;
      head = e->next;
      return e;
    }
    std::size_t bytes = cls * granule;
    if (static_cast<std::size_t>(c.bump_end - c.bump) >= bytes) {
      void* p = c.bump;
      c.bump += bytes;
      return p;
    }
    if (void* p = refill(cls)) return p;
  }
  return ::operator new(size);
}

void free_frame(void* p, std::size_t size) noexcept {
  if (POLYLOOP_FRAME_POOL && region.contains(p)) {
    std::size_t cls = (size + granule - 1) / granule;
    POLYLOOP_INVARIANT(cls - 1 < classes, "a pool frame freed with a size no pool class has");
    auto* e = static_cast<free_frame_entry*>(p);
    frame_cache& c = cache;
    if (!c.hooked) arm_exit_hook();
    if (!c.exited) {
      e->next = c.heads[cls - 1];
      c.heads[cls - 1] = e;
    } else {
      std::lock_guard<std::mutex> lock(region.orphans_mutex);
      e->next = region.orphans[cls - 1];
      region.orphans[cls - 1] = e;
    }
    return;
  }
  ::operator delete(p);
}

}  // namespace polyloop::detail
