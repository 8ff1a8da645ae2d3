# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Test support (private): sshd test hosts that Ansible itself manages, and a process watcher.

``ManagedSshHostPool`` is an ``SshPeerPool`` whose sshds behave like a stock server for
every user but root: ``AuthorizedKeysFile .ssh/authorized_keys`` and ``StrictModes yes``, so
a user's ``~/.ssh`` must have the owners and modes sshd wants.  Root logs in with the pool's
own client key (Ansible's connection), listed in a file of a directory under ``/run``
(``StrictModes`` refuses one under ``/tmp``, which anyone can write), removed by ``stop()``.
``ansible_vars(name)`` gives the inventory variables that connect Ansible to a host as root
over ssh, with strict host key checking against the pool's ``known_hosts``.

``ProcessWatcher`` samples ``/proc`` in a thread while a run goes on, and records the real
uid of every process whose command line contains a given string.
"""

import os
import shutil
import tempfile
import threading
import time

from ansible_collections.cedarbackup.peer.tests.support.sshd import SshPeerPool

ROOT_KEYS_PARENT = "/run"


class ManagedSshHostPool(SshPeerPool):
    """sshd hosts on loopback that Ansible connects to as root; other users log in with their own keys."""

    def __init__(self, base_dir, names=("host1", "host2"), first_address="127.0.14.1"):
        super(ManagedSshHostPool, self).__init__(base_dir, names=names, first_address=first_address)
        self.root_keys_dir = None

    def host_key_file(self, name):
        """The public host key file of host ``name``'s sshd."""
        return os.path.join(os.path.dirname(self.peer(name).config), "ssh_host_ed25519_key.pub")

    def ansible_vars(self, name):
        """Inventory variables of host ``name``: Ansible over ssh as root, pipelined, no persistent connection."""
        peer = self.peer(name)
        return dict(
            ansible_host=peer.address,
            ansible_port=peer.port,
            ansible_user="root",
            ansible_ssh_private_key_file=self.client_key,
            ansible_host_key_checking=True,
            ansible_ssh_common_args=" ".join([
                "-o UserKnownHostsFile=%s" % self.known_hosts, "-o GlobalKnownHostsFile=/dev/null",
                "-o HostKeyAlias=%s" % name, "-o StrictHostKeyChecking=yes", "-o IdentitiesOnly=yes",
                "-o BatchMode=yes", "-o KexAlgorithms=curve25519-sha256",
            ]),
            # No ControlPersist: nothing outlives the run, nothing is written under ~/.ansible/cp.
            ansible_ssh_args="-o ControlMaster=no",
            ansible_pipelining=True,
            ansible_python_interpreter="/usr/bin/python3",
        )

    def _start(self):
        self.root_keys_dir = tempfile.mkdtemp(prefix="sshhosts-root-", dir=ROOT_KEYS_PARENT)
        os.chmod(self.root_keys_dir, 0o700)
        # The pool writes the client's public key here, and nowhere else.
        self.authorized_keys = os.path.join(self.root_keys_dir, "authorized_keys")
        super(ManagedSshHostPool, self)._start()

    def stop(self):
        try:
            super(ManagedSshHostPool, self).stop()
        finally:
            if self.root_keys_dir is not None:
                shutil.rmtree(self.root_keys_dir, ignore_errors=True)
                self.root_keys_dir = None

    def _sshd_config(self, peer, host_key):
        lines = []
        for line in super(ManagedSshHostPool, self)._sshd_config(peer, host_key).splitlines():
            if line.startswith("AuthorizedKeysFile "):
                line = "AuthorizedKeysFile .ssh/authorized_keys"
            elif line.startswith("StrictModes "):
                line = "StrictModes yes"
            lines.append(line)
        lines += ["Match User root", "    AuthorizedKeysFile %s" % self.authorized_keys]
        return "\n".join(lines) + "\n"


class ProcessWatcher(object):
    """While entered, samples ``/proc`` every ``interval`` seconds for processes whose command
    line contains ``needle``; ``seen`` maps each ``(pid, command line)`` found (a pid that execs
    another program is seen again) to ``(argv, real uid)``."""

    def __init__(self, needle, interval=0.01):
        self.needle = needle.encode()
        self.interval = interval
        self.seen = {}
        self._stop = threading.Event()
        self._thread = None

    def __enter__(self):
        self._thread = threading.Thread(target=self._watch, name="process-watcher", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        self._thread.join(timeout=5)
        return False

    def _watch(self):
        own = str(os.getpid())
        while not self._stop.is_set():
            for pid in os.listdir("/proc"):
                if not pid.isdigit() or pid == own:
                    continue
                try:
                    with open("/proc/%s/cmdline" % pid, "rb") as handle:
                        cmdline = handle.read()
                    if self.needle not in cmdline or (int(pid), cmdline) in self.seen:
                        continue
                    with open("/proc/%s/status" % pid) as handle:
                        uid = next(int(line.split()[1]) for line in handle if line.startswith("Uid:"))
                except (OSError, StopIteration, ValueError):
                    continue
                self.seen[(int(pid), cmdline)] = ([word.decode(errors="replace") for word in cmdline.split(b"\0") if word], uid)
            time.sleep(self.interval)

    def uids_of(self, *programs):
        """Real uids of the processes seen whose program (``argv[0]``'s base name) is one of ``programs``."""
        return sorted(set(uid for argv, uid in self.seen.values() if argv and os.path.basename(argv[0]) in programs))
