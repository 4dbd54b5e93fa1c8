#include "core/io/io.h"

#include <ostream>
#include <string>

namespace polyloop::detail {

namespace {
const char* kind_name(op_kind k) noexcept {
  switch (k) {
    case op_kind::read:
      return "read";
    case op_kind::write:
      return "write";
    case op_kind::recv:
      return "recv";
    case op_kind::send:
      return "send";
    case op_kind::accept:
      return "accept";
    case op_kind::connect:
      return "connect";
    case op_kind::poll:
      return "poll";
    case op_kind::close:
      return "close";
    case op_kind::recvmsg:
      return "recvmsg";
    case op_kind::sendmsg:
      return "sendmsg";
    case op_kind::pread:
      return "pread";
    case op_kind::pwrite:
      return "pwrite";
    case op_kind::fsync:
      return "fsync";
    case op_kind::openat:
      return "openat";
    case op_kind::statx:
      return "statx";
  }
  return "operation";
}
}  // namespace

void io_awaiter::describe(const void* self, std::ostream& out) {
  auto* me = static_cast<const io_awaiter*>(self);
  out << kind_name(me->kind) << " on fd " << me->fd;
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
      throw CancelledError(std::string(kind_name(kind)) + " was cancelled");
    }
  }
  if (result < 0) {
    if (result == -ECANCELED) ++counts.ops_cancelled[static_cast<std::size_t>(kind)];
    throw std::system_error(static_cast<int>(-result), std::generic_category(),
                            std::string(kind_name(kind)) + "(fd " + std::to_string(fd) + ")");
  }
  if (kind == op_kind::accept && addrlen_out_ != nullptr) *addrlen_out_ = addrlen;
  return result;
}

}  // namespace polyloop::detail
