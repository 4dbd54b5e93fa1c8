#!/usr/bin/env python3
"""Checks Markdown files for what renders wrong without a word of warning:

  - a table right after a paragraph (GitHub needs a blank line before it, or
    the rows show as text), a table without its |---| row, or a | inside a
    code span of a table row (it splits the cell; write \\| there);
  - a code block that is never closed;
  - a relative link to a file that does not exist, or to an #anchor that no
    heading of the target makes (GitHub's rule: the heading's text in lower
    case, punctuation dropped, spaces as hyphens).

  python3 docs/check_markdown.py README.md docs/*.md

//docs:markdown_test runs it on README.md and docs/*.md with --data_only:
there, only the test's data can be seen, so a link to a file other than
Markdown that is not in the data is noted, not failed.
"""

import html
import os
import re
import sys

FENCE = re.compile(r"^\s*(`{3,}|~{3,})")
TABLE_ROW = re.compile(r"^\s*\|")
DELIMITER_ROW = re.compile(r"^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
LINK = re.compile(r"!?\[([^\]]*)\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def prose_lines(lines):
    """(line number, text) of each line outside fenced code blocks, and the
    line of a fence left open (or None)."""
    out = []
    fence = None
    open_at = None
    for number, text in enumerate(lines, 1):
        m = FENCE.match(text)
        if fence is None:
            if m:
                fence, open_at = m.group(1), number
                continue
            out.append((number, text))
        elif m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence) \
                and text.strip().strip(fence[0]) == "":
            fence = None
    return out, (open_at if fence is not None else None)


def slug(heading_text):
    text = CODE_SPAN.sub(lambda m: m.group(2), heading_text)
    text = LINK.sub(lambda m: m.group(1), text)
    text = html.unescape(text).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


_anchors = {}


def anchors_of(path):
    if path not in _anchors:
        with open(path, encoding="utf-8") as f:
            lines, _ = prose_lines(f.read().split("\n"))
        seen = {}
        found = set()
        for _, text in lines:
            m = HEADING.match(text)
            if not m:
                continue
            base = slug(m.group(2))
            n = seen.get(base, 0)
            seen[base] = n + 1
            found.add(base if n == 0 else "%s-%d" % (base, n))
        _anchors[path] = found
    return _anchors[path]


def check(path, data_only):
    problems = []
    with open(path, encoding="utf-8") as f:
        all_lines = f.read().split("\n")
    lines, open_fence = prose_lines(all_lines)
    if open_fence is not None:
        problems.append("%s:%d: this code block is never closed" % (path, open_fence))

    previous = ""
    for i, (number, text) in enumerate(lines):
        is_row = bool(TABLE_ROW.match(text))
        starts_table = is_row and not TABLE_ROW.match(previous)
        if starts_table:
            if previous.strip() != "":
                problems.append(
                    "%s:%d: a table needs a blank line before it, or it renders as text"
                    % (path, number))
            following = lines[i + 1][1] if i + 1 < len(lines) else ""
            if not DELIMITER_ROW.match(following):
                problems.append(
                    "%s:%d: a table's second line must be its |---| row" % (path, number))
        if is_row:
            for span in CODE_SPAN.finditer(text):
                if re.search(r"(?<!\\)\|", span.group(2)):
                    problems.append("%s:%d: a | inside `...` splits this table's cell: write \\|"
                                    % (path, number))
        previous = text

        for m in LINK.finditer(CODE_SPAN.sub("", text)):
            target = m.group(2)
            if SCHEME.match(target):
                continue
            file_part, _, anchor = target.partition("#")
            linked = os.path.normpath(os.path.join(os.path.dirname(path), file_part)) \
                if file_part else path
            if not os.path.exists(linked):
                if data_only and not linked.endswith(".md"):
                    print("%s:%d: link to %s: not in the test's data, not checked"
                          % (path, number, target))
                else:
                    problems.append("%s:%d: link to %s: no such file" % (path, number, target))
                continue
            if anchor and linked.endswith(".md") and anchor not in anchors_of(linked):
                problems.append("%s:%d: link to %s: %s has no heading with the anchor #%s"
                                % (path, number, target, linked, anchor))
    return problems


def main(args):
    data_only = "--data_only" in args
    paths = [a for a in args if a != "--data_only"]
    if not paths:
        sys.exit("usage: check_markdown.py [--data_only] FILE.md...")
    problems = []
    for path in paths:
        problems += check(os.path.normpath(path), data_only)
    for p in problems:
        print(p)
    if problems:
        sys.exit(1)
    print("%d Markdown files checked: tables, code blocks, links and anchors are fine"
          % len(paths))


if __name__ == "__main__":
    main(sys.argv[1:])
