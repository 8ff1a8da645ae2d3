"""Start and stop the loopback sshd peers of ``sshd.SshPeerPool`` from the command line.

Playbooks (molecule's create/destroy) cannot hold a Python object between two tasks, so
this CLI starts a pool whose sshd processes outlive it and records everything needed to
use and to stop them in ``DIR/pool.json``::

    pool_cli.py start --dir DIR --names peer1,peer2 [--user cbackmol] [--first-address 127.0.1.1]
    pool_cli.py stop --dir DIR

``start`` prints the pool description as JSON (``changed`` tells whether it started
anything: a pool already running in DIR is left as it is).  Every sshd runs in its own
session (``start_new_session``, set by ``SshPeerPool``) with its output in a log file, so
nothing ties it to this process: it is not killed when the CLI exits, and it holds no
pipe of the caller open.

``--user NAME`` creates local user NAME when missing (able to log in with a key, not a
password; ``stop`` removes it again only then) and writes a client key, ``known_hosts``
and ssh config that NAME can read, so ``su NAME -c '<rsh_command> ...'`` works.  The
pool's ``authorized_keys`` is made readable to all (public keys only), since sshd reads
it as the user logging in: NAME can log in to the peers as NAME as well as root.

``stop`` stops every sshd recorded in ``pool.json`` by pid (SIGTERM, a bounded wait, then
SIGKILL), after checking that the pid still runs that very sshd, removes the per-user
client files and users it created, and removes ``pool.json``.  It is idempotent: without
``pool.json`` there is nothing to do.  The stopped sshd processes are no longer children
of anyone here, so they are left for init to reap.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from sshd import (  # noqa: E402  (path set just above: this file runs as a script)
    CHILD_GRACE,
    SSHD,
    STOP_TIMEOUT,
    SshPeerPool,
    _children,
    ensure_local_user,
    remove_local_user,
)

POOL_FILE = "pool.json"


# ----- processes by pid ---------------------------------------------------------------


def _state(pid):
    """``None`` when ``pid`` is gone, else its /proc state letter (``Z`` for a zombie)."""
    try:
        with open("/proc/%d/stat" % pid) as handle:
            data = handle.read()
    except (OSError, ValueError):
        return None
    return data[data.rindex(")") + 2:].split()[0]


def _running(pid):
    return _state(pid) not in (None, "Z", "X")


def _cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as handle:
            return [word.decode(errors="replace") for word in handle.read().split(b"\0") if word]
    except OSError:
        return []


def _exe(pid):
    try:
        return os.readlink("/proc/%d/exe" % pid)
    except OSError:
        return None


def _is_our_sshd(pid, config):
    """Does ``pid`` still run the sshd started on ``config`` (and not a reused pid)?

    sshd rewrites its command line (``sshd: /usr/sbin/sshd -D -e -f CONFIG [listener] ...``),
    so the check is: the executable is sshd and the config path is on the command line.
    """
    return _running(pid) and _exe(pid) == SSHD and config in " ".join(_cmdline(pid)).split()


def _descendants(pid):
    found, todo = [], [pid]
    while todo:
        for child in sorted(_children(todo.pop())):
            if child not in found:
                found.append(child)
                todo.append(child)
    return found


def _signal(pid, signum):
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _wait_gone(pids, timeout):
    deadline = time.monotonic() + timeout
    while True:
        alive = [pid for pid in pids if _running(pid)]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.05)


def _terminate(pids, timeout=STOP_TIMEOUT):
    """SIGTERM ``pids``, wait up to ``timeout``, SIGKILL what is left, wait again.

    :returns: the pids still running after all that (normally none)
    """
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    alive = _wait_gone(pids, timeout)
    for pid in alive:
        _signal(pid, signal.SIGKILL)
    return _wait_gone(alive, timeout)


# ----- pool.json ----------------------------------------------------------------------


def _pool_path(directory):
    return os.path.join(os.path.abspath(directory), POOL_FILE)


def _read_pool(directory):
    path = _pool_path(directory)
    if not os.path.exists(path):
        return None
    with open(path) as handle:
        return json.load(handle)


def _write_pool(directory, data):
    path = _pool_path(directory)
    tmp = "%s.tmp-%d" % (path, os.getpid())
    with open(tmp, "w") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write("\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _live_sshds(data):
    return [peer["pid"] for peer in data["peers"].values() if _is_our_sshd(peer["pid"], peer["config"])]


def _unlock_for_keys(user):
    """``useradd`` leaves the password locked (``!``); sshd without PAM then refuses even a
    key login.  ``*`` allows key logins and still no password login."""
    result = subprocess.run(["usermod", "-p", "*", user], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30, check=False)
    if result.returncode != 0:
        raise RuntimeError("usermod -p '*' %s failed (%d): %s" % (user, result.returncode, result.stderr.decode(errors="replace")))


def _describe(pool, users):
    peers = dict(
        (peer.name, dict(address=peer.address, port=peer.port, pid=peer.pid, config=peer.config, log=peer.log))
        for peer in pool.peers
    )
    return dict(
        dir=pool.base_dir,
        names=list(pool.names),
        addresses=[peer.address for peer in pool.peers],
        ports=[peer.port for peer in pool.peers],
        pids=[peer.pid for peer in pool.peers],
        peers=peers,
        ssh_config=pool.ssh_config,
        known_hosts=pool.known_hosts,
        client_key=pool.client_key,
        authorized_keys=pool.authorized_keys,
        rcp_command=pool.rcp_command,
        rsh_command=pool.rsh_command,
        users=users,
    )


# ----- commands -----------------------------------------------------------------------


def start(directory, names, users=(), first_address="127.0.1.1"):
    """Start the pool unless ``directory`` already holds a running one.

    :returns: ``(changed, pool description)``
    """
    directory = os.path.abspath(directory)
    existing = _read_pool(directory)
    if existing is not None:
        live = _live_sshds(existing)
        if existing["names"] == list(names) and sorted(existing.get("users", {})) == sorted(users) and len(live) == len(existing["pids"]):
            return False, existing
        stop(directory)  # a stale or different pool: replace it

    os.makedirs(directory, exist_ok=True)
    os.chmod(directory, 0o755)
    created_users = []
    pool = SshPeerPool(directory, names=names, first_address=first_address)
    try:
        for user in users:
            if ensure_local_user(user):
                created_users.append(user)
                _unlock_for_keys(user)
        pool.start()
        users_data = {}
        for user in users:
            rcp_command, rsh_command = pool.client_for_user(user)
            ssh_config = rsh_command.split()[2]  # "<ssh> -F <config>"
            users_data[user] = dict(
                rcp_command=rcp_command,
                rsh_command=rsh_command,
                ssh_config=ssh_config,
                dir=os.path.dirname(ssh_config),
                created=user in created_users,
            )
        # sshd reads AuthorizedKeysFile as the user logging in: let every user read it
        # (it holds public keys only).
        os.chmod(pool.authorized_keys, 0o644)
        data = _describe(pool, users_data)
        _write_pool(directory, data)
    except BaseException:
        pool.stop()
        for user in created_users:
            remove_local_user(user)
        raise
    return True, data


def stop(directory):
    """Stop the pool recorded in ``directory`` (idempotent).

    :returns: ``(changed, report)``
    """
    data = _read_pool(directory)
    if data is None:
        return False, dict(stopped=[], lingering=[], message="no pool in %s" % os.path.abspath(directory))
    listeners = _live_sshds(data)
    # Per-connection sshd children (sessions still finishing) get a short grace period,
    # then go with their listener.
    deadline = time.monotonic() + CHILD_GRACE
    while time.monotonic() < deadline and any(_descendants(pid) for pid in listeners):
        time.sleep(0.05)
    lingering = [child for pid in listeners for child in _descendants(pid)]
    left = _terminate(listeners + lingering)
    if left:
        raise RuntimeError("processes still running after SIGKILL: %s" % left)
    for user, info in sorted(data.get("users", {}).items()):
        shutil.rmtree(info["dir"], ignore_errors=True)
        if info.get("created"):
            remove_local_user(user)
    os.unlink(_pool_path(directory))
    return bool(listeners), dict(stopped=listeners, lingering=lingering, message="stopped %d sshd" % len(listeners))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    commands = parser.add_subparsers(dest="command", required=True)
    start_parser = commands.add_parser("start", help="start sshd peers and write DIR/pool.json")
    start_parser.add_argument("--dir", required=True, help="pool directory (no whitespace)")
    start_parser.add_argument("--names", required=True, help="comma-separated peer names")
    start_parser.add_argument("--user", action="append", default=[], help="local user to write client files for (repeatable)")
    start_parser.add_argument("--first-address", default="127.0.1.1", help="loopback address of the first peer")
    stop_parser = commands.add_parser("stop", help="stop the sshd peers recorded in DIR/pool.json")
    stop_parser.add_argument("--dir", required=True, help="pool directory")
    args = parser.parse_args(argv)

    if args.command == "start":
        names = [name.strip() for name in args.names.split(",") if name.strip()]
        changed, data = start(args.dir, names, users=args.user, first_address=args.first_address)
    else:
        changed, data = stop(args.dir)
    result = dict(data, changed=changed)
    sys.stdout.write(json.dumps(result, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
