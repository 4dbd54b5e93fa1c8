"""One behaviour test source, one cc_test per backend of policies/backends.bzl."""

load("@rules_cc//cc:defs.bzl", "cc_library", "cc_test")
load(
    "//policies:registry.bzl",
    "backend_names",
    "backend_setups",
    "compatible_with_backend",
    "simulated_backend_names",
)

def behaviour_test(name, srcs, deps = [], static_dispatch = False, threads = False, setups = False,
                   real_fds = None, **kwargs):
    """Makes <name>_<backend> for each backend, and a test_suite <name>.

    The backend reaches the test as `-- --backend=NAME` (Boost.Test passes
    what follows `--` to the test module); tests/support reads it. A backend
    compiled out (a build flag) leaves its tests SKIPPED in `bazel test //...`
    rather than failing. With static_dispatch, also <name>_static_<backend>:
    the same tests on a StaticEventLoop (`--dispatch=static`).

    With threads (the tests run code on other threads), <name>_<backend> is
    tagged "threads": .ci/run runs those under TSan. The static variants are
    not: the cross-thread code they run is the same.

    With setups (the tests that do I/O), also <name>_<backend>_<setup> for
    each other set-up of policies/backends.bzl (`--backend=io_uring:coop`:
    the paths of older kernels). Not tagged "threads": they run plain and
    under ASan, not TSan, to keep CI's time.

    With real_fds (a string: why the tests need real descriptors: pipes,
    socketpairs, files polled, datagrams, processes), no variant is made for
    a simulated backend (sim), which only runs sockets made through net/.
    docs/testing.md lists the tests left out and why.
    """
    # Compiled once, linked into every variant (alwayslink: the test cases
    # register themselves from static initialisers). linkstatic: into the
    # executable, not a shared library, so that a test's replacement
    # operator new (tests/support/allocation_counter.h) takes precedence
    # over the sanitizers' own, as a definition in the executable does.
    cc_library(
        name = name + "_cases",
        srcs = srcs,
        testonly = True,
        alwayslink = True,
        linkstatic = True,
        deps = deps + [
            "//:polyloop",
            "//tests/support",
            "//third_party:boost_test",
        ],
    )
    srcs = []
    deps = [":" + name + "_cases"]
    tests = []
    variants = [("", [], ["threads"] if threads else [])]
    if static_dispatch:
        variants.append(("static_", ["--dispatch=static"], []))
    for prefix, extra_args, extra_tags in variants:
        for backend in backend_names():
            if real_fds and backend in simulated_backend_names():
                continue
            test_name = "%s_%s%s" % (name, prefix, backend)
            _one_test(test_name, srcs, deps, backend, backend, extra_args, extra_tags, kwargs)
            tests.append(":" + test_name)
    if setups:
        for backend, setup in backend_setups():
            test_name = "%s_%s_%s" % (name, backend, setup)
            _one_test(test_name, srcs, deps, backend, backend + ":" + setup, [], [], kwargs)
            tests.append(":" + test_name)
    # A manual test stays out of `bazel test //...` only if its suite is
    # manual too: //... expands a test_suite into all its tests.
    suite_tags = ["manual"] if "manual" in kwargs.get("tags", []) else []
    native.test_suite(name = name, tests = tests, tags = suite_tags)

def _one_test(test_name, srcs, deps, backend, backend_arg, extra_args, extra_tags, kwargs):
    args = dict(kwargs)
    tags = args.pop("tags", []) + extra_tags
    cc_test(
        name = test_name,
        srcs = srcs,
        args = ["--", "--backend=" + backend_arg] + extra_args,
        tags = tags,
        target_compatible_with = compatible_with_backend(backend),
        deps = deps + [
            "//:polyloop",
            "//tests/support",
            "//third_party:boost_test",
        ],
        **args
    )
