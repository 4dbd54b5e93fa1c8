#include "polyloop/asio.h"

#include <string>

#include "backends/asio/asio_backend.h"

namespace polyloop {

boost::asio::io_context& asio_context(EventLoop& loop) {
  auto* backend = dynamic_cast<backends::AsioBackend*>(&detail::loop_access::backend(loop));
  if (backend == nullptr) {
    throw BackendError("asio_context: this loop runs on the " + std::string(loop.backend_name()) +
                       " backend, which has no io_context; create it with "
                       "new_event_loop(\"asio\") or --backend=asio");
  }
  return backend->context();
}

}  // namespace polyloop
