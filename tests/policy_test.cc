// Choosing a backend by name (policies/backends.h): explicit names, "auto",
// the POLYLOOP_BACKEND variable, the build default, unknown names, and the
// --backend command-line flag.
#include "policies/backends.h"  // first: the header under test compiles on its own

#define BOOST_TEST_MODULE policy
#include <boost/test/unit_test.hpp>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "polyloop/polyloop.h"

namespace pl = polyloop;

namespace {

// Sets (or unsets, with nullopt) POLYLOOP_BACKEND for one scope, and puts
// back what was there before.
class scoped_env {
 public:
  explicit scoped_env(std::optional<std::string> value) {
    if (const char* old = std::getenv("POLYLOOP_BACKEND")) saved_ = old;
    if (value) {
      ::setenv("POLYLOOP_BACKEND", value->c_str(), 1);
    } else {
      ::unsetenv("POLYLOOP_BACKEND");
    }
  }
  ~scoped_env() {
    if (saved_) {
      ::setenv("POLYLOOP_BACKEND", saved_->c_str(), 1);
    } else {
      ::unsetenv("POLYLOOP_BACKEND");
    }
  }
  scoped_env(const scoped_env&) = delete;
  scoped_env& operator=(const scoped_env&) = delete;

 private:
  std::optional<std::string> saved_;
};

std::vector<std::string> compiled_in_names() {
  std::vector<std::string> names;
  // available_backends() lists every backend known, compiled in or not.
  for (const auto& b : pl::available_backends()) {
    if (b.reason.find("not compiled in") == std::string::npos) names.push_back(b.name);
  }
  return names;
}

bool is_compiled_in(std::string_view name) {
  for (const auto& n : compiled_in_names()) {
    if (n == name) return true;
  }
  return false;
}

// `word` appears in `text` on its own, not only as the start of a longer
// name ("epol" inside "epoll" does not count).
bool names_exactly(const std::string& text, const std::string& word) {
  auto is_name_char = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '-';
  };
  for (std::size_t at = text.find(word); at != std::string::npos;
       at = text.find(word, at + 1)) {
    bool left_ok = at == 0 || !is_name_char(text[at - 1]);
    std::size_t end = at + word.size();
    bool right_ok = end == text.size() || !is_name_char(text[end]);
    if (left_ok && right_ok) return true;
  }
  return false;
}

// What new_event_loop(name) throws, as a message; fails the test if it
// throws something else or nothing.
std::string backend_error_for(std::string_view name) {
  try {
    auto loop = pl::new_event_loop(name);
    BOOST_ERROR("new_event_loop(\"" << name << "\") did not throw; it made a loop on "
                                    << loop->backend_name());
  } catch (const pl::BackendError& e) {
    return e.what();
  }
  return {};
}

// backend_from_args over a list of strings (argv[0] first).
std::string from_args(std::vector<std::string> args) {
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  return pl::backend_from_args(static_cast<int>(args.size()), argv.data());
}

}  // namespace

// --- explicit names and "auto" ----------------------------------------------------

BOOST_AUTO_TEST_CASE(new_event_loop_epoll_runs_on_epoll) {
  scoped_env env(std::nullopt);
  auto loop = pl::new_event_loop("epoll");
  BOOST_TEST(loop->backend_name() == "epoll");
  // And the loop works.
  int ran = 0;
  loop->call_soon([&] {
    ++ran;
    loop->stop();
  });
  loop->run_forever();
  BOOST_TEST(ran == 1);
  loop->close();
}

BOOST_AUTO_TEST_CASE(new_event_loop_auto_picks_a_real_available_backend) {
  scoped_env env(std::nullopt);
  auto loop = pl::new_event_loop("auto");
  std::string name(loop->backend_name());
  BOOST_TEST(name != "auto");
  BOOST_TEST(name != "");
  BOOST_TEST(is_compiled_in(name), name << " is not among the compiled-in backends");
  bool available = false;
  for (const auto& b : pl::available_backends()) {
    if (b.name == name) available = b.available;
  }
  BOOST_TEST(available, name << " was picked but is not available on this host");
  BOOST_TEST(pl::resolve_backend_name("auto") == name);
  loop->close();
}

// --- the empty name: POLYLOOP_BACKEND, else the build default ---------------------

BOOST_AUTO_TEST_CASE(empty_name_uses_polyloop_backend_when_set) {
  {
    scoped_env env(std::string("epoll"));
    auto loop = pl::new_event_loop("");
    BOOST_TEST(loop->backend_name() == "epoll");
    BOOST_TEST(pl::resolve_backend_name("") == "epoll");
  }
  {
    scoped_env env(std::string("auto"));
    BOOST_TEST(pl::new_event_loop("")->backend_name() == pl::resolve_backend_name("auto"));
  }
  {
    // new_event_loop() with no argument is the same as "".
    scoped_env env(std::string("epoll"));
    BOOST_TEST(pl::new_event_loop()->backend_name() == "epoll");
  }
}

