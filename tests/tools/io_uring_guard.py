#!/usr/bin/env python3
"""Checks cogrid's refusal of Asio's io_uring backend on Asio releases whose backend is unsafe.

Usage: io_uring_guard.py ASIO_VERSION SOURCE COMPILER [ARGS...]
Compiles SOURCE (-fsyntax-only) with ASIO_HAS_IO_URING and ASIO_DISABLE_EPOLL. Before Asio 1.28.1 the
compile must fail with cogrid's #error; from 1.28.1 on it must not (that cogrid then works on io_uring is
the io-uring-grid test's part)."""
import subprocess
import sys

MESSAGE = "Asio's io_uring backend needs Asio 1.28.1 or later"


def main(version, source, command):
    parts = [int(p) for p in version.split(".")[:3]]
    parts += [0] * (3 - len(parts))
    refused = parts < [1, 28, 1]
    run = subprocess.run(command + ["-std=c++20", "-fsyntax-only", "-DASIO_HAS_IO_URING", "-DASIO_DISABLE_EPOLL", source],
                         capture_output=True, text=True)
    if refused:
        if run.returncode != 0 and MESSAGE in run.stderr:
            print(f"Asio {version}: the io_uring backend is refused with cogrid's message")
            return 0
        print(f"Asio {version}: expected cogrid's #error ({MESSAGE!r}); the compiler exited {run.returncode}:")
        print(run.stderr[-3000:])
        return 1
    if run.returncode == 0:
        print(f"Asio {version}: the io_uring backend is not refused")
        return 0
    print(f"Asio {version}: the io_uring backend should not be refused; the compiler exited {run.returncode}:")
    print(run.stderr[-3000:])
    return 1


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2], sys.argv[3:]))
