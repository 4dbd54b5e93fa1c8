"""Validated build flags for choosing backends (no bazel_skylib offline).

A typo in a value fails the build with the list of valid values, unlike
--define, which accepts anything silently.
"""

ChoiceInfo = provider(fields = ["value"])

def _choice_flag_impl(ctx):
    value = ctx.build_setting_value
    if value not in ctx.attr.values:
        fail("%s: '%s' is not a valid value; valid values are: %s" % (
            ctx.label,
            value,
            ", ".join(ctx.attr.values),
        ))
    return [ChoiceInfo(value = value)]

choice_flag = rule(
    implementation = _choice_flag_impl,
    build_setting = config.string(flag = True),
    attrs = {"values": attr.string_list(mandatory = True)},
    doc = "A string flag restricted to `values`.",
)
