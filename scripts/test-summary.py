#!/usr/bin/env python3
"""Counts test results from Meson testlog.json files (and, with --extra FILE, the lines of FILE of the
form '<kind> <name>: PASS' or '<kind> <name>: FAIL'; other lines are ignored) and prints the closing line 'N passed, N failed'.

A doctest executable counts as its test cases (from its '[doctest] test cases:' line); any other test,
or a doctest run that crashed before its summary, counts as one; a skipped test (exit 77) counts as neither. A test that failed without doctest
reporting a failed case still counts one failure."""
import json
import re
import sys

EXTRA = re.compile(r"^\S+ [^:]+: (PASS|FAIL)\b")
DOCTEST = re.compile(r"\[doctest\] test cases:\s*(\d+)\s*\|\s*(\d+) passed\s*\|\s*(\d+) failed")


def count_log(path):
    passed = failed = 0
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            entry = json.loads(line)
            if entry.get("result") == "SKIP":  # e.g. the network-namespace test where namespaces cannot be made
                continue
            ok = entry.get("result") in ("OK", "EXPECTEDFAIL")
            m = DOCTEST.search(entry.get("stdout", "") or "")
            if m:
                p, fl = int(m.group(2)), int(m.group(3))
                if not ok and fl == 0:
                    fl = 1
                passed += p
                failed += fl
            else:
                passed += ok
                failed += not ok
    return passed, failed


def main(argv):
    passed = failed = 0
    args = list(argv)
    while args:
        a = args.pop(0)
        if a == "--extra":
            with open(args.pop(0)) as f:
                for line in f:
                    m = EXTRA.match(line.strip())
                    if m:
                        passed += m.group(1) == "PASS"
                        failed += m.group(1) == "FAIL"
        else:
            try:
                p, fl = count_log(a)
            except OSError as e:
                print(f"cannot read {a}: {e}", file=sys.stderr)
                p, fl = 0, 1
            passed += p
            failed += fl
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
