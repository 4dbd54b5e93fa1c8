"""The backends polyloop knows: the one list.

Everything that depends on which backends exist is made from BACKENDS below
(policies/registry.bzl does the making): the build flags
--//policies:default_backend and --//policies:<name> with their
config_settings, the compiled-in registry new_event_loop() chooses from, and
the per-backend test targets (tests/defs.bzl), hence CI's sanitizer runs.

Adding a backend: its folder under backends/ (one cc_library, visible to
//policies:__pkg__, //tests:__subpackages__ and //bench:__pkg__) and one
entry here. Nothing else names it.

The list lives in policies/ because choosing a backend is policies' job
(STYLE.md 4) and the flags it makes must be //policies:<name>; backends/ has
no package of its own to hold a .bzl.
"""

def backend(name, target, header, cls, probe = None, auto_rank = None, flag_default = None,
            setups = [], make_setup = None, simulated = False):
    """One backend of the list.

    Args:
      name: the name new_event_loop(), --backend=NAME and POLYLOOP_BACKEND
        use; equal to what the class's Backend::name() returns (a
        StaticEventLoop is made by looking that up). Also the name of its
        flag, --//policies:<name>, and part of C++ and target names, so
        lower-case letters, digits and '_'.
      target: the backend's cc_library.
      header: the header declaring `cls`, from the workspace root.
      cls: the C++ class (qualified), a final polyloop::Backend with a
        default constructor that throws BackendError when it cannot run.
      probe: None when the backend can run wherever it builds; else a C++
        function `std::string()` (qualified) that says why it cannot run on
        this host, or returns "" when it can.
      auto_rank: None when "auto" never picks it (name it to use it); else
        its place in auto's order of preference, 1 tried first.
      flag_default: None when it is always compiled in; else True or False,
        the default of its flag --//policies:<name>=true|false, which
        compiles it (and what it links) in or out.
      setups: other set-ups of the backend (e.g. io_uring without
        DEFER_TASKRUN), named NAME:SETUP wherever a backend is named, on
        which tests/defs.bzl also runs the I/O behaviour tests.
      simulated: True when the backend runs no real descriptors (sim: an
        in-memory network); tests/defs.bzl leaves out of its matrix the
        tests that need real fds (behaviour_test's real_fds).
      make_setup: with setups, the C++ function
        `std::unique_ptr<polyloop::Backend>(std::string_view setup)`
        (qualified) that makes one, throwing BackendError for an unknown one.
    """
    return struct(
        name = name,
        target = target,
        header = header,
        cls = cls,
        probe = probe,
        auto_rank = auto_rank,
        flag_default = flag_default,
        setups = setups,
        make_setup = make_setup,
        simulated = simulated,
    )

# In the order of the flags' documentation (docs/bazel.md); the order of
# preference is auto_rank's.
BACKENDS = [
    backend(
        name = "epoll",
        target = "//backends/epoll",
        header = "backends/epoll/epoll_backend.h",
        cls = "polyloop::backends::EpollBackend",
        auto_rank = 2,
        setups = ["no_pwait2"],  # epoll_wait only, as before 5.11
        make_setup = "polyloop::backends::EpollBackend::make_setup",
    ),
    backend(
        name = "io_uring",
        target = "//backends/io_uring",
        header = "backends/io_uring/io_uring_backend.h",
        cls = "polyloop::backends::IoUringBackend",
        probe = "polyloop::backends::IoUringBackend::unavailable_reason",
        auto_rank = 1,
        flag_default = True,  # a host without liburing builds with false
        # The paths of kernels 5.11-6.0, on whatever kernel runs the tests.
        setups = ["coop", "no_taskrun", "unregistered", "no_cancel_fd", "bufring"],
        make_setup = "polyloop::backends::IoUringBackend::make_setup",
    ),
    # For Asio programs (polyloop/asio.h), so "auto" never picks it.
    backend(
        name = "asio",
        target = "//backends/asio",
        header = "backends/asio/asio_backend.h",
        cls = "polyloop::backends::AsioBackend",
        flag_default = True,
    ),
    # Virtual time and an in-memory network, for tests: by name only.
    backend(
        name = "sim",
        target = "//backends/sim",
        header = "backends/sim/sim_backend.h",
        cls = "polyloop::backends::SimBackend",
        simulated = True,
    ),
]
