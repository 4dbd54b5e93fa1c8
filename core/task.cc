#include "core/task.h"

#include <cstdlib>
#include <new>

namespace polyloop::detail {

// Coroutine frames are recycled per thread, by size class of 64 bytes up to
// 1 KiB: spawning many short tasks then costs a free-list pop, not malloc.
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

constexpr std::size_t granule = 64;
constexpr std::size_t classes = 16;                  // 64 B .. 1 KiB
constexpr std::size_t max_cached_bytes = 64u << 20;  // per thread

struct free_frame_entry {
  free_frame_entry* next;
};

struct frame_cache {
  free_frame_entry* heads[classes] = {};
  std::size_t cached_bytes = 0;
  ~frame_cache() {
    for (free_frame_entry*& head : heads) {
      while (head != nullptr) {
        free_frame_entry* next = head->next;
        ::operator delete(head);
        head = next;
      }
    }
  }
};

thread_local frame_cache cache;

}  // namespace

void* allocate_frame(std::size_t size) {
  std::size_t cls = (size + granule - 1) / granule;
  if (POLYLOOP_FRAME_POOL && cls <= classes && cls > 0) {
    free_frame_entry*& head = cache.heads[cls - 1];
    if (head != nullptr) {
      free_frame_entry* e = head;
      head = e->next;
      cache.cached_bytes -= cls * granule;
      return e;
    }
    return ::operator new(cls* granule);
  }
  return ::operator new(size);
}

void free_frame(void* p, std::size_t size) noexcept {
  std::size_t cls = (size + granule - 1) / granule;
  if (POLYLOOP_FRAME_POOL && cls <= classes && cls > 0 &&
      cache.cached_bytes + cls * granule <= max_cached_bytes) {
    auto* e = static_cast<free_frame_entry*>(p);
    e->next = cache.heads[cls - 1];
    cache.heads[cls - 1] = e;
    cache.cached_bytes += cls * granule;
    return;
  }
  ::operator delete(p);
}

}  // namespace polyloop::detail
