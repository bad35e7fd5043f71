#!/usr/bin/env python3
"""End-to-end check of examples/grid-node: a serving node and one-shot callers on loopback ports chosen
by the OS, in both election directions. Usage: grid_node_test.py PATH_TO_GRID_NODE"""
import resource
import socket
import signal
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
        srv = subprocess.Popen([tool, "--local", server, "--hosts", hosts, "serve"],
                               stderr=subprocess.PIPE, text=True)
        try:
            time.sleep(0.3)
            cases = [
                (["78", "hello grid"], 0, "hello grid"),
                (["79", "boom"], 1, "error: test error: boom"),
                (["77", "x"], 2, "error: Invalid Handler for type: 77"),
            ]
            for args, want_rc, want_out in cases:
                r = subprocess.run([tool, "--local", client, "--hosts", hosts, "call", server] + args,
                                   capture_output=True, text=True, timeout=30)
                ok = r.returncode == want_rc and r.stdout.strip() == want_out
                print(f"{'ok' if ok else 'FAIL'}: call {args} -> rc={r.returncode} out={r.stdout.strip()!r}")
                failures += not ok
            streams = [
                (["78", "--subroute", "echo", "init", "a", "bb", "ccc"], 0, "a\nbb\nccc"),
                (["79", "3"], 0, "resp-0\nresp-1\nresp-2"),
                (["79", "0"], 0, ""),
                (["78", "--subroute", "nope", "x", "y"], 2, "error: Invalid Handler for type: 4e"),
                # A one-way open (no requests) of the bidirectional echo stream: the handler's ack carries its
                # capacities (in 1, out 1), which differ from the caller's (in 0, out 1).
                (["78", "--subroute", "echo", "init"], 2, "error: stream capacities differ"),
            ]
            for args, want_rc, want_out in streams:
                r = subprocess.run([tool, "--local", client, "--hosts", hosts, "stream", server] + args,
                                   capture_output=True, text=True, timeout=30)
                out = r.stdout.strip()
                ok = r.returncode == want_rc and (out.startswith(want_out) if want_rc else out == want_out)
                print(f"{'ok' if ok else 'FAIL'}: stream {args} -> rc={r.returncode} out={out!r}")
                failures += not ok
            # A refused handshake ends the wait at once (the server's redial pause is 1-2 s), not after --wait.
            t0 = time.monotonic()
            r = subprocess.run([tool, "--local", client, "--hosts", hosts, "--token", "wrong", "--wait", "30000", "call", server, "78", "x"],
                               capture_output=True, text=True, timeout=60)
            took = time.monotonic() - t0
            ok = r.returncode == 2 and r.stdout.startswith("error: not connected") and "refused" in r.stdout and took < 15
            print(f"{'ok' if ok else 'FAIL'}: wrong token -> rc={r.returncode} in {took:.1f} s out={r.stdout.strip()!r}")
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
    failures += check_half_open(tool)
    return 1 if failures else 0


