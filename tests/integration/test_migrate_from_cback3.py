# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""docs/migrate-from-cback3.md, followed literally: from a cback3 master to a scheduled stage run.

The test builds a working Cedar Backup master, as the guide assumes one, under a test root:

- the backup user ``cbmigbk`` with a login shell (``cback3`` copies through ``su``) and, in its
  ``~/.ssh``, the key every remote peer accepts, the peers' host keys in ``known_hosts`` and a
  ``config`` with their addresses and ports: ``cback3.conf``'s rcp command is the plain
  ``/usr/bin/scp -B -q -C``;
- two real sshd peers ``mp1``, ``mp2`` on 127.0.21.x (``ManagedSshHostPool``: stock per-user
  ``~/.ssh/authorized_keys`` with ``StrictModes yes``; the login user is the backup user, as on
  Debian, with a ``from=`` option on its key line), and two local peers, one of them not ready
  and ignored (``ignore_failures`` ``all``);
- ``/etc/cback3.conf``, and ``/etc/cron.d/cedar-backup3`` as Debian's package ships it with
  the master's set of lines uncommented;
- the guide's project directory, where the Python virtual environment the guide makes with pip
  is the test's own (a symlink), and the collection's tarball built from this checkout.

``cback3 stage`` runs first (the night's run), into ``/opt/backup/stage``.  Then every block the
guide marks (``tests/support/guide.py``) is taken in the guide's order: files written as they
are, commands run with bash as root in the project directory, with the guide's absolute paths
moved under the test root (``PathMap``) and an environment without any ``ANSIBLE_*`` variable.
The comparison block must say the trees are the same (and fail on a changed file); the cron
line and the service's ``ExecStart`` run exactly as cron and systemd would start them (cron:
``/bin/sh -c`` in the home directory with cron's ``PATH``; systemd: the argv in ``/`` with the
unit's ``Environment``), and their exit statuses and the cron mail are checked: nothing on
success, status 2 naming the peer when a peer is not ready, 1 for a broken ``cback3.conf``.  The
setup playbook then runs as the guide says, with ``cback3``'s key; the scheduled run after it
works without the backup user's ``~/.ssh/config`` and ``known_hosts``.  Last, the way back, and
``cback3 stage`` runs again.
"""

import glob
import json
import os
import pwd
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from ansible_collections.cedarbackup.peer.tests.support import stage_dataset as ds
from ansible_collections.cedarbackup.peer.tests.support.ansible_run import public_dir, remove_tree
from ansible_collections.cedarbackup.peer.tests.support.cback3_run import run_cback3, write_config
from ansible_collections.cedarbackup.peer.tests.support.guide import Guide, PathMap, cron_jobs, run_shell, unit_command, unit_file, unit_values
from ansible_collections.cedarbackup.peer.tests.support.managed_hosts import ManagedSshHostPool
from ansible_collections.cedarbackup.peer.tests.support.run_summaries import run_reports
from ansible_collections.cedarbackup.peer.tests.support.setup_run import fresh_accounts

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "migrate-from-cback3.md"
VENV = Path(os.environ.get("CBACK_ANSIBLE_BIN") or ROOT / ".venv" / "bin").parent
DEBIAN_CRON = "/etc/cron.d/cedar-backup3"
BACKUP_USER = "cbmigbk"
REMOTE = ("mp1", "mp2")
STEP_TIMEOUT = 300
# A root shell's environment, and what cron gives a job; HOME is the test's (Ansible keeps ~/.ansible there).
SHELL_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CRON_PATH = "/usr/bin:/bin"
SYSTEMD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
FAILED_MAIL = "cedarbackup.peer.stage failed, exit status %d; its output follows."


def _files(peer):
    modes = (0o600, 0o640, 0o644, 0o755)
    sizes = (0, 1, 4096 + 17, 70 * 1024 + 3)
    return tuple(ds.FileSpec("%s-%d.tar.gz" % (peer, index), sizes[index], modes[index]) for index in range(4)) + (
        ds.FileSpec(".dotfile", 100, 0o644),)


DATASET = (
    ds.PeerSpec("lpeer1", "local", True, None, _files("lpeer1"), None),
    ds.PeerSpec("lpeer2", "local", False, "all", _files("lpeer2"), None),   # not ready, always ignored
    ds.PeerSpec("mp1", "remote", True, None, _files("mp1"), None),
    ds.PeerSpec("mp2", "remote", True, "weekly", _files("mp2"), None),
)
STATUSES = {"lpeer1": "staged", "lpeer2": "ignored", "mp1": "staged", "mp2": "staged"}


def write_cback3_conf(path, staging, work, collect_dirs):
    options = [("starting_day", "sunday"), ("working_dir", work), ("backup_user", BACKUP_USER), ("backup_group", BACKUP_USER),
               ("rcp_command", "/usr/bin/scp -B -q -C"), ("rsh_command", "/usr/bin/ssh")]
    peers = [[("name", peer.name), ("type", peer.type), ("collect_dir", collect_dirs[peer.name])]
             + ([("ignore_failures", peer.ignore_failure_mode)] if peer.ignore_failure_mode else []) for peer in DATASET]
    write_config(path, "a cback3 master before the move to the stage playbook", options, staging, peers)


def master_cron_file():
    """Debian's cron file with the master's set uncommented, as on a cback3 master."""
    with open(DEBIAN_CRON) as handle:
        shipped = handle.read()
    lines = shipped.splitlines(True)
    start = [index for index, line in enumerate(lines) if line.strip() == "# Master machine"]
    assert len(start) == 1, "%s (package cedar-backup3) has no '# Master machine' set:\n%s" % (DEBIAN_CRON, shipped)
    index = start[0] + 1
    while index < len(lines) and re.match(r"^#\d", lines[index]):
        lines[index] = lines[index][1:]
        index += 1
    assert index - start[0] - 1 == 4, shipped
    return "".join(lines)


def uncommented(text, word="/usr/bin/cback3"):
    return [line for line in text.splitlines() if word in line and line.lstrip("#")[:1].isdigit()][-4:]


def own(path, user):
    entry = pwd.getpwnam(user)
    for dirpath, dirnames, filenames in os.walk(str(path)):
        for name in [dirpath] + [os.path.join(dirpath, item) for item in dirnames + filenames]:
            os.lchown(name, entry.pw_uid, entry.pw_gid)


def file_state(path):
    info = os.lstat(str(path))
    return open(str(path), "rb").read(), info.st_uid, info.st_gid, info.st_mode, info.st_mtime_ns, info.st_ino


class Master(object):
    """The cback3 master under ``root``, and how the guide's paths map there."""

    def __init__(self, base, pool):
        self.base = base
        self.root = base / "root"
        self.home = base / "roothome"  # HOME of the root shell, cron job and service
        for path in ("etc/cron.d", "etc/systemd/system", "opt/cback-ansible", "opt/backup/stage", "opt/backup/tmp", "var/tmp", "var/log"):
            (self.root / path).mkdir(parents=True, exist_ok=True)
        self.home.mkdir(mode=0o700)
        self.pool = pool
        self.backup = pwd.getpwnam(BACKUP_USER)
        self.dot_ssh = Path(self.backup.pw_dir) / ".ssh"
        self.key = self.dot_ssh / "id_ed25519"
        self.staging = self.root / "opt/backup/stage"
        self.compare = self.root / "var/tmp/cback-compare"
        self.project = self.root / "opt/cback-ansible"
        self.conf = self.root / "etc/cback3.conf"
        self.paths = PathMap({
            "/etc/cback3.conf": self.conf,
            "/etc/cron.d": self.root / "etc/cron.d",
            "/etc/systemd/system": self.root / "etc/systemd/system",
            "/etc/cback": self.root / "etc/cback",
            "/opt/cback-ansible": self.project,
            "/opt/backup": self.root / "opt/backup",
            "/var/tmp/cback-compare": self.compare,
            "/var/log/cback-stage.log": self.root / "var/log/cback-stage.log",
            "/var/backups/.ssh/id_rsa": self.key,
        })

    def build(self, tarball):
        self._ssh()
        self.collect_dirs = ds.materialise(DATASET, str(self.root / "opt/backup/collect"))
        own(self.root / "opt/backup/collect", BACKUP_USER)
        own(self.root / "opt/backup/tmp", BACKUP_USER)
        write_cback3_conf(str(self.conf), str(self.staging), str(self.root / "opt/backup/tmp"), self.collect_dirs)
        self.cron_before = master_cron_file()
        (self.root / "etc/cron.d/cedar-backup3").write_text(self.cron_before)
        # What the guide's pip install makes, and the tarball it installs.
        os.symlink(str(VENV.resolve()), str(self.project / "venv"))
        shutil.copy(tarball, str(self.project))

    def _ssh(self):
        """The backup user's own ssh, as cback3 has been using it; the peers (this machine) accept its key."""
        self.dot_ssh.mkdir(mode=0o700)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "backup@cback3-master", "-f", str(self.key)],
                       check=True, timeout=30)
        self.public = self.key.with_name("id_ed25519.pub").read_text().split()
        known, config = [], []
        for name in REMOTE:
            peer = self.pool.peer(name)
            known.append("%s %s" % (name, " ".join(open(self.pool.host_key_file(name)).read().split()[:2])))
            config.append("Host %s\n    HostName %s\n    Port %d\n    HostKeyAlias %s\n" % (name, peer.address, peer.port, name))
        (self.dot_ssh / "known_hosts").write_text("\n".join(known) + "\n")
        (self.dot_ssh / "config").write_text("\n".join(config))
        self.authorized = 'from="127.0.0.0/8" %s\nssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOtherKeyOfTheAdministratorsOtherKeyAdm admin@x\n' % (
            " ".join(self.public))
        (self.dot_ssh / "authorized_keys").write_text(self.authorized)
        own(self.dot_ssh, BACKUP_USER)
        for name in ("id_ed25519", "authorized_keys", "config"):
            os.chmod(str(self.dot_ssh / name), 0o600)

    def peer_logs(self):
        return "\n".join("--- sshd %s ---\n%s" % (name, open(self.pool.peer(name).log).read()[-3000:]) for name in REMOTE)

    def daily(self, staging):
        found = ds.daily_dirs(str(staging))
        assert len(found) == 1, (staging, found)
        return found[0]

    def staged(self, staging):
        """The daily directory below ``staging``: every entry's kind, size, sha256, mode and owner."""
        daily = self.daily(staging)
        return ds.normalise_daily(ds.tree_snapshot(str(staging), exclude=run_reports(daily)), daily)

    # -- the three ways the guide's commands run ----------------------------------------------

    def shell(self, name, guide):
        """The guide's block ``run NAME``, with bash, as root in the project directory."""
        commands = self.paths(guide.run(name))
        env = dict(PATH=SHELL_PATH, HOME=str(self.home), LANG="C.UTF-8", TERM="dumb")
        return run_shell(["bash", "-e", "-o", "pipefail", "-c", commands], env, self.project, STEP_TIMEOUT)

    def cron(self, text):
        """The one job of the cron.d file ``text``, as cron starts it: ``/bin/sh -c`` in HOME; its output is the mail."""
        env, jobs = cron_jobs(text)
        assert len(jobs) == 1, jobs
        schedule, user, command = jobs[0]
        assert "%" not in command, "cron turns % into a newline: %s" % command
        env = dict(dict(SHELL="/bin/sh", PATH=CRON_PATH, HOME=str(self.home), LOGNAME=user), **env)
        return schedule, user, run_shell(["/bin/sh", "-c", command], env, self.home, STEP_TIMEOUT)

    def service(self, text):
        """The unit's ``ExecStart``, as systemd starts it for a system service: in /, with its ``Environment``."""
        argv, environment = unit_command(unit_file(text))
        assert os.path.isabs(argv[0]), argv
        env = dict(dict(PATH=SYSTEMD_PATH, LANG="C.UTF-8", HOME=str(self.home)), **environment)
        return run_shell(argv, env, "/", STEP_TIMEOUT)


