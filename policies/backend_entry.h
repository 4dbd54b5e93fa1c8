// The registry's view of one backend: how policies/backends.cc probes it and
// makes it (or a StaticEventLoop over it) without naming its type.
//
// policies/registry.bzl generates, from the list in policies/backends.bzl,
// one .cc per backend defining its entry (the only code that includes the
// backend's header), and for each build's flags the table of the compiled-in
// entries declared below. Entries are constant-initialised, so the table can
// be read at any time, even from other static initialisers.
#pragma once

#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "core/backend/backend.h"
#include "core/loop/event_loop.h"

namespace polyloop::detail {

struct backend_entry {
  std::string_view name;
  std::string (*unavailable_reason)();  // empty: can run here
  std::unique_ptr<Backend> (*make)();   // throws BackendError when it cannot run
  bool in_auto;                         // a candidate of "auto"; else chosen by name only
  // A StaticEventLoop over a backend that make() made.
  std::unique_ptr<EventLoop> (*make_static_loop)(std::unique_ptr<Backend> backend, Clock& clock);
  // Another set-up of the backend, for "NAME:SETUP" (null: it has none);
  // throws BackendError naming its set-ups for an unknown one.
  std::unique_ptr<Backend> (*make_setup)(std::string_view setup);
};

// The compiled-in backends: those "auto" may pick in its order of
// preference, then the others.
std::span<const backend_entry* const> compiled_in_backends() noexcept;
// Every backend of the list, compiled in or not, in the same order.
std::span<const std::string_view> known_backends() noexcept;
// The value of --//policies:default_backend: "auto" or a compiled-in name.
std::string_view build_default_backend() noexcept;

// The probe of a backend that can run wherever it builds.
inline std::string always_available() { return {}; }

template <class B>
std::unique_ptr<Backend> make_backend_of() {
  return std::make_unique<B>();
}

template <class B>
std::unique_ptr<EventLoop> static_loop_of(std::unique_ptr<Backend> backend, Clock& clock) {
  return std::make_unique<StaticEventLoop<B>>(
      std::unique_ptr<B>(static_cast<B*>(backend.release())), clock);
}

template <class B>
constexpr backend_entry entry_of(std::string_view name, bool in_auto,
                                 std::string (*probe)() = &always_available,
                                 std::unique_ptr<Backend> (*make_setup)(std::string_view) = nullptr) {
  return {name, probe, &make_backend_of<B>, in_auto, &static_loop_of<B>, make_setup};
}

}  // namespace polyloop::detail
