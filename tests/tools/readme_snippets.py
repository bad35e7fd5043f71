#!/usr/bin/env python3
"""Compiles every C++ block of the given Markdown files, so that the code a reader copies from the README
builds. A block is compiled as it is, or, when the line before its fence is `<!-- compiled in PATH -->`,
inside the wrapper PATH (relative to the repository): the block's #include lines go where the wrapper
says `// @includes`, the rest where it says `// @snippet`. All blocks are checked in one translation
unit with `CXX -fsyntax-only FLAGS`: their #include lines first, then each block (in its wrapper) in a
namespace of its own. Errors are reported at the Markdown file's lines.
Usage: readme_snippets.py --cxx CXX [--flag F ...] FILE.md [FILE.md ...]"""
import argparse
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def blocks(path):
    """(first line number, wrapper or None, code) of each ```cpp block of a Markdown file."""
    lines = open(path, encoding="utf-8").read().split("\n")
    out, i = [], 0
    while i < len(lines):
        if lines[i].strip() == "```cpp":
            start, body = i + 1, []
            j = i - 1
            while j >= 0 and not lines[j].strip():
                j -= 1
            m = re.fullmatch(r"<!--\s*compiled in (\S+)\s*-->", lines[j].strip()) if j >= 0 else None
            i += 1
            while i < len(lines) and lines[i].strip() != "```":
                body.append(lines[i])
                i += 1
            out.append((start, m.group(1) if m else None, body))
        i += 1
    return out


def source(path, line, wrapper, body):
    """(#include lines, the rest) of one block in its wrapper, the rest starting with a #line directive."""
    def is_include(l):
        return l.lstrip().startswith("#include")
    here = f'#line {line + 1} "{path}"'
    includes = [l for l in body if is_include(l)]
    rest = [l if not is_include(l) else "" for l in body] # blank lines keep the line numbers
    if not wrapper:
        return includes, "\n".join([here] + rest)
    text = open(os.path.join(ROOT, wrapper), encoding="utf-8").read()
    if "// @snippet" not in text:
        raise ValueError(f"{wrapper} has no // @snippet line")
    text = text.replace("// @includes", "", 1).replace("// @snippet", "\n".join([here] + rest), 1)
    lines = text.split("\n")
    return includes + [l for l in lines if is_include(l)], "\n".join(l for l in lines if not is_include(l))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cxx", required=True)
    ap.add_argument("--flag", action="append", default=[])
    ap.add_argument("files", nargs="+")
    a = ap.parse_args()
    includes, parts, names = [], [], []
    for md in a.files:
        for line, wrapper, body in blocks(md):
            inc, rest = source(md, line, wrapper, body)
            includes += [l.strip() for l in inc if l.strip() not in includes]
            parts.append(f"namespace readme_block_{len(parts) + 1} {{\n{rest}\n}}")
            names.append(f"{os.path.basename(md)}:{line}" + (f" (in {wrapper})" if wrapper else ""))
    if not parts:
        print("no C++ blocks found")
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "readme_blocks.cpp")
        with open(src, "w", encoding="utf-8") as f:
            f.write("\n".join(includes) + "\n\n" + "\n\n".join(parts) + "\n")
        r = subprocess.run([a.cxx, "-fsyntax-only", *a.flag, src], capture_output=True, text=True)
    for name in names:
        print(f"{'ok' if r.returncode == 0 else 'checked'}: {name}")
    if r.returncode != 0:
        print(r.stderr[-8000:])
        print(f"FAIL: the {len(names)} blocks do not compile")
        return 1
    print(f"{len(names)} of {len(names)} blocks compile")
    return 0


if __name__ == "__main__":
    sys.exit(main())
