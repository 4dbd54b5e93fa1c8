// fd_table<T>: a backend's per-fd state, in a vector indexed by the fd.
// Descriptors are small and dense (the kernel hands out the lowest free
// number), so the table is about as long as the highest fd used, and a
// lookup is an index. It grows when an operation names a higher fd and
// never shrinks; a backend resets a slot when the fd is closed through it.
#pragma once

#include <cerrno>
#include <cstddef>
#include <new>
#include <vector>

namespace polyloop::detail {

template <class T>
class fd_table {
 public:
  // The slot of `fd`, growing the table to hold it; null for a negative fd,
  // or if the table could not grow (out of memory: the caller, a noexcept
  // start(), fails the operation with -ENOMEM rather than terminating).
  // slot_error() tells the two apart.
  T* slot(int fd) noexcept {
    if (fd < 0) return nullptr;
    auto i = static_cast<std::size_t>(fd);
    if (i >= slots_.size()) {
      // resize() leaves the table as it was if it throws (T moves noexcept).
      try {
        slots_.resize(i + 1);
      } catch (const std::bad_alloc&) {
        return nullptr;
      }
    }
    return &slots_[i];
  }

  // Why slot(fd) returned null, as a negative errno for operation::result.
  static int slot_error(int fd) noexcept { return fd < 0 ? -EBADF : -ENOMEM; }

  // The slot of `fd` if the table reaches it, else null. Never grows.
  T* find(int fd) noexcept {
    if (fd < 0 || static_cast<std::size_t>(fd) >= slots_.size()) return nullptr;
    return &slots_[static_cast<std::size_t>(fd)];
  }

  // The slot of an fd the table already reaches (slot() was called for it).
  T& operator[](int fd) noexcept { return slots_[static_cast<std::size_t>(fd)]; }

  auto begin() noexcept { return slots_.begin(); }
  auto end() noexcept { return slots_.end(); }

 private:
  std::vector<T> slots_;
};

}  // namespace polyloop::detail
