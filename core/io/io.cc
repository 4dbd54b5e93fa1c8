#include "core/io/io.h"

#include <ostream>
#include <string>

namespace polyloop::detail {

void io_awaiter::describe(const void* self, std::ostream& out) {
  auto* me = static_cast<const io_awaiter*>(self);
  out << op_kind_name(me->kind) << " on fd " << me->fd;
}

std::int64_t io_awaiter::await_resume() {
  // The common path is a leaf without a frame: the failures, which build
  // strings and throw, are in throw_failure().
  ++loop_access::counts(*task.loop).ops_completed[static_cast<std::size_t>(kind)];
  if (task_root* root = task.root) {
    root->waiting.kind = nullptr;
    stepping_task = root;
  }
  if (result < 0) [[unlikely]] throw_failure();
  if (kind == op_kind::accept && addrlen_out_ != nullptr) *addrlen_out_ = addrlen;
  return result;
}

void io_awaiter::throw_failure() const {
  if (result == -ECANCELED) {
    ++loop_access::counts(*task.loop).ops_cancelled[static_cast<std::size_t>(kind)];
    // A cancelled close still reports the close's own failure.
    if (task.root != nullptr && kind != op_kind::close) {
      task.root->must_cancel = false;
      throw CancelledError(std::string(op_kind_name(kind)) + " was cancelled");
    }
  }
  throw std::system_error(static_cast<int>(-result), std::generic_category(),
                          std::string(op_kind_name(kind)) + "(fd " + std::to_string(fd) + ")");
}

}  // namespace polyloop::detail
