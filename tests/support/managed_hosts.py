# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Test support (private): sshd test hosts that Ansible itself manages.

``ManagedSshHostPool`` is an ``SshPeerPool`` whose sshds behave like a stock server for
every user but root: ``AuthorizedKeysFile .ssh/authorized_keys`` and ``StrictModes yes``, so
a user's ``~/.ssh`` must have the owners and modes sshd wants.  Root logs in with the pool's
own client key (Ansible's connection), listed in a file of a directory under ``/run``
(``StrictModes`` refuses one under ``/tmp``, which anyone can write), removed by ``stop()``.
``ansible_vars(name)`` gives the inventory variables that connect Ansible to a host as root
over ssh, with strict host key checking against the pool's ``known_hosts``.
"""

import os
import shutil
import tempfile

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
