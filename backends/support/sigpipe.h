// Writes that report EPIPE instead of raising SIGPIPE, without changing the
// process's SIGPIPE disposition (a library must not: the program may rely on
// SIGPIPE, or have its own handler).
//
// write(2) to a pipe or socket whose reader is gone sends SIGPIPE to the
// calling thread, whose default action ends the process (status 141);
// send(2) has MSG_NOSIGNAL, write(2) has nothing. So a write (op_kind::write)
// goes, in order of preference:
// - with RWF_NOSIGNAL (pwritev2, or the rw_flags of an IORING_OP_WRITE),
//   where the kernel has it (Linux 6.18): no signal, one syscall, pipes and
//   sockets alike. Probed once per process (kernel_has_rwf_nosignal()).
// - else, on a socket, as send(MSG_NOSIGNAL) (the readiness backends learn
//   once per fd that it is not a socket, from ENOTSOCK);
// - else with SIGPIPE blocked in the calling thread around the call
//   (sigpipe_guard): a SIGPIPE the call raised stays pending, is taken back
//   with a zero-timeout sigtimedwait unless one was already pending before,
//   and the thread's mask is restored. Two or three more syscalls, paid only
//   by writes to non-sockets on kernels without RWF_NOSIGNAL.
//
// Building with -DPOLYLOOP_NO_RWF_NOSIGNAL makes the probe answer "no", so
// that the fallbacks can be tested on a kernel that has the flag.
#pragma once

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <ctime>

namespace polyloop::detail {

// RWF_NOSIGNAL from <linux/fs.h> of Linux 6.18; older headers lack it. The
// kernel rejects flags it does not know with EOPNOTSUPP, which is how the
// probe below tells.
#ifdef RWF_NOSIGNAL
constexpr int rwf_nosignal = RWF_NOSIGNAL;
#else
constexpr int rwf_nosignal = 0x00000100;
#endif

// Whether pwritev2 (and so IORING_OP_WRITE's rw_flags) accepts RWF_NOSIGNAL.
// A one-byte write into a fresh pipe: nothing can raise SIGPIPE.
inline bool kernel_has_rwf_nosignal() noexcept {
#ifdef POLYLOOP_NO_RWF_NOSIGNAL
  return false;
#else
  static const bool has = [] {
    int p[2];
    if (::pipe2(p, O_CLOEXEC | O_NONBLOCK) != 0) return false;
    char c = 0;
    iovec iov{&c, 1};
    bool ok = ::pwritev2(p[1], &iov, 1, -1, rwf_nosignal) == 1;
    ::close(p[0]);
    ::close(p[1]);
    return ok;
  }();
  return has;
#endif
}

// Blocks SIGPIPE in the calling thread for its lifetime, and puts the mask
// back as it was. A SIGPIPE raised meanwhile for this thread is consumed by
// consume_raised() (or by consume_if_raised() when the caller cannot tell),
// unless one was pending before the guard: that one belongs to someone else.
class sigpipe_guard {
 public:
  sigpipe_guard() noexcept {
    sigemptyset(&pipe_);
    sigaddset(&pipe_, SIGPIPE);
    ::pthread_sigmask(SIG_BLOCK, &pipe_, &old_);
    sigset_t pending;
    was_pending_ = ::sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE) == 1;
  }
  ~sigpipe_guard() {
    // Unblocking with nothing pending delivers nothing.
    if (sigismember(&old_, SIGPIPE) != 1) ::pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }
  sigpipe_guard(const sigpipe_guard&) = delete;
  sigpipe_guard& operator=(const sigpipe_guard&) = delete;

  // The guarded call failed with EPIPE: it raised SIGPIPE for this thread.
  void consume_raised() noexcept {
    if (was_pending_) return;
    timespec zero{};
    while (::sigtimedwait(&pipe_, nullptr, &zero) < 0 && errno == EINTR) {
    }
  }
  // The guarded call may have raised SIGPIPE (an io_uring_enter that ran
  // writes): consume it if it is pending now.
  void consume_if_raised() noexcept {
    if (was_pending_) return;
    sigset_t pending;
    if (::sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE) == 1) consume_raised();
  }

 private:
  sigset_t pipe_;
  sigset_t old_;
  bool was_pending_ = false;
};

}  // namespace polyloop::detail
