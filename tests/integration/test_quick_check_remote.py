"""``quick_check`` against a real sshd peer: a staged peer is not fetched again.

A staged copy that was changed behind the module's back, keeping its size and staged after
the peer's file last changed, proves which path ran: the quick check leaves it as it is (no
fetch), a full fetch compares bytes and restores it, and a file changed on the peer since it
was staged is fetched again.
"""

import os
import time

from ansible_collections.cedarbackup.peer.plugins.module_utils import _tasks


def _params(pool, collect_dir, target_dir, quick):
    return dict(
        name="peer1", type="remote", remote_user="root", local_user=None, rcp_command=pool.rcp_command,
        rsh_command=pool.rsh_command, working_dir=None, timeout=60, connect_timeout=10, ssh_multiplex=True,
        collect_dir=str(collect_dir), target_dir=str(target_dir), owner=None, group=None, mode=None,
        write_stage_indicator=True, stage_indicator="cback.stage", check_collect_indicator=True,
        collect_indicator="cback.collect", quick_check=quick,
    )


def _logins(pool):
    with open(pool.peer("peer1").log) as handle:
        return handle.read().count("Accepted publickey")


def test_quick_check_skips_a_staged_peer_and_fetches_a_changed_one(ssh_pool, tmp_path):
    collect, target = tmp_path / "collect", tmp_path / "target"
    collect.mkdir()
    target.mkdir()
    (collect / "data.tar").write_bytes(b"A" * 4096)
    (collect / "cback.collect").write_bytes(b"")
    past = time.time() - 600
    for name in ("data.tar", "cback.collect"):
        os.utime(str(collect / name), (past, past))

    first = _tasks.stage(_params(ssh_pool, collect, target, True))
    assert first["files"] == ["cback.collect", "data.tar"] and first["stage_indicator_written"] is True
    assert (collect / "cback.stage").exists()

    # the staged copy changes behind the module's back: same size, staged after the source changed
    (target / "data.tar").write_bytes(b"B" * 4096)
    inode = os.stat(str(target / "data.tar")).st_ino
    logins = _logins(ssh_pool)
    again = _tasks.stage(_params(ssh_pool, collect, target, True))
    assert again["changed"] is False and again["files"] == []
    assert again["unchanged"] == ["cback.collect", "data.tar"]
    assert (target / "data.tar").read_bytes() == b"B" * 4096, "quick check fetched nothing"
    assert os.stat(str(target / "data.tar")).st_ino == inode
    assert _logins(ssh_pool) - logins == 1, "readiness check and listing share one connection"

    # without the quick check every file is fetched and compared byte for byte
    full = _tasks.stage(_params(ssh_pool, collect, target, False))
    assert full["files"] == ["data.tar"] and full["changed"] is True
    assert (target / "data.tar").read_bytes() == b"A" * 4096

    # a file changed on the peer after it was staged is fetched again by the quick check too
    (collect / "data.tar").write_bytes(b"C" * 4096)
    future = time.time() + 5
    os.utime(str(collect / "data.tar"), (future, future))
    changed = _tasks.stage(_params(ssh_pool, collect, target, True))
    assert changed["files"] == ["data.tar"]
    assert (target / "data.tar").read_bytes() == b"C" * 4096
