"""What the list in backends.bzl makes: flags, the registry, test conditions.

backend_flags() and backend_registry() are called once, in policies/BUILD;
compatible_with_backend() is for the targets that need one backend compiled
in (its tests, polyloop/asio.h), so they are skipped, not failed, when it is
compiled out.
"""

load("@rules_cc//cc:defs.bzl", "cc_library")
load(":backends.bzl", "BACKENDS")
load(":flags.bzl", "ChoiceInfo", "choice_flag")

# Names a backend cannot have: the run-time words ("auto" for the best one,
# "list" for --backend=list, "all" for loopbench's --backend=all) and the
# names of policies' own targets, since each backend's flag is
# //policies:<name>.
_RESERVED = [
    "auto",
    "list",
    "all",
    "default_backend",
    "registry",
    "backend_entry",
    "policies",
    "never",
    "incompatible",
]

_NAME_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_"

def _check(backends):
    """Fails loading when the list is malformed, naming the entry."""
    seen = {}
    ranks = {}
    for b in backends:
        where = "policies/backends.bzl: backend '%s'" % b.name
        if not b.name or b.name in _RESERVED or not b.name[0].isalpha():
            fail("%s: a name must start with a letter and not be one of %s" % (where, _RESERVED))
        for c in b.name.elems():
            if c not in _NAME_CHARS:
                fail("%s: a name is lower-case letters, digits and '_' (it names a flag and C++ symbols)" % where)
        if b.name in seen:
            fail("%s is listed twice" % where)
        seen[b.name] = True
        if b.auto_rank != None:
            if type(b.auto_rank) != "int" or b.auto_rank < 1:
                fail("%s: auto_rank is None or an int from 1" % where)
            if b.auto_rank in ranks:
                fail("%s: auto_rank %d is also '%s''s" % (where, b.auto_rank, ranks[b.auto_rank]))
            ranks[b.auto_rank] = b.name
        if b.flag_default not in [None, True, False]:
            fail("%s: flag_default is None (always compiled in), True or False" % where)
    return backends

def _rank(b):
    return b.auto_rank

def _by_preference(backends):
    """Those "auto" may pick, by auto_rank; then the others in list order."""
    ranked = sorted([b for b in backends if b.auto_rank != None], key = _rank)
    return ranked + [b for b in backends if b.auto_rank == None]

# Checked once, when this file is loaded.
_BACKENDS = _check(BACKENDS)
_BY_NAME = {b.name: b for b in _BACKENDS}

def _find(name):
    if name not in _BY_NAME:
        fail("no backend '%s' in policies/backends.bzl (it has %s)" % (name, ", ".join(_BY_NAME.keys())))
    return _BY_NAME[name]

def _enabled(name):
    """The config_setting for `name` compiled in, as a label string that
    resolves to this repository from any package (or from a workspace that
    depends on polyloop)."""
    return str(Label("//policies:%s_enabled" % name))

def compatible_with_backend(name):
    """target_compatible_with for a target that needs backend `name`
    compiled in: skipped (not failed) in `bazel test //...` without it."""
    if _find(name).flag_default == None:
        return []
    return select({
        _enabled(name): [],
        "//conditions:default": [str(Label("//policies:incompatible"))],
    })

def backend_names():
    """Every backend of the list, in list order (for per-backend targets)."""
    return [b.name for b in _BACKENDS]

def simulated_backend_names():
    """The backends that run no real descriptors (sim)."""
    return [b.name for b in _BACKENDS if b.simulated]

def backend_setups():
    """(backend, setup) for every other set-up of every backend, list order."""
    return [(b.name, s) for b in _BACKENDS for s in b.setups]

def backend_flags():
    """--//policies:default_backend=auto|<each backend>, and for each backend
    that can be compiled out --//policies:<name>=true|false with the
    config_setting :<name>_enabled."""
    choice_flag(
        name = "default_backend",
        build_setting_default = "auto",
        values = ["auto"] + backend_names(),
    )
    for b in _BACKENDS:
        if b.flag_default == None:
            continue
        choice_flag(
            name = b.name,
            build_setting_default = "true" if b.flag_default else "false",
            values = ["true", "false"],
        )
        native.config_setting(
            name = b.name + "_enabled",
            flag_values = {":" + b.name: "true"},
        )

def _cc_string(s):
    # The list's names and C++ names need no escaping; refuse anything that would.
    if '"' in s or "\\" in s:
        fail("cannot quote %r as C++" % s)
    return '"%s"' % s

def _entry_symbol(name):
    return "%s_backend_entry" % name

