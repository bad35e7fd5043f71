#!/usr/bin/env python3
"""Real hosts: three grid-node processes in three network namespaces, joined by veth pairs to a bridge in
a fourth namespace (no change to the machine's own network). Checks unary calls and streams across them
over plain TCP and over TLS, cuts one host off (link down) and checks that calls to it fail within the
wait while the other two keep working, then brings the link back and checks that it recovers. Cleans up
after itself. Needs root (CI runs as root); exits 77 (skipped) with the reason where namespaces cannot be
made. Usage: netns_test.py PATH_TO_GRID_NODE"""
import os
import shutil
import subprocess
import sys
import tempfile
import time

SKIP = 77
TAG = f"cg{os.getpid() % 100000}"
NODES = [f"{TAG}n{i}" for i in range(3)]
SWITCH = f"{TAG}sw"
IPS = [f"10.231.{os.getpid() % 200}.{i + 1}" for i in range(3)]


def sh(*args, ns=None):
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(args)
    return subprocess.run(cmd, capture_output=True, text=True)


def must(*args, ns=None):
    r = sh(*args, ns=ns)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {r.stderr.strip()}")


def setup():
    must("ip", "netns", "add", SWITCH)
    must("ip", "-n", SWITCH, "link", "add", "br0", "type", "bridge")
    must("ip", "-n", SWITCH, "link", "set", "br0", "up")
    for i, ns in enumerate(NODES):
        must("ip", "netns", "add", ns)
        must("ip", "link", "add", "v0", "netns", ns, "type", "veth", "peer", "name", f"p{i}", "netns", SWITCH)
        must("ip", "-n", SWITCH, "link", "set", f"p{i}", "master", "br0")
        must("ip", "-n", SWITCH, "link", "set", f"p{i}", "up")
        must("ip", "-n", ns, "addr", "add", f"{IPS[i]}/24", "dev", "v0")
        must("ip", "-n", ns, "link", "set", "v0", "up")
        must("ip", "-n", ns, "link", "set", "lo", "up")


def teardown():
    for ns in NODES + [SWITCH]:
        sh("ip", "netns", "del", ns)


def make_certs(d):
    """A CA and one certificate for all three addresses (subjectAltName IP), with the openssl tool."""
    def run(*a):
        subprocess.run(["openssl", *a], check=True, capture_output=True, cwd=d)
    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
        "-subj", "/CN=cogrid netns test CA", "-keyout", "ca.key", "-out", "ca.pem")
    run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", "/CN=node",
        "-keyout", "node.key", "-out", "node.csr")
    with open(os.path.join(d, "san.ext"), "w") as f:
        f.write("subjectAltName=" + ",".join(f"IP:{ip}" for ip in IPS) + "\n")
    run("x509", "-req", "-in", "node.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
        "-extfile", "san.ext", "-out", "node.pem")
    return [f"--cert={d}/node.pem", f"--key={d}/node.key", f"--ca={d}/ca.pem"]


def flags(tls_args):
    out = []
    for a in tls_args:  # grid-node takes "--opt value"
        k, v = a.split("=", 1)
        out += [k, v]
    return out


class Grid:
    def __init__(self, tool, scheme, tls_args):
        self.tool, self.tls = tool, flags(tls_args)
        self.serve = [f"{scheme}://{ip}:9000" for ip in IPS]
        self.callers = [f"{scheme}://{ip}:9100" for ip in IPS]
        self.hosts = ",".join(self.serve + self.callers)
        self.procs = [subprocess.Popen(["ip", "netns", "exec", NODES[i], tool, "--local", self.serve[i], "--hosts",
                                        self.hosts, "--token", "netns-t0k", *self.tls, "serve"],
                                       stderr=subprocess.DEVNULL) for i in range(3)]
        time.sleep(0.5)

    def call(self, frm, to, mode, args, wait_ms=8000):
        t0 = time.monotonic()
        r = subprocess.run(["ip", "netns", "exec", NODES[frm], self.tool, "--local", self.callers[frm], "--hosts",
                            self.hosts, "--token", "netns-t0k", *self.tls, "--wait", str(wait_ms), mode,
                            self.serve[to], *args], capture_output=True, text=True, timeout=60)
        return r.returncode, r.stdout.strip(), time.monotonic() - t0

    def stop(self):
        ok = True
        for p in self.procs:
            p.send_signal(2)
        for p in self.procs:
            try:
                ok = p.wait(timeout=10) == 0 and ok
            except subprocess.TimeoutExpired:
                p.kill()
                ok = False
        return ok


def main(tool):
    if os.geteuid() != 0:
        print("SKIP: network namespaces need root")
        return SKIP
    for t in ("ip", "openssl"):
        if not shutil.which(t):
            print(f"SKIP: the {t} tool is missing (Debian: iproute2, openssl)")
            return SKIP
    try:
        setup()
    except Exception as e:  # no CAP_SYS_ADMIN, no veth module, ...
        teardown()
        print(f"SKIP: cannot make network namespaces here: {e}")
        return SKIP
    failures = 0

    def check(ok, what):
        nonlocal failures
        print(f"{'ok' if ok else 'FAIL'}: {what}")
        failures += not ok

    tmp = tempfile.mkdtemp()
    try:
        for scheme, tls_args in (("http", []), ("https", make_certs(tmp))):
            g = Grid(tool, scheme, tls_args)
            try:
                for frm, to in ((0, 1), (1, 2), (2, 0)):
                    rc, out, _ = g.call(frm, to, "call", ["78", f"{scheme} {frm}->{to}"])
                    check(rc == 0 and out == f"{scheme} {frm}->{to}", f"{scheme} unary node {frm} -> node {to}: rc={rc} out={out!r}")
                    rc, out, _ = g.call(frm, to, "stream", ["79", "3"])
                    check(rc == 0 and out == "resp-0\nresp-1\nresp-2", f"{scheme} stream node {frm} -> node {to}: rc={rc} out={out!r}")
                if scheme == "http":
                    must("ip", "-n", NODES[2], "link", "set", "v0", "down")
                    rc, out, took = g.call(0, 2, "call", ["78", "x"], wait_ms=3000)
                    check(rc == 2 and out.startswith("error: not connected") and took < 8,
                          f"node 2 cut off: a call to it fails within the wait ({took:.1f} s): {out!r}")
                    for frm, to in ((0, 1), (1, 0)):
                        rc, out, _ = g.call(frm, to, "call", ["78", "still"])
                        check(rc == 0 and out == "still", f"while node 2 is cut off, node {frm} -> node {to} works: rc={rc}")
                    must("ip", "-n", NODES[2], "link", "set", "v0", "up")
                    rc, out, took = g.call(0, 2, "call", ["78", "back"])
                    check(rc == 0 and out == "back", f"link up again: node 0 -> node 2 recovers ({took:.1f} s): rc={rc} out={out!r}")
                    rc, out, _ = g.call(2, 1, "stream", ["79", "2"])
                    check(rc == 0 and out == "resp-0\nresp-1", f"link up again: node 2 -> node 1 stream: rc={rc}")
            finally:
                check(g.stop(), f"{scheme}: the three nodes exit cleanly on SIGINT")
    finally:
        teardown()
        shutil.rmtree(tmp, ignore_errors=True)
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    check(TAG not in left, "namespaces removed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
