#!/usr/bin/env python3
"""Checks that a header-only object (or archive) defines every symbol of cogrid's that it refers to.

A service's file that includes only the handler headers must compile everything of cogrid it uses:
detail/service.hpp's two rules (a light definition calls nothing defined only on a node's side; every
virtual function of a class the file sees is defined on the light side). A break of the first draws a
warning from the compiler; a break of the second does not, since the vtable that names the missing
function is emitted silently. Either leaves an undefined reference to a cogrid symbol in the object,
which a program links only if some other file happened to include a node's definitions.

Usage: own_symbols.py NM OBJECT_OR_ARCHIVE"""
import subprocess
import sys


def main(nm, path):
    out = subprocess.run([nm, "-C", "--undefined-only", path], check=True, capture_output=True, text=True).stdout
    missing = sorted({line.split(maxsplit=1)[1] for line in out.splitlines()
                      if line.strip().startswith("U ") and "cogrid::" in line})
    if missing:
        print(f"{path}: {len(missing)} cogrid symbol(s) used but not defined here:")
        for name in missing:
            print("  " + name)
        return 1
    print(f"{path}: every cogrid symbol it uses is defined in it")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2]))
