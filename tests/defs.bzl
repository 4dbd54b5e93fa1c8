"""One behaviour test source, one cc_test per compiled-in backend."""

load("@rules_cc//cc:defs.bzl", "cc_test")

# Every backend the shared behaviour suite runs on, with the condition under
# which it is compiled in. A backend compiled out (a build flag) leaves its
# tests SKIPPED in `bazel test //...` rather than failing.
BACKENDS = {
    "epoll": None,
    "io_uring": "//policies:io_uring_enabled",
    "asio": "//policies:asio_enabled",
}

def _compatible_with(condition):
    if condition == None:
        return []
    return select({
        condition: [],
        "//conditions:default": ["//policies:incompatible"],
    })

def behaviour_test(name, srcs, deps = [], **kwargs):
    """Makes <name>_<backend> for each backend, and a test_suite <name>.

    The backend reaches the test as `-- --backend=NAME` (Boost.Test passes
    what follows `--` to the test module); tests/support reads it.
    """
    tests = []
    for backend, condition in BACKENDS.items():
        test_name = "%s_%s" % (name, backend)
        cc_test(
            name = test_name,
            srcs = srcs,
            args = ["--", "--backend=" + backend],
            target_compatible_with = _compatible_with(condition),
            deps = deps + [
                "//:polyloop",
                "//tests/support",
                "//third_party:boost_test",
            ],
            **kwargs
        )
        tests.append(":" + test_name)
    native.test_suite(name = name, tests = tests)
