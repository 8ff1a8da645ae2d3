"""The sshd harness itself: real peers reachable over ssh/scp, dead peers refuse quickly."""

import os
import subprocess
import time

import pytest

from ansible_collections.cedarbackup.peer.tests.support.sshd import SshPeerPool


def _ssh(rsh_command, target, *command, timeout=30):
    return subprocess.run(
        rsh_command.split() + [target] + list(command),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        timeout=timeout, check=False,
    )


def _pid_exists(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_pool_layout(ssh_pool):
    names = [peer.name for peer in ssh_pool.peers]
    assert names == ["peer1", "peer2"]
    assert [peer.address for peer in ssh_pool.peers] == ["127.0.1.1", "127.0.1.2"]
    assert all(peer.port > 1024 and peer.alive for peer in ssh_pool.peers)
    assert len({peer.pid for peer in ssh_pool.peers}) == 2
    assert ssh_pool.rcp_command == "/usr/bin/scp -F %s -B -q -C" % ssh_pool.ssh_config
    assert ssh_pool.rsh_command == "/usr/bin/ssh -F %s" % ssh_pool.ssh_config
    with open(ssh_pool.ssh_config) as handle:
        config = handle.read()
    for peer in ssh_pool.peers:
        assert "Host %s\n" % peer.name in config
        assert "HostName %s\n" % peer.address in config
        assert "Port %d\n" % peer.port in config


@pytest.mark.parametrize("name", ["peer1", "peer2"])
def test_ssh_true_to_each_peer(ssh_pool, name):
    result = _ssh(ssh_pool.rsh_command, "root@%s" % name, "true")
    assert result.returncode == 0, result.stderr
    # the command really ran remotely, as root, on that peer's sshd (its address)
    result = _ssh(ssh_pool.rsh_command, "root@%s" % name, 'id -un; echo "$SSH_CONNECTION"')
    assert result.returncode == 0, result.stderr
    user, connection = result.stdout.decode().split("\n")[:2]
    assert user == "root"
    assert connection.split()[2:] == [ssh_pool.peer(name).address, str(ssh_pool.peer(name).port)]


@pytest.mark.parametrize("name", ["peer1", "peer2"])
def test_scp_from_each_peer(ssh_pool, tmp_path, name):
    source = tmp_path / ("source-%s" % name)
    source.write_bytes(b"payload of %s\n" % name.encode())
    target = tmp_path / "copied"
    result = subprocess.run(
        ssh_pool.rcp_command.split() + ["root@%s:%s" % (name, source), str(target)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        timeout=30, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert target.read_bytes() == source.read_bytes()


def test_stop_peer_makes_a_dead_peer_and_stop_kills_everything(tmp_path):
    pool = SshPeerPool(tmp_path / "pool", names=("alpha", "beta"), first_address="127.0.2.1")
    with pool:
        pids = [peer.pid for peer in pool.peers]
        assert all(_pid_exists(pid) for pid in pids)
        assert _ssh(pool.rsh_command, "root@alpha", "true").returncode == 0
        pool.stop_peer("alpha")
        assert not pool.peer("alpha").alive
        assert not _pid_exists(pids[0])
        started = time.monotonic()
        result = _ssh(pool.rsh_command, "root@alpha", "true", timeout=20)
        elapsed = time.monotonic() - started
        assert result.returncode == 255
        assert elapsed < 10, elapsed
        # the other peer is unaffected
        assert _ssh(pool.rsh_command, "root@beta", "true").returncode == 0
    assert not any(_pid_exists(pid) for pid in pids)
    assert not any(peer.alive for peer in pool.peers)
    pool.stop()  # idempotent


def test_client_for_user(ssh_pool, backup_user, tmp_path):
    rcp_command, rsh_command = ssh_pool.client_for_user(backup_user)
    key = rsh_command.split()[2].replace("ssh_config", "id_ed25519")
    assert os.stat(key).st_mode & 0o777 == 0o600
    result = subprocess.run(
        ["su", backup_user, "-c", "%s root@peer1 'id -un'" % rsh_command],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        timeout=30, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().strip() == "root"
    assert rcp_command.startswith("/usr/bin/scp -F ") and rcp_command.endswith(" -B -q -C")
