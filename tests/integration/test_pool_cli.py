# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""tests/support/pool_cli.py: sshd peers that outlive the CLI, stopped by pid from pool.json."""

import json
import os
import pwd
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

CLI = Path(__file__).resolve().parents[1] / "support" / "pool_cli.py"
USER = "cbackclitest"


def _cli(*args):
    result = subprocess.run(
        [sys.executable, str(CLI)] + list(args), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return json.loads(result.stdout.decode())


def _running(pid):
    try:
        with open("/proc/%d/stat" % pid) as handle:
            data = handle.read()
    except OSError:
        return False
    return data[data.rindex(")") + 2:].split()[0] not in ("Z", "X")


def _ssh(argv):
    return subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60, check=False)


@pytest.fixture
def pool_dir():
    base = tempfile.mkdtemp(prefix="cbackpeer-poolcli-")
    os.chmod(base, 0o755)
    try:
        yield os.path.join(base, "pool")
    finally:
        _cli("stop", "--dir", os.path.join(base, "pool"))
        subprocess.run(["rm", "-rf", base], timeout=60, check=False)


def test_start_outlives_cli_and_stop_is_idempotent(pool_dir):
    started = _cli("start", "--dir", pool_dir, "--names", "cli1,cli2", "--user", USER, "--first-address", "127.0.4.1")
    assert started["changed"] is True
    assert started["names"] == ["cli1", "cli2"]
    assert started["addresses"] == ["127.0.4.1", "127.0.4.2"]
    assert json.loads(Path(pool_dir, "pool.json").read_text())["pids"] == started["pids"]
    # the CLI has exited: its sshd processes still serve
    assert all(_running(pid) for pid in started["pids"])
    result = _ssh(started["rsh_command"].split() + ["root@cli2", "echo", "ok"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().strip() == "ok"
    # the backup user logs in as itself with its own client files
    user = started["users"][USER]
    assert os.path.exists(user["ssh_config"]) and user["rsh_command"].endswith(user["ssh_config"])
    result = _ssh(["su", USER, "-c", "%s %s@cli1 'id -un'" % (user["rsh_command"], USER)])
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().strip() == USER

    again = _cli("start", "--dir", pool_dir, "--names", "cli1,cli2", "--user", USER, "--first-address", "127.0.4.1")
    assert again["changed"] is False and again["pids"] == started["pids"]

    stopped = _cli("stop", "--dir", pool_dir)
    assert stopped["changed"] is True and sorted(stopped["stopped"]) == sorted(started["pids"])
    assert not any(_running(pid) for pid in started["pids"])
    assert not os.path.exists(os.path.join(pool_dir, "pool.json"))
    assert not os.path.exists(user["dir"])
    if user["created"]:
        with pytest.raises(KeyError):
            pwd.getpwnam(USER)
    assert _cli("stop", "--dir", pool_dir)["changed"] is False
