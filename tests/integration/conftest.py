"""Fixtures for integration tests: a playbook runner, real sshd peers, a local backup user, both peer APIs."""

import importlib
import sys

import pytest

from ansible_collections.cedarbackup.peer.tests.support.ansible_run import AnsibleRunner, public_dir, remove_tree
from ansible_collections.cedarbackup.peer.tests.support.setup_run import fresh_accounts
from ansible_collections.cedarbackup.peer.tests.support.sshd import SshPeerPool, ensure_local_user, remove_local_user

DIST_PACKAGES = "/usr/lib/python3/dist-packages"
BACKUP_USER = "cbackpeer"


@pytest.fixture
def runner(installed_collections, tmp_path):
    """Runs the collection's playbooks as a user does, with inventories under ``tmp_path/runs``."""
    return AnsibleRunner(installed_collections, tmp_path / "runs")


@pytest.fixture
def data(request):
    """A fresh directory under /tmp that every local user can traverse (collect directories,
    staging trees, scripts, marks), named after the test module, removed afterwards."""
    path = public_dir("cb%s-" % request.module.__name__.rsplit(".", 1)[-1].replace("test_", "").replace("_", ""))
    try:
        yield path
    finally:
        remove_tree(path)


@pytest.fixture
def accounts(request):
    """None of the users and groups the test module names in ``ACCOUNTS`` before the test (a fresh
    pool), none after it: the accounts the setup role makes."""
    with fresh_accounts(request.module.ACCOUNTS, request.module.ACCOUNTS):
        yield


@pytest.fixture(scope="session")
def ssh_pool(tmp_path_factory):
    """Two real sshd peers (``peer1``, ``peer2``) on 127.0.1.1 and 127.0.1.2."""
    pool = SshPeerPool(tmp_path_factory.mktemp("sshpool"), names=("peer1", "peer2"), first_address="127.0.1.1")
    with pool:
        yield pool


@pytest.fixture(scope="session")
def backup_user():
    """Local user ``cbackpeer``; removed afterwards only when this fixture created it."""
    created = ensure_local_user(BACKUP_USER)
    try:
        yield BACKUP_USER
    finally:
        if created:
            remove_local_user(BACKUP_USER)


@pytest.fixture(scope="session")
def cedarbackup3():
    """Debian's ``CedarBackup3.peer`` (dist-packages appended to ``sys.path``, never prepended)."""
    if DIST_PACKAGES not in sys.path:
        sys.path.append(DIST_PACKAGES)
    return importlib.import_module("CedarBackup3.peer")


@pytest.fixture(scope="session")
def ourpeer():
    """The collection's ``peer`` module."""
    from ansible_collections.cedarbackup.peer.plugins.module_utils import peer

    return peer
