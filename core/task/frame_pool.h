// Where Task coroutine frames come from: a per-thread pool of 16-byte size
// classes carved from one reserved region (core/task/frame_pool.cc says why
// and how). Any thread may free a frame any thread allocated.
#pragma once

#include <cstddef>

namespace polyloop::detail {

// A frame of `size` bytes; throws std::bad_alloc as operator new does.
void* allocate_frame(std::size_t size);
// Gives back a frame from allocate_frame(size), with the same size.
void free_frame(void* p, std::size_t size) noexcept;

}  // namespace polyloop::detail
