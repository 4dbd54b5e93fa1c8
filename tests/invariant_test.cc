#include "core/errors/invariant.h"  // first: the header under test compiles on its own

// POLYLOOP_INVARIANT: a broken invariant stops the process at once, saying
// where and what, in every build mode; a kept one does nothing.
#define BOOST_TEST_MODULE invariant
#include <boost/test/unit_test.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <string>

namespace {

struct child_result {
  int status = 0;
  std::string stderr_text;
};

// Runs f in a child process and returns how it ended and what it printed on stderr.
template <class F>
child_result run_in_child(F f) {
  int fds[2];
  BOOST_TEST_REQUIRE(::pipe(fds) == 0);
  pid_t pid = ::fork();
  BOOST_TEST_REQUIRE(pid >= 0);
  if (pid == 0) {
    ::dup2(fds[1], STDERR_FILENO);
    ::close(fds[0]);
    std::signal(SIGABRT, SIG_DFL);  // Boost.Test's handler would catch the abort
    f();
    ::_exit(0);
  }
  ::close(fds[1]);
  child_result r;
  char buf[512];
  ssize_t n;
  while ((n = ::read(fds[0], buf, sizeof buf)) > 0) r.stderr_text.append(buf, static_cast<std::size_t>(n));
  ::close(fds[0]);
  ::waitpid(pid, &r.status, 0);
  return r;
}

}  // namespace

BOOST_AUTO_TEST_CASE(a_broken_invariant_aborts_naming_file_line_condition_and_what) {
  child_result r = run_in_child([] {
    int queued = 0;
    POLYLOOP_INVARIANT(queued > 0, "an operation completed that was never queued");
  });
  BOOST_TEST(WIFSIGNALED(r.status));
  BOOST_TEST(WTERMSIG(r.status) == SIGABRT);
  BOOST_TEST(r.stderr_text.find("invariant_test.cc:") != std::string::npos, r.stderr_text);
  BOOST_TEST(r.stderr_text.find("an operation completed that was never queued") != std::string::npos,
             r.stderr_text);
  BOOST_TEST(r.stderr_text.find("queued > 0") != std::string::npos, r.stderr_text);
}

BOOST_AUTO_TEST_CASE(a_kept_invariant_does_nothing) {
  child_result r = run_in_child([] {
    int queued = 1;
    POLYLOOP_INVARIANT(queued > 0, "never printed");
  });
  BOOST_TEST(WIFEXITED(r.status));
  BOOST_TEST(WEXITSTATUS(r.status) == 0);
  BOOST_TEST(r.stderr_text.empty(), r.stderr_text);
}