def _entry_source_impl(ctx):
    b = _find(ctx.attr.backend)
    probe = ",\n                      &always_available"
    if b.probe != None:
        probe = ",\n                      &::" + b.probe
    make_setup = ""
    if b.make_setup != None:
        make_setup = ",\n                      &::" + b.make_setup
    ctx.actions.write(ctx.outputs.out, """\
// Generated by policies/registry.bzl from the entry for {name} in
// policies/backends.bzl: how the registry probes and makes this backend.
#include {header}
#include "policies/backend_entry.h"

namespace polyloop::detail {{

extern const backend_entry {symbol};
constinit const backend_entry {symbol} =
    entry_of<::{cls}>({name_str}, /*in_auto=*/{in_auto}{probe}{make_setup});

}}  // namespace polyloop::detail
""".format(
        name = b.name,
        header = _cc_string(b.header),
        symbol = _entry_symbol(b.name),
        cls = b.cls,
        name_str = _cc_string(b.name),
        in_auto = "true" if b.auto_rank != None else "false",
        probe = probe,
        make_setup = make_setup,
    ))

_entry_source = rule(
    implementation = _entry_source_impl,
    attrs = {
        "backend": attr.string(mandatory = True),
        "out": attr.output(mandatory = True),
    },
    doc = "Writes the registry entry (a .cc) of one backend of the list.",
)

def _table_source_impl(ctx):
    compiled = ctx.attr.compiled_in
    default = ctx.attr.default_backend[ChoiceInfo].value
    if default != "auto" and default not in compiled:
        # The flag's own check has already rejected names not in the list.
        fail("--%s=%s needs %s compiled in (--%s=true)" % (
            ctx.attr.default_backend.label,
            default,
            default,
            ctx.attr.default_backend.label.relative(":" + default),
        ))
    known = [b.name for b in _by_preference(_BACKENDS)]
    ctx.actions.write(ctx.outputs.out, """\
// Generated by policies/registry.bzl from policies/backends.bzl for this
// build's flags: which backends are compiled in, and the default.
#include <array>

#include "policies/backend_entry.h"

namespace polyloop::detail {{

{externs}
namespace {{
constexpr std::array<const backend_entry*, {n_compiled}> compiled = {{{compiled}}};
constexpr std::array<std::string_view, {n_known}> known = {{{known}}};
}}  // namespace

std::span<const backend_entry* const> compiled_in_backends() noexcept {{ return compiled; }}
std::span<const std::string_view> known_backends() noexcept {{ return known; }}
std::string_view build_default_backend() noexcept {{ return {default}; }}

}}  // namespace polyloop::detail
""".format(
        externs = "".join(["extern const backend_entry %s;\n" % _entry_symbol(n) for n in compiled]),
        n_compiled = len(compiled),
        compiled = ", ".join(["&" + _entry_symbol(n) for n in compiled]),
        n_known = len(known),
        known = ", ".join([_cc_string(n) for n in known]),
        default = _cc_string(default),
    ))

_table_source = rule(
    implementation = _table_source_impl,
    attrs = {
        # In auto's order of preference; a select on the flags.
        "compiled_in": attr.string_list(),
        "default_backend": attr.label(mandatory = True, providers = [ChoiceInfo]),
        "out": attr.output(mandatory = True),
    },
    doc = "Writes the table of the compiled-in backends (a .cc); fails " +
          "when the default backend is compiled out.",
)

def backend_registry(name, entry_lib, default_backend):
    """cc_library `name`: the compiled-in backends for this build's flags.

    Makes, for each backend, a cc_library :<backend>_entry (its generated
    entry, depending on its target), and links in those compiled in: always
    for a backend without a flag, through :<backend>_enabled otherwise.

    Args:
      name: the library's name.
      entry_lib: the cc_library of backend_entry.h.
      default_backend: the --//policies:default_backend flag.
    """
    compiled_in = []
    deps = [entry_lib]
    for b in _by_preference(_BACKENDS):
        _entry_source(
            name = b.name + "_entry_cc",
            backend = b.name,
            out = b.name + "_entry.cc",
        )
        cc_library(
            name = b.name + "_entry",
            srcs = [":" + b.name + "_entry.cc"],
            deps = [entry_lib, b.target],
            visibility = ["//visibility:private"],
        )
        if b.flag_default == None:
            compiled_in = compiled_in + [b.name]
            deps = deps + [":" + b.name + "_entry"]
        else:
            compiled_in = compiled_in + select({
                ":%s_enabled" % b.name: [b.name],
                "//conditions:default": [],
            })
            deps = deps + select({
                ":%s_enabled" % b.name: [":%s_entry" % b.name],
                "//conditions:default": [],
            })
    _table_source(
        name = name + "_cc",
        compiled_in = compiled_in,
        default_backend = default_backend,
        out = name + ".cc",
    )
    cc_library(
        name = name,
        srcs = [":" + name + ".cc"],
        deps = deps,
        visibility = ["//visibility:private"],
    )
