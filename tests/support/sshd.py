"""Real OpenSSH servers on loopback addresses, used as backup peers by integration tests.

``SshPeerPool`` starts one ``/usr/sbin/sshd -D -e`` per peer, each on its own loopback
address (``127.0.1.1``, ``127.0.1.2``, ...) and a free high port, with its own ed25519
host key, key authentication only and an absolute ``AuthorizedKeysFile`` in the pool's
directory.  The pool writes a client key pair, a ``known_hosts`` file (host keys under
the peers' names, used as ``HostKeyAlias``) and an ssh client config with one ``Host``
block per peer, so ``ssh -F <config> peer1`` reaches the first peer.  Nothing under
``~/.ssh`` or ``/etc/ssh`` is read or written (``-F`` skips the system config).

Every sshd is started and stopped by pid; the pool registers nothing global::

    with SshPeerPool(tmpdir) as pool:
        subprocess.run(pool.rsh_command.split() + ["root@peer1", "true"], check=True)
        pool.stop_peer("peer2")     # peer2 now refuses connections (a dead peer)
"""

import ipaddress
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time

SSHD = "/usr/sbin/sshd"
SSH = "/usr/bin/ssh"
SCP = "/usr/bin/scp"
SSH_KEYGEN = "/usr/bin/ssh-keygen"
PRIVSEP_DIR = "/run/sshd"

START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
CHILD_GRACE = 3.0


class SshPeer(object):
    """One sshd of a pool: ``name``, ``address``, ``port``, ``pid`` (kept after the sshd is stopped; see ``alive``)."""

    def __init__(self, name, address, port, config, log):
        self.name = name
        self.address = address
        self.port = port
        self.config = config
        self.log = log
        self.process = None

    @property
    def pid(self):
        return None if self.process is None else self.process.pid

    @property
    def alive(self):
        return self.process is not None and self.process.poll() is None

    def __repr__(self):
        return "SshPeer(%r, %s:%d, pid=%s)" % (self.name, self.address, self.port, self.pid)


def _no_space(path):
    path = str(path)
    if any(c.isspace() for c in path):
        raise ValueError("Path [%s] contains whitespace; rcp/rsh command strings cannot hold it." % path)
    return path


def _run(argv):
    result = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30, check=False)
    if result.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (argv, result.returncode, result.stderr.decode(errors="replace")))
    return result


def _keygen(path, comment):
    for stale in (path, path + ".pub"):
        if os.path.exists(stale):
            os.unlink(stale)
    _run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path])
    os.chmod(path, 0o600)
    with open(path + ".pub") as handle:
        return handle.read().strip()


