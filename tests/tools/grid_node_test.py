#!/usr/bin/env python3
"""End-to-end check of examples/grid-node: a serving node and one-shot callers on loopback ports chosen
by the OS, in both election directions. Usage: grid_node_test.py PATH_TO_GRID_NODE"""
import socket
import subprocess
import sys
import time


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def main(tool):
    failures = 0
    for swap in (False, True):
        a, b = f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
        server, client = (b, a) if swap else (a, b)
        hosts = f"{a},{b}"
        srv = subprocess.Popen([tool, "--local", server, "--hosts", hosts, "--token", "t0k", "serve"],
                               stderr=subprocess.PIPE, text=True)
        try:
            time.sleep(0.3)
            cases = [
                (["78", "hello grid"], 0, "hello grid"),
                (["79", "boom"], 1, "error: test error: boom"),
                (["77", "x"], 2, "error: Invalid Handler for type: 77"),
            ]
            for args, want_rc, want_out in cases:
                r = subprocess.run([tool, "--local", client, "--hosts", hosts, "--token", "t0k", "call", server] + args,
                                   capture_output=True, text=True, timeout=30)
                ok = r.returncode == want_rc and r.stdout.strip() == want_out
                print(f"{'ok' if ok else 'FAIL'}: call {args} -> rc={r.returncode} out={r.stdout.strip()!r}")
                failures += not ok
            streams = [
                (["78", "--subroute", "echo", "init", "a", "bb", "ccc"], 0, "a\nbb\nccc"),
                (["79", "3"], 0, "resp-0\nresp-1\nresp-2"),
                (["79", "0"], 0, ""),
                (["78", "--subroute", "nope", "x", "y"], 2, "error: Invalid Handler for type: 4e"),
            ]
            for args, want_rc, want_out in streams:
                r = subprocess.run([tool, "--local", client, "--hosts", hosts, "--token", "t0k", "stream", server] + args,
                                   capture_output=True, text=True, timeout=30)
                out = r.stdout.strip()
                ok = r.returncode == want_rc and (out.startswith(want_out) if want_rc else out == want_out)
                print(f"{'ok' if ok else 'FAIL'}: stream {args} -> rc={r.returncode} out={out!r}")
                failures += not ok
            r = subprocess.run([tool, "--local", client, "--hosts", hosts, "--token", "wrong", "call", server, "78", "x"],
                               capture_output=True, text=True, timeout=30)
            ok = r.returncode == 2 and r.stdout.startswith("error: not connected")
            print(f"{'ok' if ok else 'FAIL'}: wrong token -> rc={r.returncode} out={r.stdout.strip()!r}")
            failures += not ok
        finally:
            srv.send_signal(2)
            try:
                rc = srv.wait(timeout=10)
            except subprocess.TimeoutExpired:
                srv.kill()
                rc = -1
            ok = rc == 0
            print(f"{'ok' if ok else 'FAIL'}: server exits cleanly on SIGINT (rc={rc})")
            failures += not ok
    failures += check_exec(tool)
    return 1 if failures else 0


def check_exec(tool):
    """--exec runs a child grid-node with --stdio: the grid over its stdin/stdout, no socket, both directions."""
    failures = 0
    a, b = "http://node-a:1", "http://node-b:1"
    hosts = f"{a},{b}"
    for me, child in ((a, b), (b, a)):
        child_cmd = f"'{tool}' --local {child} --hosts {hosts} --token s3 --stdio {me} serve"
        for mode, args, want in (("call", ["78", "over stdio"], "over stdio"), ("stream", ["79", "2"], "resp-0\nresp-1")):
            r = subprocess.run([tool, "--local", me, "--hosts", hosts, "--token", "s3", "--exec", child_cmd, mode, child] + args,
                               capture_output=True, text=True, timeout=30)
            ok = r.returncode == 0 and r.stdout.strip() == want
            print(f"{'ok' if ok else 'FAIL'}: {mode} over --exec/--stdio ({me} -> {child}) -> rc={r.returncode} out={r.stdout.strip()!r}")
            failures += not ok
    r = subprocess.run([tool, "--local", a, "--hosts", hosts, "--token", "s3", "--exec",
                        f"'{tool}' --local {b} --hosts {hosts} --token other --stdio {a} serve", "call", b, "78", "x"],
                       capture_output=True, text=True, timeout=30)
    ok = r.returncode == 2 and r.stdout.startswith("error: not connected")
    print(f"{'ok' if ok else 'FAIL'}: wrong token over --exec -> rc={r.returncode} out={r.stdout.strip()!r}")
    return failures + (not ok)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
