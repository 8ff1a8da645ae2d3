# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A cback3.conf as the inventory: the stage playbook driven by ``cedarbackup.peer.cback3_conf``
stages what ``cback3 stage`` stages with the same file.

One cback3.conf, one set of collect directories, one staging directory.  ``cback3 stage``
(Debian's cedar-backup3, as root with backup user ``cbackpeer``) runs on it first; the staging
tree and the collect directories are recorded, then put back as they were before the run
(staging dir emptied, collect dirs written again byte for byte and mode for mode); then
``ansible-playbook -i pool.cback3_conf.yml cedarbackup.peer.stage`` runs on the same file.
Remote peers are the session's real sshd peers (``ssh_pool``: ``peer1``, ``peer2`` on
127.0.1.x), reached as ``root`` with ``cbackpeer``'s key by both sides, since both copy as
``cbackpeer`` (``cback3`` through ``su cbackpeer -c '<rcp command>'``, the stage run by dropping
to that user's ids).

The file lists peers in both sections, as cback3 allows: the stage section's are staged (local
peers ready, not ready and ignored, not ready and an error; both remote peers), the peers
section's are not (``idle``, a ready local peer, stays untouched) and hold the managed settings
(``ghost``, managed but not in the stage section, is warned about).

Compared as in ``test_stage_vs_cback3.py``: every file and directory below the staging dir
(kind, size, sha256, mode, uid, gid; the daily ``YYYY/MM/DD`` normalised, our JSON summary left
out), every collect directory afterwards, and each peer's outcome (cback3's log against our
summary and the failed hosts of the play).
"""

import json
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import types
import xml.etree.ElementTree as ET

import pytest

from ansible_collections.cedarbackup.peer.tests.support import stage_dataset as ds
from ansible_collections.cedarbackup.peer.tests.support.ansible_run import ansible_environment
from ansible_collections.cedarbackup.peer.tests.support.cback3_run import run_cback3
from ansible_collections.cedarbackup.peer.tests.support.run_summaries import run_reports

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV_BIN = os.environ.get("CBACK_ANSIBLE_BIN") or os.path.join(ROOT, ".venv", "bin")
TARGET_PYTHON = "/usr/bin/python3"
UMASK = 0o022
PLAYBOOK_TIMEOUT = 180
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
SUMMARY_SUFFIX = ".stage-summary.json"


def _files(peer, modes=(0o600, 0o640, 0o644, 0o755)):
    sizes = (0, 1, 4096 + 17, 70 * 1024 + 3)
    files = [ds.FileSpec("%s-%d.tar.gz" % (peer, index), sizes[index], modes[index]) for index in range(len(sizes))]
    return tuple(files) + (ds.FileSpec(".dotfile", 100, 0o644),)


# The stage section, in this order: what both sides stage.
STAGED = (
    ds.PeerSpec("lpeer1", "local", True, None, _files("lpeer1"), None),
    ds.PeerSpec("lpeer2", "local", False, "daily", _files("lpeer2"), None),    # not ready, ignored on a normal day
    ds.PeerSpec("lpeer3", "local", False, "none", _files("lpeer3"), None),     # not ready: an error
    ds.PeerSpec("peer1", "remote", True, None, _files("peer1"), None),
    ds.PeerSpec("peer2", "remote", True, "weekly", _files("peer2"), None),
)
# Only in the peers section: never staged.
IDLE = ds.PeerSpec("idle", "local", True, None, _files("idle"), None)
DATASET = STAGED + (IDLE,)
EXPECTED = {"lpeer1": "staged", "lpeer2": "ignored", "lpeer3": "not ready", "peer1": "staged", "peer2": "staged"}


def _text(parent, tag, value):
    element = ET.SubElement(parent, tag)
    element.text = value
    return element


def _peer(parent, name, peer_type, collect_dir, **elements):
    element = ET.SubElement(parent, "peer")
    _text(element, "name", name)
    _text(element, "type", peer_type)
    _text(element, "collect_dir", collect_dir)
    for tag, value in elements.items():
        _text(element, tag, value)
    return element


def write_config(path, pool, backup_user, rcp_command, rsh_command, starting_day):
    top = ET.Element("cb_config")
    reference = ET.SubElement(top, "reference")
    _text(reference, "author", "cedarbackup.peer tests")
    _text(reference, "revision", "1")
    _text(reference, "description", "cback3_conf inventory vs cback3 stage")
    options = ET.SubElement(top, "options")
    _text(options, "starting_day", starting_day)
    _text(options, "working_dir", pool.work)
    _text(options, "backup_user", backup_user)
    _text(options, "backup_group", backup_user)
    _text(options, "rcp_command", rcp_command)
    _text(options, "rsh_command", rsh_command)
    _text(options, "cback_command", "/usr/bin/cback3")
    _text(options, "managed_actions", "collect")
    peers = ET.SubElement(top, "peers")
    _peer(peers, "peer1", "remote", "/nonexistent/peer1", backup_user="root", managed="Y", managed_actions="collect, purge")
    _peer(peers, "ghost", "remote", "/nonexistent/ghost", managed="Y")
    _peer(peers, IDLE.name, "local", pool.collect_dirs[IDLE.name])
    stage = ET.SubElement(top, "stage")
    _text(stage, "staging_dir", pool.staging)
    for peer in STAGED:
        elements = {}
        if peer.remote:
            elements["backup_user"] = "root"
        if peer.ignore_failure_mode:
            elements["ignore_failures"] = peer.ignore_failure_mode
        _peer(stage, peer.name, peer.type, pool.collect_dirs[peer.name], **elements)
    ET.ElementTree(top).write(path, encoding="utf-8", xml_declaration=True)
    return path


class Pool(object):
    """``collect/<peer>``, ``staging`` and ``work`` under ``root``: the directories the cback3.conf names."""

    def __init__(self, root, backup_user):
        self.root = root
        self.backup_user = backup_user
        self.collect_root = os.path.join(root, "collect")
        self.staging = os.path.join(root, "staging")
        self.work = os.path.join(root, "work")
        self.collect_dirs = None
        self.reset()

    def reset(self):
        """The state before any stage run: fresh collect dirs, empty staging and working dirs."""
        for path in (self.collect_root, self.staging, self.work):
            shutil.rmtree(path, ignore_errors=True)
        self.collect_dirs = ds.materialise(DATASET, self.collect_root)
        for path in (self.staging, self.work):
            os.mkdir(path)
            os.chmod(path, 0o755)
        entry = pwd.getpwnam(self.backup_user)
        os.chown(self.work, entry.pw_uid, entry.pw_gid)  # cback3 fetches cback.collect there as the backup user

    def daily(self):
        found = ds.daily_dirs(self.staging)
        assert len(found) == 1, "expected one YYYY/MM/DD below %s, found %r" % (self.staging, found)
        return found[0]

    def staging_snapshot(self):
        daily = self.daily()
        return ds.normalise_daily(ds.tree_snapshot(self.staging, exclude=run_reports(daily)), daily)

    def collect_snapshot(self):
        return ds.tree_snapshot(self.collect_root)


def ansible_env(home, collections):
    """The tests' ansible environment (``ansible_environment``), its task record under ``home``."""
    env = ansible_environment(collections, home)
    env["CBTEST_JSON_OUT"] = os.path.join(str(home), "record.json")
    return env


