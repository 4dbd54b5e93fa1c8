#include "core/io/io.h"

#include <ostream>
#include <string>

namespace polyloop::detail {

void io_awaiter::describe(const void* self, std::ostream& out) {
  auto* me = static_cast<const io_awaiter*>(self);
  out << op_kind_name(me->kind) << " on fd " << me->fd;
}

std::int64_t io_awaiter::await_resume() {
  loop_counters& counts = loop_access::counts(*task.loop);
  ++counts.ops_completed[static_cast<std::size_t>(kind)];
  if (task_root* root = task.root) {
    root->waiting.kind = nullptr;
    stepping_task = root;
    if (result == -ECANCELED && kind != op_kind::close) {
      ++counts.ops_cancelled[static_cast<std::size_t>(kind)];
      root->must_cancel = false;
      throw CancelledError(std::string(op_kind_name(kind)) + " was cancelled");
    }
  }
  if (result < 0) {
    if (result == -ECANCELED) ++counts.ops_cancelled[static_cast<std::size_t>(kind)];
    throw std::system_error(static_cast<int>(-result), std::generic_category(),
                            std::string(op_kind_name(kind)) + "(fd " + std::to_string(fd) + ")");
  }
  if (kind == op_kind::accept && addrlen_out_ != nullptr) *addrlen_out_ = addrlen;
  return result;
}

}  // namespace polyloop::detail