@pytest.fixture
def master(installed_collections):
    """The cback3 master (see the module's docstring); everything removed afterwards."""
    tarballs = glob.glob(str(ROOT / ".build" / "cedarbackup-peer-*.tar.gz"))
    assert len(tarballs) == 1, tarballs
    base = public_dir("cbmigrate-")
    try:
        with fresh_accounts((BACKUP_USER,), (BACKUP_USER,)):
            # The password "*": no password login, and not locked (an sshd without PAM refuses a locked account's key).
            subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", "--user-group", "--password", "*", BACKUP_USER],
                           check=True, timeout=30)
            with ManagedSshHostPool(base / "hosts", names=REMOTE, first_address="127.0.21.1") as pool:
                built = Master(base, pool)
                built.build(tarballs[0])
                yield built
    finally:
        remove_tree(base)


def test_the_guide_takes_a_cback3_master_to_a_scheduled_stage_run(master):
    guide = Guide(GUIDE)

    def write(path):
        """The guide's file ``path``, its directory made where missing."""
        target = Path(master.paths.path(path))
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(master.paths(guide.file(path)))

    # The night's cback3 stage, on the master as it is.
    night = run_cback3(str(master.conf), str(master.base), umask=0o022)
    assert night.rc == 0 and night.statuses(STATUSES) == STATUSES, "%s\n%s" % (night, master.peer_logs())
    cback3_tree = master.staged(master.staging)

    # 1. What the master runs today: the lines the guide shows are the master's.
    assert guide.expect("cron-before").splitlines() == uncommented(master.cron_before)

    # 2. The collection beside the project, and its ansible.cfg.
    install = master.shell("install", guide)
    assert install.rc == 0, install
    assert (master.project / "collections/ansible_collections/cedarbackup/peer/MANIFEST.json").is_file(), install
    write("/opt/cback-ansible/ansible.cfg")

    # 3. cback3.conf as the inventory.
    write("/opt/cback-ansible/backup.cback3_conf.yml")
    inventory = master.shell("inventory", guide)
    assert inventory.rc == 0 and all("|--%s" % peer.name in inventory.output for peer in DATASET), inventory
    assert str(master.staging) in inventory.output, inventory

    # 5. Check mode into a fresh staging directory: nothing written, anywhere.
    collect_before = ds.tree_snapshot(str(master.root / "opt/backup/collect"))
    check = master.shell("check-mode", guide)
    assert check.rc == 0 and "would stage" in check.output, check
    assert not master.compare.exists(), "check mode made the staging directory"
    assert ds.compare_snapshots(collect_before, ds.tree_snapshot(str(master.root / "opt/backup/collect")),
                                fields=("kind", "size", "sha256", "mode", "uid", "gid", "ino", "mtime_ns")) == []

    # 6. A real run beside cback3's, and the guide's comparison.
    real = master.shell("stage-compare", guide)
    assert real.rc == 0, real
    problems = ds.compare_snapshots(cback3_tree, master.staged(master.compare))
    assert problems == [], "\n".join(problems)
    files, dirs = ds.count_kinds(cback3_tree)
    # lpeer1: 5 files and cback.collect; mp1, mp2: 4 each (scp fetches no dotfile) and cback.collect; the daily
    # cback.stage.  YYYY, MM, DD and the 4 peers' directories (lpeer2's empty).
    assert (files, dirs) == (6 + 5 + 5 + 1, 3 + 4), (files, dirs)
    compare_text = guide.run("compare")
    compare = run_shell(["bash", "-e", "-o", "pipefail", "-c", master.paths(compare_text)],
                        dict(PATH=SHELL_PATH, HOME=str(master.home), LANG="C.UTF-8"), master.project, STEP_TIMEOUT)
    assert compare.rc == 0 and compare.output.strip().endswith("same staging tree"), compare
    # The comparison can fail: one staged file's mode, then its content.
    victim = os.path.join(str(master.compare), master.daily(master.compare), "mp1", "mp1-3.tar.gz")
    os.chmod(victim, 0o600)
    changed = run_shell(["bash", "-e", "-o", "pipefail", "-c", master.paths(compare_text)],
                        dict(PATH=SHELL_PATH, HOME=str(master.home), LANG="C.UTF-8"), master.project, STEP_TIMEOUT)
    assert changed.rc != 0 and "same staging tree" not in changed.output and "mp1-3.tar.gz" in changed.output, changed

    # 7. The switch: Debian's stage line commented out, the rest as it was.
    switch = master.shell("cron-switch", guide)
    assert switch.rc == 0, switch
    cron_after = (master.root / "etc/cron.d/cedar-backup3").read_text()
    assert guide.expect("cron-after").splitlines() == uncommented(cron_after)
    assert [line for line in master.cron_before.splitlines() if line not in cron_after.splitlines()] == ["30 02 * * * root  /usr/bin/cback3 stage"]
    assert (master.root / "etc/cron.d/cedar-backup3.pre-ansible").read_text() == master.cron_before
    for path in ("/etc/cron.d/cedarbackup-peer-stage", "/etc/systemd/system/cedarbackup-peer-stage.service",
                 "/etc/systemd/system/cedarbackup-peer-stage.timer"):
        write(path)
    cron_text = (master.root / "etc/cron.d/cedarbackup-peer-stage").read_text()
    service_text = (master.root / "etc/systemd/system/cedarbackup-peer-stage.service").read_text()
    units = [str(master.root / "etc/systemd/system" / name) for name in ("cedarbackup-peer-stage.service", "cedarbackup-peer-stage.timer")]
    verify = subprocess.run(["systemd-analyze", "verify"] + units, capture_output=True, text=True, timeout=60, check=False)
    assert verify.returncode == 0 and verify.stdout + verify.stderr == "", verify
    timer = unit_file((master.root / "etc/systemd/system/cedarbackup-peer-stage.timer").read_text())
    assert unit_values(timer, "Timer", "OnCalendar") == ["*-*-* 02:30:00"]
    assert unit_values(unit_file(service_text), "Service", "Type") == ["oneshot"]

    # The scheduled run, all peers staged or ignored: exit 0, no mail.  It stages into cback3's
    # tree of the night, which it finds staged already: nothing changes there.
    schedule, user, cron = master.cron(cron_text)
    assert (" ".join(schedule), user) == ("30 02 * * *", "root")  # Debian's time for cback3 stage
    assert cron.rc == 0 and cron.output == "", cron
    log = (master.root / "var/log/cback-stage.log").read_text()
    assert re.search(r"^lpeer1\s+: ok=\d+\s+changed=0\s+unreachable=0\s+failed=0", log, re.M), log
    assert ds.compare_snapshots(cback3_tree, master.staged(master.staging)) == []
    service = master.service(service_text)
    assert service.rc == 0, service

    # A peer that is not ready and not ignored: exit 2, the mail names it and why.
    indicator = os.path.join(master.collect_dirs["lpeer1"], ds.COLLECT_INDICATOR)
    os.rename(indicator, indicator + ".away")
    _schedule, _user, cron = master.cron(cron_text)
    service = master.service(service_text)
    os.rename(indicator + ".away", indicator)
    assert cron.rc == 0 and cron.output.startswith(FAILED_MAIL % 2 + "\n"), cron
    assert re.search(r"^fatal: \[lpeer1\]: FAILED! ", cron.output, re.M) and "Peer lpeer1: not ready, no collect indicator" in cron.output, cron
    assert "Stage run summary" in cron.output and "4 peers, 1 failed" in cron.output, cron
    assert re.search(r"^lpeer1\s+: .* failed=1", cron.output, re.M) and re.search(r"^mp1\s+: .* failed=0", cron.output, re.M), cron
    assert service.rc == 2 and "Peer lpeer1: not ready" in service.output, service

    # A cback3.conf the plugin refuses: Ansible stops before the run, exit 1.
    conf = master.conf.read_bytes()
    master.conf.write_bytes(conf.replace(b"<staging_dir>", b"<staging_dir>broken", 1).replace(b"</options>", b"", 1))
    _schedule, _user, cron = master.cron(cron_text)
    service = master.service(service_text)
    master.conf.write_bytes(conf)
    assert cron.output.startswith(FAILED_MAIL % 1 + "\n") and "Completely failed to parse inventory source" in cron.output, cron
    # The message names the file (ansible-core 2.16 wraps its warnings: the path may be cut by a line break).
    assert service.rc == 1 and str(master.conf) in "".join(service.output.split()), service

    # 9. Later, the setup playbook with cback3's key.  The connection variables of each remote
    # peer's host are the administrator's (here: the test sshd's, and its host key file).
    write("/opt/cback-ansible/group_vars/cback_master.yml")
    (master.project / "host_vars").mkdir()
    for name in REMOTE:
        values = dict(master.pool.ansible_vars(name), cback_setup_host_key_file=master.pool.host_key_file(name))
        (master.project / "host_vars" / (name + ".yml")).write_text(json.dumps(values))  # JSON is YAML
    key_before = file_state(master.key)
    machine_ssh_dir = os.path.lexists("/etc/cback")
    setup = master.shell("setup", guide)
    assert os.path.lexists("/etc/cback") == machine_ssh_dir, "the setup wrote to this machine's /etc/cback"
    assert setup.rc == 0, setup
    ssh_dir = master.root / "etc/cback"
    assert file_state(master.key) == key_before and not (ssh_dir / "id_ed25519").exists(), "the key was changed, or a second one made"
    assert "    IdentityFile %s\n" % master.key in (ssh_dir / "ssh_config").read_text()
    authorized = (master.dot_ssh / "authorized_keys").read_text().splitlines()
    assert authorized == ["restrict " + " ".join(master.public), master.authorized.splitlines()[1]], authorized
    kept = glob.glob(str(master.dot_ssh / "authorized_keys.*~"))
    assert len(kept) == 1 and open(kept[0]).read() == master.authorized, kept

    # The runs with the setup's ssh configuration: the backup user's own config and known_hosts
    # are not needed any more (moved away for this run, back for the way back).
    write("/opt/cback-ansible/group_vars/cback_master.yml")
    for name in ("config", "known_hosts"):
        os.rename(str(master.dot_ssh / name), str(master.dot_ssh / (name + ".away")))
    _schedule, _user, cron = master.cron(cron_text)
    for name in ("config", "known_hosts"):
        os.rename(str(master.dot_ssh / (name + ".away")), str(master.dot_ssh / name))
    assert cron.rc == 0 and cron.output == "", cron
    assert ds.compare_snapshots(cback3_tree, master.staged(master.staging)) == []

    # 10. The way back: Debian's cron file as it was, and cback3 stages again.
    rollback = master.shell("rollback", guide)
    assert rollback.rc == 0, rollback
    assert sorted(os.listdir(str(master.root / "etc/cron.d"))) == ["cedar-backup3"]
    assert (master.root / "etc/cron.d/cedar-backup3").read_text() == master.cron_before
    again = run_cback3(str(master.conf), str(master.base / "roothome"), umask=0o022)
    assert again.rc == 0 and "Executed the 'stage' action successfully." in again.log, str(again)

    assert guide.untaken() == [], "marked blocks of %s the test did not follow" % GUIDE


def test_getting_started_shows_the_guides_cron_line():
    """docs/getting-started.md shows the scheduled run as one line: the guide's, which the test above runs."""
    guide = Guide(GUIDE)
    _env, jobs = cron_jobs(guide.file("/etc/cron.d/cedarbackup-peer-stage"))
    line = " ".join(jobs[0][0]) + " " + jobs[0][1] + " " + jobs[0][2]
    assert "\n%s\n" % line in (ROOT / "docs" / "getting-started.md").read_text()