def run(argv, env, cwd):
    started = time.monotonic()
    proc = subprocess.run(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=PLAYBOOK_TIMEOUT, umask=UMASK, check=False)
    return types.SimpleNamespace(
        argv=argv, rc=proc.returncode, stdout=proc.stdout.decode(errors="replace"), stderr=proc.stderr.decode(errors="replace"),
        elapsed=time.monotonic() - started,
        text="%s\nrc=%s\n--- stdout ---\n%s\n--- stderr ---\n%s" % (
            " ".join(argv), proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")))


def plain(value):
    """``ansible-inventory --list`` output without the markers of untrusted strings (ansible-core >= 2.19)."""
    if isinstance(value, dict):
        if list(value) == ["__ansible_unsafe"]:
            return value["__ansible_unsafe"]
        return dict((key, plain(item)) for key, item in value.items())
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value


def recap(stdout):
    """``{host: (ok, changed, unreachable, failed)}`` from the PLAY RECAP."""
    found = {}
    for line in stdout.split("PLAY RECAP", 1)[-1].splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[1] == ":" and fields[2].startswith("ok="):
            found[fields[0]] = tuple(int(field.split("=")[1]) for field in fields[2:6])
    return found


@pytest.fixture(scope="module")
def runs(ssh_pool, backup_user, installed_collections):
    """cback3 stage, then the playbook over the plugin's inventory, on one cback3.conf."""
    base = tempfile.mkdtemp(prefix="cback-inventory-")
    os.chmod(base, 0o755)  # the backup user reaches the working dir
    try:
        rcp_command, rsh_command = ssh_pool.client_for_user(backup_user)
        for peer in ssh_pool.peers:
            assert peer.name in EXPECTED, "the ssh_pool peers are the remote peers of the dataset"
        pool = Pool(os.path.join(base, "pool"), backup_user)
        starting_day = WEEKDAYS[(time.localtime().tm_wday + 3) % 7]  # neither today nor tomorrow
        config = write_config(os.path.join(base, "cback3.conf"), pool, backup_user, rcp_command, rsh_command, starting_day)
        result = types.SimpleNamespace(pool=pool, config=config)

        result.cback3 = run_cback3(config, base, umask=UMASK)
        assert result.cback3.rc == 0 and "Executed the 'stage' action successfully." in result.cback3.log, str(result.cback3)
        result.reference_staging = pool.staging_snapshot()
        result.reference_collect = pool.collect_snapshot()

        pool.reset()
        assert ds.tree_snapshot(pool.staging) == {}
        source = os.path.join(base, "pool.cback3_conf.yml")
        with open(source, "w") as handle:
            json.dump(dict(plugin="cedarbackup.peer.cback3_conf", path=config,
                           master_vars=dict(ansible_python_interpreter=TARGET_PYTHON)), handle)
        env = ansible_env(os.path.join(base, "ansible"), installed_collections)
        result.inventory = run([os.path.join(VENV_BIN, "ansible-inventory"), "-i", source, "--list"], env, base)
        result.playbook = run([os.path.join(VENV_BIN, "ansible-playbook"), "-i", source, "cedarbackup.peer.stage"], env, base)
        result.staging = pool.staging_snapshot()
        result.collect = pool.collect_snapshot()
        with open(os.path.join(pool.staging, pool.daily() + SUMMARY_SUFFIX)) as handle:
            result.summary = json.load(handle)
        yield result
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_cback3_did_what_the_dataset_provokes(runs):
    assert runs.cback3.statuses() == EXPECTED, str(runs.cback3)


def test_inventory_from_the_cback3_conf(runs):
    assert runs.inventory.rc == 0, runs.inventory.text
    data = plain(json.loads(runs.inventory.stdout))
    assert data["cback_master"]["hosts"] == ["localhost"]
    assert data["cback_peers"]["hosts"] == [peer.name for peer in STAGED]
    hostvars = data["_meta"]["hostvars"]
    pool = runs.pool
    assert hostvars["localhost"]["cback_staging_dir"] == pool.staging
    assert hostvars["localhost"]["cback_working_dir"] == pool.work
    assert hostvars["localhost"]["cback_managed_actions"] == ["collect"]
    assert hostvars["lpeer2"] == dict(cback_peer_type="local", cback_collect_dir=pool.collect_dirs["lpeer2"],
                                      cback_ignore_failure_mode="daily")
    # Staged from the stage section's entry; managed as the peers section says.
    assert hostvars["peer1"] == dict(cback_peer_type="remote", cback_collect_dir=pool.collect_dirs["peer1"],
                                     cback_remote_user="root", cback_managed=True, cback_managed_actions=["collect", "purge"])
    assert "idle" not in hostvars and "ghost" not in hostvars
    assert "ghost" in runs.inventory.stderr and "[WARNING]" in runs.inventory.stderr, runs.inventory.text


def test_staging_tree_matches_cback3(runs):
    files, dirs = ds.count_kinds(runs.reference_staging)
    problems = ds.compare_snapshots(runs.reference_staging, runs.staging)
    assert problems == [], "staging trees differ (%d files, %d dirs compared):\n%s\n\n%s" % (
        files, dirs, "\n".join(problems), runs.playbook.text)
    # The daily cback.stage; lpeer1's files, dotfile and cback.collect; the remote peers' without their dotfile.
    count = len(_files("x"))
    assert (files, dirs) == (1 + (count + 1) + 2 * count, 3 + len(STAGED)), "%d files, %d dirs compared" % (files, dirs)
    assert not [path for path in runs.staging if "/idle" in path]


def test_collect_dirs_match_cback3(runs):
    problems = ds.compare_snapshots(runs.reference_collect, runs.collect)
    assert problems == [], "collect dirs differ afterwards:\n%s" % "\n".join(problems)
    indicators = sorted(path.split("/")[0] for path in runs.collect if path.endswith("/" + ds.STAGE_INDICATOR))
    assert indicators == ["lpeer1", "peer1", "peer2"]


def test_outcomes_match_cback3(runs):
    statuses = dict((peer["name"], peer["status"]) for peer in runs.summary["peers"])
    assert statuses == runs.cback3.statuses(), runs.playbook.text
    assert sorted(runs.summary["failed"]) == sorted(runs.cback3.error_peers()) == ["lpeer3"]
    assert runs.playbook.rc != 0, runs.playbook.text
    failed = sorted(host for host, values in recap(runs.playbook.stdout).items() if values[3])
    assert failed == ["lpeer3"], runs.playbook.text


def test_plugin_documentation(installed_collections, tmp_path):
    """``ansible-doc -t inventory`` renders the plugin's documentation: every option it reads, examples."""
    env = ansible_env(str(tmp_path / "ansible"), installed_collections)
    name = "cedarbackup.peer.cback3_conf"
    doc = run([os.path.join(VENV_BIN, "ansible-doc"), "--json", "-t", "inventory", name], env, str(tmp_path))
    assert doc.rc == 0, doc.text
    entry = json.loads(doc.stdout)[name]
    options = entry["doc"]["options"]
    assert options["plugin"]["required"] is True and options["plugin"]["choices"] == [name]
    assert options["path"]["default"] == "/etc/cback3.conf" and options["path"]["type"] == "str"
    assert options["master"]["default"] == "localhost"
    assert options["master_vars"]["type"] == "dict" and options["master_vars"]["default"] == {}
    for option in ("compose", "groups", "keyed_groups", "strict"):  # Constructable
        assert option in options, option
    for option in options.values():
        assert option.get("description"), option
    assert entry["doc"]["author"] == ["Cedar Backup peer collection maintainers (@cedarbackup)"]
    assert entry["doc"]["version_added"] == "0.1.0"
    assert "plugin: cedarbackup.peer.cback3_conf" in entry["examples"]


def _docs_example(directory):
    """The docs' example (docs/inventory.md): its cback3.conf, source file, group_vars and host_vars files, in ``directory``."""
    import re

    import yaml

    with open(os.path.join(ROOT, "docs", "inventory.md")) as handle:
        text = handle.read()
    example = text.split("## Example: from `cback3.conf` to the inventory", 1)[1]
    section = text.split("## From an existing cback3.conf", 1)[1]
    with open(os.path.join(directory, "cback3.conf"), "w") as handle:
        handle.write(re.search(r"```xml\n(.*?)```", example, re.S).group(1))
    options = yaml.safe_load(re.search(r"```yaml\n(# backup\.cback3_conf\.yml.*?)```", section, re.S).group(1))
    options["path"] = "cback3.conf"
    with open(os.path.join(directory, "backup.cback3_conf.yml"), "w") as handle:
        json.dump(options, handle)
    files = {}
    for name, body in re.findall(r"```yaml\n# ((?:group|host)_vars/[\w.-]+\.yml)[^\n]*\n(.*?)```", section, re.S):
        os.makedirs(os.path.join(directory, os.path.dirname(name)), exist_ok=True)
        with open(os.path.join(directory, name), "w") as handle:
            handle.write(body)
        files[name] = yaml.safe_load(body)
    return options, files


def test_group_and_host_vars_beside_the_source_override_the_file(installed_collections, tmp_path):
    """The docs' example: group_vars/cback_master.yml and host_vars/<peer>.yml beside the source win; -e wins over both."""
    base = str(tmp_path)
    options, files = _docs_example(base)
    assert sorted(files) == ["group_vars/cback_master.yml", "host_vars/web1.yml"]
    master, staging_dir = options["master"], files["group_vars/cback_master.yml"]["cback_staging_dir"]
    collect_dir = files["host_vars/web1.yml"]["cback_collect_dir"]
    env = ansible_env(os.path.join(base, "ansible"), installed_collections)
    inventory = [os.path.join(VENV_BIN, "ansible-inventory"), "-i", "backup.cback3_conf.yml"]

    listed = run(inventory + ["--list"], env, base)
    assert listed.rc == 0, listed.text
    hostvars = plain(json.loads(listed.stdout))["_meta"]["hostvars"]
    assert hostvars[master]["cback_staging_dir"] == staging_dir != "/opt/backup/stage"
    assert hostvars[master]["cback_working_dir"] == "/opt/backup/tmp"  # the file's, where nothing overrides it
    assert hostvars["web1"]["cback_collect_dir"] == collect_dir != "/opt/backup/collect"
    assert hostvars["web1"]["cback_ignore_failure_mode"] == "daily"
    assert hostvars["db1"]["cback_collect_dir"] == "/srv/backup/collect"

    host = run(inventory + ["--host", master], env, base)
    assert host.rc == 0, host.text
    assert plain(json.loads(host.stdout))["cback_staging_dir"] == staging_dir
    host = run(inventory + ["--host", "web1"], env, base)
    assert plain(json.loads(host.stdout))["cback_collect_dir"] == collect_dir

    extra = ["-e", "cback_staging_dir=/mnt/stage", "-e", "cback_collect_dir=/mnt/collect"]
    host = run(inventory + ["--host", master] + extra, env, base)
    assert host.rc == 0, host.text
    assert plain(json.loads(host.stdout))["cback_staging_dir"] == "/mnt/stage"
    host = run(inventory + ["--host", "web1"] + extra, env, base)
    assert plain(json.loads(host.stdout))["cback_collect_dir"] == "/mnt/collect"

    # host_vars/<master>.yml overrides what the plugin sets for the master too, the connection included.
    with open(os.path.join(base, "host_vars", master + ".yml"), "w") as handle:
        handle.write("ansible_connection: ssh\ncback_staging_dir: /srv/other\n")
    host = run(inventory + ["--host", master], env, base)
    values = plain(json.loads(host.stdout))
    assert (values["ansible_connection"], values["cback_staging_dir"]) == ("ssh", "/srv/other"), host.text


# ---------------------------------------------------------------------------
# A fleet: one source per master, composed by ansible-inventory
# ---------------------------------------------------------------------------

# {master: (its cback3.conf's staging dir and backup user, its stage section's peers)}
FLEET = {
    "backup1": ("/srv/backup1/stage", "bk1", (("backup1", "local"), ("web1", "remote"), ("db1", "remote"))),
    "backup2": ("/srv/backup2/stage", "bk2", (("mail1", "remote"), ("files", "local"))),
}


def write_fleet_config(path, staging_dir, backup_user, peers):
    """A cback3.conf of the master whose staging dir, backup user and peers are ``staging_dir``, ``backup_user``, ``peers``."""
    top = ET.Element("cb_config")
    options = ET.SubElement(top, "options")
    for tag, value in (("starting_day", "monday"), ("working_dir", "/var/tmp"), ("backup_user", backup_user),
                       ("backup_group", backup_user), ("rcp_command", "/usr/bin/scp -B")):
        _text(options, tag, value)
    stage = ET.SubElement(top, "stage")
    _text(stage, "staging_dir", staging_dir)
    for name, peer_type in peers:
        _peer(stage, name, peer_type, "/var/backups/%s/collect" % name)
    ET.ElementTree(top).write(path, encoding="utf-8", xml_declaration=True)
    return path


def write_fleet_source(base, master, staging_dir, backup_user, peers, **options):
    """``<base>/fleet/<master>.cback3_conf.yml`` reading ``<base>/confs/<master>.conf``, written from the arguments."""
    for directory in ("confs", "fleet"):
        os.makedirs(os.path.join(base, directory), exist_ok=True)
    conf = write_fleet_config(os.path.join(base, "confs", master + ".conf"), staging_dir, backup_user, peers)
    data = dict(plugin="cedarbackup.peer.cback3_conf", path=conf, master=master,
                master_vars=dict(ansible_python_interpreter=TARGET_PYTHON))
    data.update(options)
    path = os.path.join(base, "fleet", master + ".cback3_conf.yml")
    with open(path, "w") as handle:
        json.dump(data, handle)
    return path


@pytest.fixture
def fleet(installed_collections, tmp_path):
    """The sources of FLEET in ``<tmp>/fleet``; ``inventory(sources, *arguments)`` runs ansible-inventory in ``<tmp>``."""
    base = str(tmp_path)
    sources = [write_fleet_source(base, master, *FLEET[master]) for master in sorted(FLEET)]
    env = ansible_env(os.path.join(base, "ansible"), installed_collections)

    def inventory(sources, *arguments, **more_env):
        argv = [os.path.join(VENV_BIN, "ansible-inventory")]
        for path in sources:
            argv += ["-i", path]
        return run(argv + list(arguments), dict(env, **more_env), base)

    return types.SimpleNamespace(base=base, sources=sources, inventory=inventory)


def listed(result):
    assert result.rc == 0, result.text
    return plain(json.loads(result.stdout))


def test_fleet_inventory_of_two_sources(fleet):
    data = listed(fleet.inventory(fleet.sources, "--list"))
    assert sorted(data["cback_master"]["hosts"]) == ["backup1", "backup2"]
    assert data["cback_master_backup1"]["hosts"] == ["backup1"] and data["cback_master_backup2"]["hosts"] == ["backup2"]
    assert data["cback_peers"]["hosts"] == ["backup1-self", "web1", "db1", "mail1", "files"]
    hostvars = data["_meta"]["hostvars"]
    for master, (staging_dir, backup_user, peers) in FLEET.items():
        values = hostvars[master]
        assert (values["cback_staging_dir"], values["cback_backup_user"], values["cback_backup_group"]) == (
            staging_dir, backup_user, backup_user), master
        assert (values["ansible_connection"], values["ansible_python_interpreter"]) == ("local", TARGET_PYTHON), master
        for name, peer_type in peers:
            host = name + "-self" if name == master else name
            assert hostvars[host]["cback_master_host"] == master, host
            assert hostvars[host]["cback_peer_type"] == peer_type, host
            assert hostvars[host].get("cback_peer_name", host) == name, host
            assert "cback_staging_dir" not in hostvars[host], host
    # A directory holding both sources yields the same inventory; so do the sources in the other order.
    assert listed(fleet.inventory([os.path.join(fleet.base, "fleet")], "--list"))["_meta"] == data["_meta"]
    assert listed(fleet.inventory(fleet.sources[::-1], "--list"))["_meta"] == data["_meta"]


def test_fleet_precedence_of_the_files_beside_the_sources(fleet):
    """Per master: group_vars/all < group_vars/cback_master < host_vars/<master> beside the sources < -e; each master
    keeps its own file's values where nothing overrides them."""
    beside = os.path.join(fleet.base, "fleet")
    files = {
        "group_vars/all.yml": "cback_working_dir: /all/work\ncback_backup_group: everyone\n",
        "group_vars/cback_master.yml": "cback_working_dir: /masters/work\ncback_stage_parallel: 3\n",
        "host_vars/backup2.yml": "cback_staging_dir: /srv/other2\nansible_connection: ssh\n",
    }
    for name, text in files.items():
        os.makedirs(os.path.join(beside, os.path.dirname(name)), exist_ok=True)
        with open(os.path.join(beside, name), "w") as handle:
            handle.write(text)

    def host(master, *extra):
        return listed(fleet.inventory(fleet.sources, "--host", master, *extra))

    one, two = host("backup1"), host("backup2")
    keys = ("cback_working_dir", "cback_backup_group", "cback_stage_parallel", "cback_staging_dir", "cback_backup_user",
            "ansible_connection")
    assert [one[key] for key in keys] == ["/masters/work", "everyone", 3, "/srv/backup1/stage", "bk1", "local"]
    assert [two[key] for key in keys] == ["/masters/work", "everyone", 3, "/srv/other2", "bk2", "ssh"]
    for master in FLEET:
        values = host(master, "-e", "cback_staging_dir=/mnt/stage", "-e", "cback_working_dir=/mnt/work")
        assert (values["cback_staging_dir"], values["cback_working_dir"]) == ("/mnt/stage", "/mnt/work"), master
    # A peer's own values and its master: host_vars/<peer> beside the sources wins.
    with open(os.path.join(beside, "host_vars", "mail1.yml"), "w") as handle:
        handle.write("cback_master_host: backup1\ncback_collect_dir: /srv/mail1\n")
    mail1 = host("mail1")
    assert (mail1["cback_master_host"], mail1["cback_collect_dir"]) == ("backup1", "/srv/mail1")


def test_fleet_peer_in_two_sources_fails_unless_named_apart(fleet):
    base = fleet.base
    third = write_fleet_source(base, "backup3", "/srv/backup3/stage", "bk3", (("app1", "remote"), ("web1", "remote")))
    conf1, conf3 = os.path.join(base, "confs", "backup1.conf"), os.path.join(base, "confs", "backup3.conf")
    expected = (
        "%s: the peer web1 (master backup3, in %s) is also the peer web1 (master backup1, in %s) of %s: an inventory host "
        "has one master, so two masters cannot back up hosts of one name; set peer_host_suffix in one of the two sources to "
        "name its peer hosts apart, for example peer_host_suffix: '@backup3' in %s makes this peer the host web1@backup3 "
        "(its cback_peer_name stays web1)" % (third, conf3, conf1, fleet.sources[0], third))

    failed = fleet.inventory(fleet.sources + [third], "--list", ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED="true")
    assert failed.rc != 0, failed.text
    assert expected in " ".join(failed.stderr.split()), failed.text
    # By default Ansible goes on without the source that failed: the fleet of the other two is as it was.
    warned = fleet.inventory(fleet.sources + [third], "--list")
    assert expected in " ".join(warned.stderr.split()), warned.text
    data = listed(warned)
    assert data["_meta"] == listed(fleet.inventory(fleet.sources, "--list"))["_meta"]

    third = write_fleet_source(base, "backup3", "/srv/backup3/stage", "bk3", (("app1", "remote"), ("web1", "remote")),
                               peer_host_suffix="@backup3")
    data = listed(fleet.inventory(fleet.sources + [third], "--list"))
    hostvars = data["_meta"]["hostvars"]
    assert sorted(data["cback_master"]["hosts"]) == ["backup1", "backup2", "backup3"]
    assert (hostvars["web1"]["cback_master_host"], hostvars["web1"].get("cback_peer_name", "web1")) == ("backup1", "web1")
    assert (hostvars["web1@backup3"]["cback_master_host"], hostvars["web1@backup3"]["cback_peer_name"]) == ("backup3", "web1")
    assert hostvars["app1@backup3"]["cback_peer_name"] == "app1"
    assert hostvars["backup3"]["cback_staging_dir"] == "/srv/backup3/stage"
