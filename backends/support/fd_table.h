// fd_table<T>: a backend's per-fd state, in a vector indexed by the fd.
// Descriptors are small and dense (the kernel hands out the lowest free
// number), so the table is about as long as the highest fd used, and a
// lookup is an index. It grows when an operation names a higher fd and
// never shrinks; a backend resets a slot when the fd is closed through it.
#pragma once

#include <cstddef>
#include <vector>

namespace polyloop::detail {

template <class T>
class fd_table {
 public:
  // The slot of `fd`, growing the table to hold it; null for a negative fd.
  T* slot(int fd) noexcept {
    if (fd < 0) return nullptr;
    auto i = static_cast<std::size_t>(fd);
    if (i >= slots_.size()) slots_.resize(i + 1);
    return &slots_[i];
  }

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
