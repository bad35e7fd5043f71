#!/usr/bin/env python3
"""The grid through a real OpenSSH server, in zrepl's manner: a node runs `ssh` as its --exec command,
and the server's authorized_keys forces each key to run `grid-node --stdio ...` with the key's name as
COGRID_IDENTITY. sshd runs as root on a port the OS picks, with throwaway host and user keys in a
temporary directory. Checks: calls and streams through ssh; the token reaches the far node from a file
(never a command line); a key the node does not --allow is refused by the handlers' authorization hook;
a key sshd does not know fails at once with ssh's own words; killing the ssh child in the middle of
traffic brings calls back within reconnect_max.

Usage: ssh_test.py GRID_NODE. Exit 77 (skipped) when OpenSSH's server or client is not installed or
this is not root (sshd must be root to run a forced command as the key's user)."""
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def start_sshd(tmp, tool, client, server, hosts):
    keys = {}
    for name in ("host", "alice", "bob", "mallory"):
        path = os.path.join(tmp, name)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", path], check=True)
        keys[name] = path
    token = os.path.join(tmp, "token")
    with open(token, "w") as f:
        f.write("ssh-t0k\n")
    os.chmod(token, 0o600)
    # Each known key runs the far node, naming itself; mallory's key is not here.
    with open(os.path.join(tmp, "authorized_keys"), "w") as f:
        for name in ("alice", "bob"):
            with open(keys[name] + ".pub") as pub:
                command = (f"COGRID_IDENTITY={name} exec {tool} --local {server} --hosts {hosts} "
                           f"--token-file {token} --allow alice --stdio {client} serve")
                f.write(f'command="{command}",no-pty,no-port-forwarding,no-agent-forwarding,no-X11-forwarding {pub.read()}')
    os.makedirs("/run/sshd", exist_ok=True)
    for attempt in range(5):
        port = free_port()
        config = os.path.join(tmp, "sshd_config")
        with open(config, "w") as f:
            f.write(f"Port {port}\nListenAddress 127.0.0.1\nHostKey {keys['host']}\n"
                    f"AuthorizedKeysFile {tmp}/authorized_keys\nStrictModes no\nPermitRootLogin prohibit-password\n"
                    "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
                    f"PidFile {tmp}/sshd.pid\nLogLevel ERROR\n")
        sshd = subprocess.Popen([SSHD, "-D", "-e", "-f", config], stderr=open(os.path.join(tmp, "sshd.log"), "a"))
        for _ in range(100):
            if sshd.poll() is not None or listening(port):
                break
            time.sleep(0.05)
        if sshd.poll() is None and listening(port):
            return sshd, port, keys
        sshd.kill()
        sshd.wait()
    raise RuntimeError("sshd did not start: " + open(os.path.join(tmp, "sshd.log")).read())


def ssh_command(key, port):
    return (f"ssh -F /dev/null -i {key} -p {port} -o IdentitiesOnly=yes -o BatchMode=yes "
            "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR root@127.0.0.1")