def free_port(address):
    """A TCP port free on ``address`` right now (bind to port 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


def _children(pid):
    """Pids of the direct children of ``pid`` (from ``/proc``; empty if unknown)."""
    found = set()
    try:
        tasks = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return found
    for task in tasks:
        try:
            with open("/proc/%d/task/%s/children" % (pid, task)) as handle:
                found.update(int(word) for word in handle.read().split())
        except (OSError, ValueError):
            pass
    return found


def _stop_process(process, timeout=STOP_TIMEOUT):
    """SIGTERM ``process`` (by pid), wait up to ``timeout``, then SIGKILL and reap.

    An sshd listener is stopped only once its per-connection children (sessions that are
    finishing, the readiness probe) are gone, waiting at most ``CHILD_GRACE`` seconds:
    a child outliving the listener would be re-parented to init, which in a minimal
    container may never reap it.
    """
    if process is None:
        return
    deadline = time.monotonic() + CHILD_GRACE
    while process.poll() is None and _children(process.pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    if process.poll() is None:
        try:
            os.kill(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.kill(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait(timeout=timeout)
    else:
        process.wait()


class SshPeerPool(object):
    """A set of real sshd servers on loopback addresses, one per peer name."""

    def __init__(self, base_dir, names=("peer1", "peer2"), first_address="127.0.1.1", sshd_options=None):
        """``sshd_options``: ``{peer name: {keyword: value}}``, sshd_config lines of that peer's
        sshd that replace the line of the same keyword (``Subsystem`` is keyed ``Subsystem sftp``)
        or are added, e.g. ``{"p1": {"Subsystem sftp": "/nonexistent/sftp-server"}}``."""
        self.base_dir = _no_space(os.path.abspath(str(base_dir)))
        self.sshd_options = dict(sshd_options or {})
        unknown = set(self.sshd_options) - set(names)
        if unknown:
            raise ValueError("sshd_options for peers not in the pool: %s" % ", ".join(sorted(unknown)))
        self.names = tuple(names)
        if len(set(self.names)) != len(self.names) or not self.names:
            raise ValueError("Peer names must be unique and non-empty: %r" % (self.names,))
        first = ipaddress.IPv4Address(first_address)
        self._peers = []
        for index, name in enumerate(self.names):
            address = first + index
            if not address.is_loopback:
                raise ValueError("Peer address %s is not a loopback address." % address)
            peer_dir = os.path.join(self.base_dir, name)
            self._peers.append(SshPeer(name, str(address), None, os.path.join(peer_dir, "sshd_config"), os.path.join(peer_dir, "sshd.log")))
        self.client_key = os.path.join(self.base_dir, "client_ed25519")
        self.authorized_keys = os.path.join(self.base_dir, "authorized_keys")
        self.known_hosts = os.path.join(self.base_dir, "known_hosts")
        self.ssh_config = os.path.join(self.base_dir, "ssh_config")
        self._host_keys = {}
        self._user_dirs = []
        self._started = False

    # ----- public API -----

    @property
    def peers(self):
        return list(self._peers)

    def peer(self, name):
        for peer in self._peers:
            if peer.name == name:
                return peer
        raise KeyError(name)

    @property
    def rcp_command(self):
        return "%s -F %s -B -q -C" % (SCP, self.ssh_config)

    @property
    def rsh_command(self):
        return "%s -F %s" % (SSH, self.ssh_config)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc_info):
        self.stop()
        return False

    def start(self):
        if self._started:
            return self
        self._started = True
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self):
        """Stop every sshd this pool started (by pid); safe to call more than once."""
        errors = []
        for peer in self._peers:
            try:
                _stop_process(peer.process)
            except Exception as exc:  # keep stopping the others
                errors.append("%s: %s" % (peer.name, exc))
        for path in self._user_dirs:
            shutil.rmtree(path, ignore_errors=True)
        self._user_dirs = []
        if errors:
            raise RuntimeError("Could not stop sshd: %s" % "; ".join(errors))

    def stop_peer(self, name):
        """Kill one peer's sshd and wait for it: the peer then refuses connections."""
        peer = self.peer(name)
        _stop_process(peer.process)

    def client_for_user(self, username):
        """Client key, known_hosts and ssh config usable by local ``username``.

        The files live in a fresh directory under the system temp dir, owned by the user
        (the pool's own directory may not be reachable by other users), and are removed
        by ``stop()``.  The user's public key is authorized on every peer.

        :returns: ``(rcp_command, rsh_command)`` for that user
        """
        entry = pwd.getpwnam(username)
        directory = _no_space(tempfile.mkdtemp(prefix="sshpool-%s-" % username))
        self._user_dirs.append(directory)
        key = os.path.join(directory, "id_ed25519")
        public = _keygen(key, "%s@sshpool" % username)
        with open(self.authorized_keys, "a") as handle:
            handle.write(public + "\n")
        known_hosts = os.path.join(directory, "known_hosts")
        config = os.path.join(directory, "ssh_config")
        self._write_known_hosts(known_hosts)
        self._write_client_config(config, key, known_hosts)
        for path in (directory, key, key + ".pub", known_hosts, config):
            os.chown(path, entry.pw_uid, entry.pw_gid)
        os.chmod(directory, 0o700)
        os.chmod(key, 0o600)
        return ("%s -F %s -B -q -C" % (SCP, config), "%s -F %s" % (SSH, config))

    # ----- internals -----

    def _start(self):
        if not os.path.isdir(PRIVSEP_DIR):
            os.makedirs(PRIVSEP_DIR, mode=0o755, exist_ok=True)
            os.chmod(PRIVSEP_DIR, 0o755)
        os.makedirs(self.base_dir, exist_ok=True)
        public = _keygen(self.client_key, "root@sshpool")
        with open(self.authorized_keys, "w") as handle:
            handle.write(public + "\n")
        os.chmod(self.authorized_keys, 0o600)
        for peer in self._peers:
            peer_dir = os.path.dirname(peer.config)
            os.makedirs(peer_dir, exist_ok=True)
            host_key = os.path.join(peer_dir, "ssh_host_ed25519_key")
            self._host_keys[peer.name] = _keygen(host_key, "host@%s" % peer.name)
            peer.port = free_port(peer.address)
            with open(peer.config, "w") as handle:
                handle.write(self._sshd_config(peer, host_key))
        self._write_known_hosts(self.known_hosts)
        self._write_client_config(self.ssh_config, self.client_key, self.known_hosts)
        for peer in self._peers:
            log = open(peer.log, "wb")
            try:
                peer.process = subprocess.Popen(
                    [SSHD, "-D", "-e", "-f", peer.config],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    close_fds=True,
                    start_new_session=True,
                )
            finally:
                log.close()
        for peer in self._peers:
            self._wait_listening(peer)

    def _sshd_config(self, peer, host_key):
        lines = [
            "ListenAddress %s:%d" % (peer.address, peer.port),
            "AddressFamily inet",
            "HostKey %s" % host_key,
            "AuthorizedKeysFile %s" % self.authorized_keys,
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",
            "UsePAM no",
            "StrictModes no",
            "PidFile none",
            "UseDNS no",
            "PrintMotd no",
            "X11Forwarding no",
            "MaxStartups 100:30:200",
            "LogLevel INFO",
            "Subsystem sftp internal-sftp",
        ]
        for keyword, value in self.sshd_options.get(peer.name, {}).items():
            line = "%s %s" % (keyword, value)
            lines = [old if not (old + " ").startswith(keyword + " ") else line for old in lines]
            if line not in lines:
                lines.append(line)
        return "\n".join(lines) + "\n"

    def _write_known_hosts(self, path):
        with open(path, "w") as handle:
            for peer in self._peers:
                handle.write("%s %s\n" % (peer.name, " ".join(self._host_keys[peer.name].split()[:2])))

    def _write_client_config(self, path, identity, known_hosts):
        blocks = []
        for peer in self._peers:
            blocks.append(
                "\n".join(
                    [
                        "Host %s" % peer.name,
                        "    HostName %s" % peer.address,
                        "    Port %d" % peer.port,
                        "    HostKeyAlias %s" % peer.name,
                        "    IdentityFile %s" % identity,
                        "    IdentitiesOnly yes",
                        "    UserKnownHostsFile %s" % known_hosts,
                        "    GlobalKnownHostsFile /dev/null",
                        "    StrictHostKeyChecking yes",
                        "    UpdateHostKeys no",
                        "    CheckHostIP no",
                        "    BatchMode yes",
                        "    PasswordAuthentication no",
                        "    KbdInteractiveAuthentication no",
                        "    ConnectTimeout 5",
                        "    KexAlgorithms curve25519-sha256",  # cheaper than the sntrup761 hybrid default
                        "    LogLevel ERROR",
                    ]
                )
            )
        with open(path, "w") as handle:
            handle.write("\n\n".join(blocks) + "\n")
        os.chmod(path, 0o644)

    def _wait_listening(self, peer):
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if peer.process.poll() is not None:
                raise RuntimeError("sshd for %s exited with %s: %s" % (peer.name, peer.process.returncode, self._log_text(peer)))
            try:
                with socket.create_connection((peer.address, peer.port), timeout=0.5):
                    return
            except OSError:
                pass
            if time.monotonic() >= deadline:
                raise RuntimeError("sshd for %s not listening on %s:%d after %.0f s: %s"
                                   % (peer.name, peer.address, peer.port, START_TIMEOUT, self._log_text(peer)))
            time.sleep(0.05)

    @staticmethod
    def _log_text(peer):
        try:
            with open(peer.log, "rb") as handle:
                return handle.read().decode(errors="replace").strip() or "(no output)"
        except OSError as exc:
            return "(no log: %s)" % exc


def ensure_local_user(name):
    """Create local user ``name`` (home directory, ``/bin/sh``) unless it exists.

    :returns: ``True`` when this call created the user
    """
    try:
        pwd.getpwnam(name)
        return False
    except KeyError:
        pass
    result = subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", name], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30, check=False)
    if result.returncode == 9:  # created concurrently by someone else
        return False
    if result.returncode != 0:
        raise RuntimeError("useradd %s failed (%d): %s" % (name, result.returncode, result.stderr.decode(errors="replace")))
    return True


def remove_local_user(name):
    """Remove local user ``name`` and its home directory (``userdel -r``)."""
    subprocess.run(["userdel", "-r", name], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30, check=False)