def check_exec(tool):
    """--exec runs a child grid-node with --stdio: the grid over its stdin/stdout, no socket, both directions."""
    failures = 0
    a, b = "http://node-a:1", "http://node-b:1"
    hosts = f"{a},{b}"
    for me, child in ((a, b), (b, a)):
        # The child gets the token in its environment (COGRID_TOKEN), never on its command line.
        child_cmd = f"'{tool}' --local {child} --hosts {hosts} --stdio {me} serve"
        for mode, args, want in (("call", ["78", "over stdio"], "over stdio"), ("stream", ["79", "2"], "resp-0\nresp-1")):
            r = subprocess.run([tool, "--local", me, "--hosts", hosts, "--exec", child_cmd, mode, child] + args,
                               capture_output=True, text=True, timeout=30)
            ok = r.returncode == 0 and r.stdout.strip() == want
            print(f"{'ok' if ok else 'FAIL'}: {mode} over --exec/--stdio ({me} -> {child}) -> rc={r.returncode} out={r.stdout.strip()!r}")
            failures += not ok
    # serve --exec HOST=COMMAND: the served node starts the child, whose one call comes back over its
    # pipes (its output goes to the served node's stderr); the child is started again each time it ends.
    for me, child in ((a, b), (b, a)):
        srv = subprocess.Popen([tool, "--local", me, "--hosts", hosts, "--exec",
                                f"{child}='{tool}' --local {child} --hosts {hosts} --stdio {me} call {me} 78 hello-from-child",
                                "serve"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(3)
        srv.send_signal(signal.SIGTERM)
        try:
            _, err = srv.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            srv.kill()
            _, err = srv.communicate()
        n = err.count("hello-from-child")
        ok = n >= 2 and srv.returncode == 0
        print(f"{'ok' if ok else 'FAIL'}: serve --exec ({me} runs {child}): {n} calls back from children started again, rc={srv.returncode}")
        failures += not ok
    for me, child in ((a, b), (b, a)):
        t0 = time.monotonic()
        r = subprocess.run([tool, "--local", me, "--hosts", hosts, "--wait", "30000", "--exec",
                            f"COGRID_TOKEN=other '{tool}' --local {child} --hosts {hosts} --stdio {me} serve", "call", child, "78", "x"],
                           capture_output=True, text=True, timeout=60)
        took = time.monotonic() - t0
        ok = r.returncode == 2 and r.stdout.startswith("error: not connected") and "refused" in r.stdout and took < 15
        print(f"{'ok' if ok else 'FAIL'}: wrong token over --exec ({me} -> {child}) -> rc={r.returncode} in {took:.1f} s out={r.stdout.strip()!r}")
        failures += not ok
    return failures


def check_half_open(tool, count=10000):
    """10,000 connections that send half an HTTP request and stop: calls from a real peer still work, and
    the node drops every one of them after its handshake read deadline (5 s)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = count + 200
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard) if hard != resource.RLIM_INFINITY else want, hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    count = min(count, soft - 200)
    a, b = f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
    hosts = f"{a},{b}"
    srv = subprocess.Popen([tool, "--local", a, "--hosts", hosts, "serve"], stderr=subprocess.DEVNULL)
    failures = 0
    socks = []
    try:
        time.sleep(0.3)
        port = int(a.rsplit(":", 1)[1])
        t0 = time.monotonic()
        for _ in range(count):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(b"GET /minio/grid/v1 HTTP/1.1\r\nHost: x\r\n")  # and nothing more
            socks.append(s)
        opened = time.monotonic() - t0
        r = subprocess.run([tool, "--local", b, "--hosts", hosts, "call", a, "78", "through"],
                           capture_output=True, text=True, timeout=30)
        ok = r.returncode == 0 and r.stdout.strip() == "through"
        print(f"{'ok' if ok else 'FAIL'}: a call works while {len(socks)} half-open connections are held "
              f"(opened in {opened:.1f} s): rc={r.returncode} out={r.stdout.strip()!r}")
        failures += not ok
        deadline = time.monotonic() + 15
        open_left = list(socks)
        while open_left and time.monotonic() < deadline:
            still = []
            for s in open_left:
                s.setblocking(False)
                try:
                    if s.recv(4096) == b"":
                        continue  # closed by the node
                    still.append(s)
                except BlockingIOError:
                    still.append(s)
                except OSError:
                    continue  # reset by the node
            open_left = still
            if open_left:
                time.sleep(0.5)
        ok = not open_left
        print(f"{'ok' if ok else 'FAIL'}: the node dropped all {len(socks)} half-open connections "
              f"({len(open_left)} still open after {time.monotonic() - t0:.1f} s)")
        failures += not ok
    finally:
        for s in socks:
            s.close()
        srv.send_signal(2)
        try:
            srv.wait(timeout=10)
        except subprocess.TimeoutExpired:
            srv.kill()
    return failures


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