def main():
    tool = os.path.abspath(sys.argv[1])
    if os.geteuid() != 0 or not os.path.exists(SSHD) or not shutil.which("ssh") or not shutil.which("ssh-keygen"):
        print("skipped: needs root and OpenSSH (openssh-server, openssh-client)")
        return 77
    client, server = "http://client.grid:9000", "http://server.grid:9000"
    hosts = f"{client},{server}"
    failures = 0

    def check(ok, what):
        nonlocal failures
        print(f"{'ok' if ok else 'FAIL'}: {what}")
        if not ok:
            failures += 1

    with tempfile.TemporaryDirectory(prefix="cogrid-ssh-") as tmp:
        sshd, port, keys = start_sshd(tmp, tool, client, server, hosts)
        env = dict(os.environ, COGRID_TOKEN="ssh-t0k")
        base = [tool, "--local", client, "--hosts", hosts, "--wait", "20000"]
        try:
            alice = ssh_command(keys["alice"], port)
            r = subprocess.run(base + ["--exec", alice, "call", server, "78", "through ssh"],
                               env=env, capture_output=True, text=True, timeout=60)
            check(r.returncode == 0 and r.stdout.strip() == "through ssh",
                  f"unary call through ssh -> rc={r.returncode} out={r.stdout.strip()!r} err={r.stderr.strip()[-300:]!r}")
            r = subprocess.run(base + ["--exec", alice, "stream", server, "79", "3"],
                               env=env, capture_output=True, text=True, timeout=60)
            check(r.returncode == 0 and r.stdout.split() == ["resp-0", "resp-1", "resp-2"],
                  f"stream through ssh -> rc={r.returncode} out={r.stdout.split()!r}")
            r = subprocess.run(base + ["--exec", alice, "stream", server, "78", "--subroute", "echo", "", "a", "b"],
                               env=env, capture_output=True, text=True, timeout=60)
            check(r.returncode == 0 and r.stdout.split() == ["a", "b"],
                  f"two-way stream through ssh -> rc={r.returncode} out={r.stdout.split()!r}")

            # bob's key gets in through sshd, but the far node's handlers admit alice only.
            r = subprocess.run(base + ["--exec", ssh_command(keys["bob"], port), "call", server, "78", "x"],
                               env=env, capture_output=True, text=True, timeout=60)
            check(r.returncode == 1 and "not authorized: identity bob is not allowed" in r.stdout,
                  f"a key the handlers do not allow -> rc={r.returncode} out={r.stdout.strip()!r}")

            # mallory's key is not in authorized_keys: ssh's own words, at once (not after --wait).
            t0 = time.monotonic()
            r = subprocess.run(base + ["--wait", "30000", "--exec", ssh_command(keys["mallory"], port), "call", server, "78", "x"],
                               env=env, capture_output=True, text=True, timeout=60)
            took = time.monotonic() - t0
            check(r.returncode == 2 and "Permission denied (publickey)" in r.stdout and took < 10,
                  f"a key sshd refuses -> rc={r.returncode} in {took:.1f} s out={r.stdout.strip()!r}")

            # A misconfigured command (nothing listens on that port): ssh's words, at once.
            t0 = time.monotonic()
            r = subprocess.run(base + ["--wait", "30000", "--exec", ssh_command(keys["alice"], free_port()), "call", server, "78", "x"],
                               env=env, capture_output=True, text=True, timeout=60)
            took = time.monotonic() - t0
            check(r.returncode == 2 and "Connection refused" in r.stdout and took < 10,
                  f"ssh to a port nobody listens on -> rc={r.returncode} in {took:.1f} s out={r.stdout.strip()!r}")

            # A wrong token on this side: the far node refuses the handshake, and says so at once.
            t0 = time.monotonic()
            r = subprocess.run(base + ["--wait", "30000", "--exec", alice, "call", server, "78", "x"],
                               env=dict(env, COGRID_TOKEN="wrong"), capture_output=True, text=True, timeout=60)
            took = time.monotonic() - t0
            check(r.returncode == 2 and r.stdout.startswith("error: not connected") and took < 10,
                  f"a wrong token through ssh -> rc={r.returncode} in {took:.1f} s out={r.stdout.strip()!r}")

            # Calls and streams every 100 ms; the ssh child killed after 1.5 s: they fail, then come back
            # within reconnect_max (2 s) plus ssh's own start.
            w = subprocess.Popen(base + ["--exec", alice, "watch", server, "50", "100"], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            time.sleep(1.5)
            children = subprocess.run(["pgrep", "-P", str(w.pid)], capture_output=True, text=True).stdout.split()
            ssh_pids = []
            for c in children:  # /bin/sh -c "ssh ..." runs ssh as its child (or execs it)
                ssh_pids += subprocess.run(["pgrep", "-P", c, "-x", "ssh"], capture_output=True, text=True).stdout.split()
                if open(f"/proc/{c}/comm").read().strip() == "ssh":
                    ssh_pids.append(c)
            killed_at = time.monotonic()
            for p in ssh_pids:
                os.kill(int(p), signal.SIGKILL)
            out, err = w.communicate(timeout=60)
            lines = [l.split(" ", 1) for l in out.strip().splitlines()]
            errors = [int(ms) for ms, what in lines if what.startswith("error")]
            oks_after = [int(ms) for ms, what in lines if what == "ok" and errors and int(ms) > errors[0]]
            gap = (oks_after[0] - errors[0]) / 1000 if oks_after else None
            check(len(ssh_pids) >= 1 and w.returncode == 0 and errors and gap is not None and gap <= 2.0 + 2.0,
                  f"ssh killed mid-traffic (pids {ssh_pids}) -> rc={w.returncode}, {len(errors)} failed rounds, "
                  f"back after {gap} s, {len(lines)} rounds")
        finally:
            sshd.terminate()
            sshd.wait()
    print(f"ssh: {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
