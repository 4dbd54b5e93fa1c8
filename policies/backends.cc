#include "policies/backends.h"

#include <cstdlib>
#include <cstring>

#include "backends/epoll/epoll_backend.h"

#ifndef POLYLOOP_DEFAULT_BACKEND
#define POLYLOOP_DEFAULT_BACKEND "auto"
#endif

namespace polyloop {

namespace {

struct backend_entry {
  std::string_view name;
  std::unique_ptr<Backend> (*make)();
};

// Preference order for "auto". Other backends join this table when they are
// compiled in.
const backend_entry compiled_in[] = {
    {"epoll", [] { return std::unique_ptr<Backend>(std::make_unique<backends::EpollBackend>()); }},
};

std::string compiled_list() {
  std::string out;
  for (const backend_entry& e : compiled_in) {
    if (!out.empty()) out += ", ";
    out += e.name;
  }
  return out;
}

const backend_entry* find(std::string_view name) {
  for (const backend_entry& e : compiled_in) {
    if (e.name == name) return &e;
  }
  return nullptr;
}

}  // namespace

std::string_view default_backend_name() noexcept { return POLYLOOP_DEFAULT_BACKEND; }

std::vector<BackendInfo> available_backends() {
  std::vector<BackendInfo> out;
  for (const backend_entry& e : compiled_in) out.push_back({std::string(e.name), true, {}});
  return out;
}

std::string resolve_backend_name(std::string_view name) {
  if (name.empty()) {
    const char* env = std::getenv("POLYLOOP_BACKEND");
    name = (env != nullptr && *env != '\0') ? std::string_view(env) : default_backend_name();
  }
  if (name == "auto") return std::string(compiled_in[0].name);
  if (find(name) == nullptr) {
    throw BackendError("unknown backend '" + std::string(name) + "': this build has " +
                       compiled_list() +
                       " (and 'auto'); choose one with --backend=NAME or POLYLOOP_BACKEND=NAME");
  }
  return std::string(name);
}

std::unique_ptr<Backend> make_backend(std::string_view name) {
  return find(resolve_backend_name(name))->make();
}

std::unique_ptr<EventLoop> new_event_loop(std::string_view backend, Clock& clock) {
  return std::make_unique<EventLoop>(make_backend(backend), clock);
}

std::string backend_from_args(int argc, char** argv) {
  constexpr std::string_view flag = "--backend";
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg.substr(0, flag.size()) != flag) continue;
    if (arg.size() > flag.size() && arg[flag.size()] == '=') {
      return std::string(arg.substr(flag.size() + 1));
    }
    if (arg.size() == flag.size() && i + 1 < argc) return argv[i + 1];
  }
  return {};
}

void detail::finish_run(EventLoop& loop) noexcept {
  try {
    loop.cancel_all_tasks();
  } catch (...) {
    loop.call_exception_handler(
        {"run(): cancelling the remaining tasks failed", std::current_exception()});
  }
  try {
    loop.close();
  } catch (...) {
    loop.call_exception_handler({"run(): closing the loop failed", std::current_exception()});
  }
}

}  // namespace polyloop