BOOST_AUTO_TEST_CASE(empty_name_without_polyloop_backend_uses_the_build_default) {
  scoped_env env(std::nullopt);
  std::string_view def = pl::default_backend_name();
  BOOST_TEST(!def.empty());
  BOOST_TEST((def == "auto" || is_compiled_in(def)),
             "the build default '" << def << "' is neither auto nor compiled in");
  std::string expected = pl::resolve_backend_name(def);
  BOOST_TEST(is_compiled_in(expected));
  BOOST_TEST(pl::resolve_backend_name("") == expected);
  auto loop = pl::new_event_loop("");
  BOOST_TEST(loop->backend_name() == expected);
  // An empty variable counts as unset.
  scoped_env empty(std::string(""));
  BOOST_TEST(pl::new_event_loop("")->backend_name() == expected);
}

BOOST_AUTO_TEST_CASE(an_explicit_name_wins_over_polyloop_backend) {
  scoped_env env(std::string("no-such-backend"));
  BOOST_TEST(pl::new_event_loop("epoll")->backend_name() == "epoll");
  BOOST_TEST(pl::resolve_backend_name("epoll") == "epoll");
}

// --- unknown names -----------------------------------------------------------------

BOOST_AUTO_TEST_CASE(unknown_name_throws_backend_error_naming_it_and_the_choices) {
  scoped_env env(std::nullopt);
  std::string msg = backend_error_for("epol");
  BOOST_TEST_MESSAGE("message: " << msg);
  BOOST_TEST(names_exactly(msg, "epol"), "the bad name is not in: " << msg);
  BOOST_TEST(names_exactly(msg, "epoll"), "the compiled-in backends are not listed: " << msg);
  for (const auto& name : compiled_in_names()) {
    BOOST_TEST(names_exactly(msg, name), name << " missing from: " << msg);
  }
  BOOST_TEST(msg.find("--backend") != std::string::npos, msg);

  std::string other = backend_error_for("no-such-backend");
  BOOST_TEST(names_exactly(other, "no-such-backend"), other);

  // The lower-level entry points reject it the same way.
  BOOST_CHECK_THROW(pl::resolve_backend_name("epol"), pl::BackendError);
  BOOST_CHECK_THROW(pl::make_backend("epol"), pl::BackendError);
  // Names are exact: no case folding, no surrounding spaces.
  BOOST_CHECK_THROW(pl::new_event_loop("EPOLL"), pl::BackendError);
  BOOST_CHECK_THROW(pl::new_event_loop(" epoll"), pl::BackendError);
}

BOOST_AUTO_TEST_CASE(unknown_polyloop_backend_makes_the_empty_name_throw) {
  scoped_env env(std::string("bogus-backend"));
  std::string msg = backend_error_for("");
  BOOST_TEST(names_exactly(msg, "bogus-backend"), "the bad value is not in: " << msg);
  BOOST_TEST(names_exactly(msg, "epoll"), msg);
  BOOST_CHECK_THROW(pl::new_event_loop(), pl::BackendError);
  BOOST_CHECK_THROW(pl::resolve_backend_name(""), pl::BackendError);
}

// --- --backend on the command line --------------------------------------------------

BOOST_AUTO_TEST_CASE(backend_from_args_reads_the_flag_in_both_spellings) {
  BOOST_TEST(from_args({"prog", "--backend=epoll"}) == "epoll");
  BOOST_TEST(from_args({"prog", "--backend", "epoll"}) == "epoll");
  BOOST_TEST(from_args({"prog", "--backend=io_uring"}) == "io_uring");
}

BOOST_AUTO_TEST_CASE(backend_from_args_is_empty_when_the_flag_is_absent) {
  BOOST_TEST(from_args({"prog"}) == "");
  BOOST_TEST(from_args({"prog", "--verbose", "-x", "epoll"}) == "");
  BOOST_TEST(pl::backend_from_args(0, nullptr) == "");
  // A longer flag that merely starts with --backend is not it.
  BOOST_TEST(from_args({"prog", "--backends=epoll"}) == "");
  BOOST_TEST(from_args({"prog", "--backend-list"}) == "");
  // The program name is not an argument.
  BOOST_TEST(from_args({"--backend=epoll"}) == "");
}

BOOST_AUTO_TEST_CASE(backend_from_args_ignores_other_arguments) {
  BOOST_TEST(from_args({"prog", "--verbose", "--backend=asio", "file.txt", "-n", "3"}) == "asio");
  BOOST_TEST(from_args({"prog", "-v", "--backend", "io_uring", "--threads=4"}) == "io_uring");
  BOOST_TEST(from_args({"prog", "--log_level=all", "--", "--backend=epoll"}) == "epoll");
}

// --- what is compiled in --------------------------------------------------------------

BOOST_AUTO_TEST_CASE(available_backends_lists_epoll_as_available) {
  auto list = pl::available_backends();
  BOOST_TEST_REQUIRE(!list.empty());
  bool found = false;
  for (const auto& b : list) {
    BOOST_TEST(!b.name.empty());
    if (b.name == "epoll") {
      found = true;
      BOOST_TEST(b.available);
      BOOST_TEST(b.reason.empty(), "reason given for an available backend: " << b.reason);
    }
    // Every listed backend is accepted by name (an unavailable one may fail
    // to run, but not as an unknown name).
    if (b.available) BOOST_CHECK_NO_THROW(pl::new_event_loop(b.name));
  }
  BOOST_TEST(found, "epoll is not listed");
}
