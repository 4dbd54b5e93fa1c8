// seccomp_exec RULE... -- PROGRAM ARGS...: runs PROGRAM under a seccomp filter
// that makes the io_uring system calls fail, as a container's profile or a
// hardened host does. The fault matrix runs polyloop's tests under it to show
// that "auto" falls back to epoll, and that a ring refused after its set-up is
// a clear error (issue 16).
//
// Each RULE is SYSCALL=ERRNO with SYSCALL one of io_uring_setup,
// io_uring_enter, io_uring_register, pidfd_open (net/subprocess's fallback)
// and ERRNO one of EPERM, ENOSYS, EACCES.
// Every other system call is allowed. The filter is a hand-built classic BPF
// program because libseccomp is not a dependency of the project; it is a few
// instructions, checked against the architecture so that a foreign ABI's
// numbers are never matched by mistake.
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace {

#if defined(__x86_64__)
constexpr unsigned kArch = AUDIT_ARCH_X86_64;
#elif defined(__aarch64__)
constexpr unsigned kArch = AUDIT_ARCH_AARCH64;
#else
#error "seccomp_exec: add this architecture's AUDIT_ARCH value"
#endif

struct rule {
  int nr;
  int err;
};

int syscall_number(const std::string& name) {
  if (name == "io_uring_setup") return __NR_io_uring_setup;
  if (name == "io_uring_enter") return __NR_io_uring_enter;
  if (name == "io_uring_register") return __NR_io_uring_register;
  if (name == "pidfd_open") return __NR_pidfd_open;  // subprocesses' fallback (issue 12)
  return -1;
}

int errno_value(const std::string& name) {
  if (name == "EPERM") return EPERM;
  if (name == "ENOSYS") return ENOSYS;
  if (name == "EACCES") return EACCES;
  return -1;
}

int usage(const char* why) {
  std::fprintf(stderr,
               "seccomp_exec: %s\nusage: seccomp_exec SYSCALL=ERRNO... -- PROGRAM ARGS...\n"
               "  SYSCALL: io_uring_setup | io_uring_enter | io_uring_register | pidfd_open\n"
               "  ERRNO:   EPERM | ENOSYS | EACCES\n",
               why);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<rule> rules;
  int i = 1;
  for (; i < argc && std::strcmp(argv[i], "--") != 0; ++i) {
    std::string arg = argv[i];
    std::size_t eq = arg.find('=');
    if (eq == std::string::npos) return usage(("not SYSCALL=ERRNO: " + arg).c_str());
    int nr = syscall_number(arg.substr(0, eq));
    int err = errno_value(arg.substr(eq + 1));
    if (nr < 0 || err < 0) return usage(("unknown system call or errno in " + arg).c_str());
    rules.push_back({nr, err});
  }
  if (rules.empty() || i + 1 >= argc) return usage("need at least one rule, then -- PROGRAM");

  // Load arch; kill on a foreign one; load nr; one JEQ + RET per rule; allow.
  std::vector<sock_filter> prog;
  prog.push_back(BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch)));
  prog.push_back(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, kArch, 1, 0));
  prog.push_back(BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS));
  prog.push_back(BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)));
  for (const rule& r : rules) {
    prog.push_back(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, static_cast<unsigned>(r.nr), 0, 1));
    prog.push_back(BPF_STMT(BPF_RET | BPF_K,
                            SECCOMP_RET_ERRNO | (static_cast<unsigned>(r.err) & SECCOMP_RET_DATA)));
  }
  prog.push_back(BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
  sock_fprog fprog{static_cast<unsigned short>(prog.size()), prog.data()};

  // Without no_new_privs an unprivileged process may not install a filter.
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
    std::perror("seccomp_exec: prctl(PR_SET_NO_NEW_PRIVS)");
    return 2;
  }
  if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &fprog) != 0) {
    std::perror("seccomp_exec: prctl(PR_SET_SECCOMP)");
    return 2;
  }
  execv(argv[i + 1], argv + i + 1);
  std::fprintf(stderr, "seccomp_exec: cannot run %s: %s\n", argv[i + 1], std::strerror(errno));
  return 127;
}
