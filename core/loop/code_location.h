// detail::source_location: std::source_location where the standard library
// has it (g++), else an empty stand-in (clang 14 with libstdc++ 12 lacks the
// builtin it needs), so that capturing a location compiles everywhere and
// costs one pointer. Debug mode's reports say where a task or future was
// made when the location is known.
#pragma once

#include <version>

#if defined(__cpp_lib_source_location)
#include <bit>
#include <source_location>
#endif

namespace polyloop::detail {

#if defined(__cpp_lib_source_location)
using source_location = std::source_location;
static_assert(sizeof(std::source_location) == sizeof(const void*));
// A location as one pointer (to the compiler's static record of it), null
// for none; and back.
inline const void* location_pointer(source_location l) noexcept {
  return std::bit_cast<const void*>(l);
}
inline source_location location_from(const void* p) noexcept {
  return std::bit_cast<source_location>(p);
}
#else
struct source_location {
  static constexpr source_location current() noexcept { return {}; }
  constexpr const char* file_name() const noexcept { return ""; }
  constexpr const char* function_name() const noexcept { return ""; }
  constexpr unsigned line() const noexcept { return 0; }
};
inline const void* location_pointer(source_location) noexcept { return nullptr; }
inline source_location location_from(const void*) noexcept { return {}; }
#endif

}  // namespace polyloop::detail
