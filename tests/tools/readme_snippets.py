#!/usr/bin/env python3
"""Compiles every C++ block of the given Markdown files, so that the code a reader copies from the README
builds. A block is compiled as it is, or, when the line before its fence is `<!-- compiled in PATH -->`,
inside the wrapper PATH (relative to the repository): the block's #include lines go where the wrapper
says `// @includes`, the rest where it says `// @snippet`. Each block is checked with `CXX -fsyntax-only
FLAGS`, one at a time (the test suites run beside it); one line per block, then the compiler's errors
for the failures.
Usage: readme_snippets.py --cxx CXX [--flag F ...] FILE.md [FILE.md ...]"""
import argparse
import concurrent.futures
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
    includes = [l for l in body if l.lstrip().startswith("#include")]
    rest = [l if not l.lstrip().startswith("#include") else "" for l in body]
    here = f'#line {line + 1} "{path}"'
    if not wrapper:
        return "\n".join([here] + body) + "\n"
    text = open(os.path.join(ROOT, wrapper), encoding="utf-8").read()
    if "// @snippet" not in text:
        raise ValueError(f"{wrapper} has no // @snippet line")
    text = text.replace("// @includes", "\n".join(includes), 1)
    return text.replace("// @snippet", "\n".join([here] + rest), 1)


def check(cxx, flags, name, code, tmp):
    src = os.path.join(tmp, re.sub(r"[^A-Za-z0-9]+", "_", name) + ".cpp")
    with open(src, "w", encoding="utf-8") as f:
        f.write(code)
    r = subprocess.run([cxx, "-fsyntax-only", *flags, src], capture_output=True, text=True)
    return name, r.returncode == 0, r.stderr


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cxx", required=True)
    ap.add_argument("--flag", action="append", default=[])
    ap.add_argument("files", nargs="+")
    a = ap.parse_args()
    jobs = []
    for md in a.files:
        for line, wrapper, body in blocks(md):
            jobs.append((f"{os.path.basename(md)}:{line}", source(md, line, wrapper, body)))
    if not jobs:
        print("no C++ blocks found")
        return 1
    failed = 0
    with tempfile.TemporaryDirectory() as tmp, concurrent.futures.ThreadPoolExecutor(1) as pool:
        for name, ok, err in pool.map(lambda j: check(a.cxx, a.flag, j[0], j[1], tmp), jobs):
            print(f"{'ok' if ok else 'FAIL'}: {name}")
            if not ok:
                failed += 1
                print(err[-4000:])
    print(f"{len(jobs) - failed} of {len(jobs)} blocks compile")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
