"""polyloop_dependencies(): every repository polyloop needs, in one list.

Bazel 4.2.3 in WORKSPACE mode does not read a dependency's own WORKSPACE, so
a workspace that uses polyloop calls this macro (polyloop's own WORKSPACE
does too). Each repository is declared only if the caller has not declared
one of that name already, so a monorepo's own rules_cc or rules_java win.

What it declares are offline stand-ins: Bazel 4.2.3 otherwise downloads
rules_cc, rules_java and remote_coverage_tools, and this project builds with
no network. They only re-export Bazel's native rules. Boost and liburing are
the system's (Debian packages), wrapped by @polyloop//third_party.
"""

_RULES_CC_DEFS = '''"""Offline stand-in for @rules_cc//cc:defs.bzl: Bazel's native C++ rules."""

cc_binary = native.cc_binary
cc_import = native.cc_import
cc_library = native.cc_library
cc_test = native.cc_test
cc_toolchain = native.cc_toolchain
cc_toolchain_suite = native.cc_toolchain_suite
'''

_RULES_JAVA_DEFS = '''"""Offline stand-in for @rules_java//java:defs.bzl: Bazel's native Java rules."""

java_binary = native.java_binary
java_import = native.java_import
java_library = native.java_library
java_runtime = native.java_runtime
java_toolchain = native.java_toolchain
'''

# Bazel's test rules name these two targets even when coverage is off.
_COVERAGE_TOOLS_BUILD = '''filegroup(
    name = "coverage_report_generator",
    srcs = [],
    visibility = ["//visibility:public"],
)

filegroup(
    name = "lcov_merger",
    srcs = [],
    visibility = ["//visibility:public"],
)
'''

def _standin_repository_impl(rctx):
    rctx.file("WORKSPACE", 'workspace(name = "%s")\n' % rctx.name)
    for path, content in rctx.attr.files.items():
        rctx.file(path, content)

_standin_repository = repository_rule(
    implementation = _standin_repository_impl,
    attrs = {"files": attr.string_dict(doc = "path -> content")},
    doc = "A repository made of the given small files; nothing is downloaded.",
)

def _declare(name, files):
    if not native.existing_rule(name):
        _standin_repository(name = name, files = files)

def polyloop_dependencies():
    """Declares what polyloop needs that the caller has not declared yet."""
    _declare("rules_cc", {
        "BUILD": "",
        "cc/BUILD": "",
        "cc/defs.bzl": _RULES_CC_DEFS,
    })
    _declare("rules_java", {
        "BUILD": "",
        "java/BUILD": "",
        "java/defs.bzl": _RULES_JAVA_DEFS,
    })
    _declare("remote_coverage_tools", {
        "BUILD": _COVERAGE_TOOLS_BUILD,
    })
