// Replaces the global operator new/delete of a test binary with ones that
// count the allocations of the calling thread (then malloc/free), so a test
// can assert that a path allocates nothing. Include in exactly one source
// file of a test binary: it defines the replacement functions. The
// definitions live in the executable, so they take precedence over the
// sanitizers' own (which a shared library's would not).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>

namespace polyloop::testing {
inline thread_local std::uint64_t allocations_here = 0;
// operator new calls made by this thread so far.
inline std::uint64_t allocation_count() noexcept { return allocations_here; }
}  // namespace polyloop::testing

void* operator new(std::size_t size) {
  ++polyloop::testing::allocations_here;
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t size) { return ::operator new(size); }
void* operator new(std::size_t size, std::align_val_t align) {
  ++polyloop::testing::allocations_here;
  std::size_t a = static_cast<std::size_t>(align);
  std::size_t rounded = (size + a - 1) / a * a;
  if (void* p = std::aligned_alloc(a, rounded == 0 ? a : rounded)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t size, std::align_val_t align) {
  return ::operator new(size, align);
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
