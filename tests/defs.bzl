"""One behaviour test source, one cc_test per compiled-in backend."""

load("@rules_cc//cc:defs.bzl", "cc_test")

# Every backend the shared behaviour suite runs on. The io_uring and asio
# issues add theirs here (guarded by their build flags).
BACKENDS = ["epoll"]

def behaviour_test(name, srcs, deps = [], **kwargs):
    """Makes <name>_<backend> for each backend, and a test_suite <name>.

    The backend reaches the test as `-- --backend=NAME` (Boost.Test passes
    what follows `--` to the test module); tests/support reads it.
    """
    tests = []
    for backend in BACKENDS:
        test_name = "%s_%s" % (name, backend)
        cc_test(
            name = test_name,
            srcs = srcs,
            args = ["--", "--backend=" + backend],
            deps = deps + [
                "//:polyloop",
                "//tests/support",
                "//third_party:boost_test",
            ],
            **kwargs
        )
        tests.append(":" + test_name)
    native.test_suite(name = name, tests = tests)
