# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests for the ``cedarbackup.peer.cback3_conf`` inventory plugin.

Each inventory is built the way ``ansible-inventory`` and ``ansible-playbook`` build it:
``InventoryManager`` over a source file ``*.cback3_conf.yml`` (through the ``auto`` plugin),
with a ``DataLoader``.  Failures are checked on the plugin itself (``InventoryManager`` turns
them into warnings).  Debian's ``CedarBackup3.config`` is the oracle: what it reads from a
valid cback3.conf is what the inventory must say, and a file the plugin rejects for a missing
or invalid element is one cback3 rejects too (except where noted).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import gzip
import importlib
import json
import os
import re
import sys

import pytest

SAMPLE = "/usr/share/doc/cedar-backup3/examples/cback3.conf.sample"
DIST_PACKAGES = "/usr/lib/python3/dist-packages"
PLUGIN = "cedarbackup.peer.cback3_conf"

pytestmark = pytest.mark.usefixtures("ansible_plugins")


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def write(path, text):
    with open(str(path), "w") as handle:
        handle.write(text)
    return str(path)


def source(directory, conf, name="pool.cback3_conf.yml", **options):
    """A source file in ``directory`` reading ``conf`` (a path), with more plugin ``options``."""
    data = dict(plugin=PLUGIN, path=str(conf))
    data.update(options)
    return write(os.path.join(str(directory), name), json.dumps(data, indent=2))  # JSON is YAML


def config(directory, text, name="cback3.conf"):
    return write(os.path.join(str(directory), name), text)


class Inventory(object):
    """What a source (or a list of sources) yields: ``groups`` ({group: sorted hosts}), ``hostvars`` ({host: its variables from the
    source, its groups' and its own, as Ansible combines them}), ``own`` ({host: its host variables}) and
    ``groupvars`` ({group: its variables})."""

    def __init__(self, path):
        from ansible.inventory.helpers import get_group_vars
        from ansible.inventory.manager import InventoryManager
        from ansible.parsing.dataloader import DataLoader
        from ansible.utils.vars import combine_vars

        self.loader = DataLoader()
        self.manager = InventoryManager(loader=self.loader, sources=path if isinstance(path, list) else [path])
        self.groups = dict((name, sorted(host.name for host in group.get_hosts()))
                           for name, group in self.manager.groups.items())
        self.own = dict((host.name, plain(dict((key, value) for key, value in host.vars.items()
                                               if not key.startswith("inventory_"))))
                        for host in self.manager.get_hosts())
        self.groupvars = dict((name, plain(group.get_vars())) for name, group in self.manager.groups.items())
        self.hostvars = dict((host.name, combine_vars(plain(get_group_vars(host.get_groups())), self.own[host.name]))
                             for host in self.manager.get_hosts())
        assert "cback_master" in self.groups, "the plugin yielded nothing from %s" % path


def plain(value):
    """Ansible's (possibly tagged or unsafe) values as plain Python values."""
    return json.loads(json.dumps(value))


def parse_error(path):
    """The message of the ``AnsibleParserError`` the plugin raises for source ``path``."""
    from ansible.errors import AnsibleParserError
    from ansible.inventory.data import InventoryData
    from ansible.parsing.dataloader import DataLoader
    from ansible.plugins.loader import inventory_loader

    plugin = inventory_loader.get(PLUGIN)
    assert plugin.verify_file(path)
    with pytest.raises(AnsibleParserError) as info:
        plugin.parse(InventoryData(), DataLoader(), path, cache=False)
    return getattr(info.value, "message", None) or str(info.value)


def plugin_module():
    from ansible.plugins.loader import inventory_loader

    return sys.modules[type(inventory_loader.get(PLUGIN)).__module__]


def sample_text():
    for path, opener in ((SAMPLE, open), (SAMPLE + ".gz", gzip.open)):
        if os.path.exists(path):
            with opener(path, "rt") as handle:
                return handle.read()
    pytest.skip("Debian's cedar-backup3 sample %s is not installed" % SAMPLE)


# ---------------------------------------------------------------------------
# The oracle: Debian's CedarBackup3.config
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cb3config():
    if DIST_PACKAGES not in sys.path:
        sys.path.append(DIST_PACKAGES)
    try:
        return importlib.import_module("CedarBackup3.config")
    except ImportError:
        pytest.skip("CedarBackup3 (Debian's cedar-backup3) is not installed")


def cback3_inventory(cb3config, path, validate=True):
    """What cback3 reads from ``path``, as ``(master vars, {peer name: peer vars})``.

    The peers are those ``cback3 stage`` stages (CedarBackup3.actions.stage: the stage section's
    when it has any, else the peers section's); a staged remote peer's managed settings (managed,
    managed actions, rsh and cback commands, and a managed peer's remote user) are those of the
    peers section's remote peer of its name, as cback3's managed actions read only the peers section.
    """
    conf = cb3config.Config(xmlPath=path, validate=validate)
    master = {}
    options = conf.options
    if options is not None:
        for attr, var in (("startingDay", "cback_starting_day"), ("workingDir", "cback_working_dir"),
                          ("backupUser", "cback_backup_user"), ("backupGroup", "cback_backup_group"),
                          ("rcpCommand", "cback_rcp_command"), ("rshCommand", "cback_rsh_command"),
                          ("cbackCommand", "cback_cback_command"), ("managedActions", "cback_managed_actions")):
            value = getattr(options, attr)
            if value is not None:
                master[var] = list(value) if attr == "managedActions" else value
    if conf.stage is not None:
        master["cback_staging_dir"] = conf.stage.targetDir
    section = conf.stage if conf.stage is not None and conf.stage.hasPeers() else conf.peers
    peers = {}
    for peer in section.localPeers or []:
        peers[peer.name] = dict(cback_peer_type="local", cback_collect_dir=peer.collectDir)
        if peer.ignoreFailureMode is not None:
            peers[peer.name]["cback_ignore_failure_mode"] = peer.ignoreFailureMode
    listed = dict((peer.name, peer) for peer in (conf.peers.remotePeers or [] if conf.peers is not None else []))
    for peer in section.remotePeers or []:
        entry = peer if section is conf.peers else listed.get(peer.name)
        values = dict(cback_peer_type="remote", cback_collect_dir=peer.collectDir, cback_managed=bool(entry and entry.managed))
        for owner, attr, var in ((peer, "ignoreFailureMode", "cback_ignore_failure_mode"),
                                 (entry if entry is not None and entry.managed else peer, "remoteUser", "cback_remote_user"),
                                 (peer, "rcpCommand", "cback_rcp_command"), (entry, "rshCommand", "cback_rsh_command"),
                                 (entry, "cbackCommand", "cback_cback_command"),
                                 (entry, "managedActions", "cback_managed_actions")):
            value = getattr(owner, attr, None)
            if value is not None:
                values[var] = list(value) if attr == "managedActions" else value
        peers[peer.name] = values
    return master, peers


def assert_matches_cback3(cb3config, conf_path, inventory, master="localhost", renamed=None, validate=True):
    """The inventory says what cback3 reads from ``conf_path`` (``renamed``: {peer name: inventory host})."""
    expected_master, expected_peers = cback3_inventory(cb3config, conf_path, validate)
    renamed = renamed or {}
    got_master = dict((key, value) for key, value in inventory.hostvars[master].items() if key.startswith("cback_"))
    assert got_master == expected_master
    assert dict((key, value) for key, value in inventory.groupvars["cback_master"].items() if key.startswith("cback_")) == got_master
    got_peers = {}
    for host in inventory.groups["cback_peers"]:
        values = dict(inventory.hostvars[host])
        name = values.pop("cback_peer_name", host)
        assert renamed.get(name, name) == host
        got_peers[name] = values
    assert got_peers == expected_peers


# ---------------------------------------------------------------------------
# Pool configurations
# ---------------------------------------------------------------------------

OPTIONS = """
  <options>
    <starting_day>sunday</starting_day>
    <working_dir>/var/backups/cback/tmp</working_dir>
    <backup_user>backup</backup_user>
    <backup_group>backup</backup_group>
    <rcp_command>/usr/bin/scp -F /etc/cback/ssh_config -B -q -C</rcp_command>
    <rsh_command>/usr/bin/ssh -F /etc/cback/ssh_config</rsh_command>
    <cback_command>/usr/bin/cback3</cback_command>
    <managed_actions>collect, purge</managed_actions>
    <override><command>cdrecord</command><abs_path>/opt/local/bin/cdrecord</abs_path></override>
    <pre_action_hook><action>stage</action><command>echo staging</command></pre_action_hook>
  </options>
"""

# Local and remote peers in the stage section, every element a peer can have; the managed ones
# also in the peers section, where cback3's managed actions find them.
POOL = """<?xml version="1.0"?>
<cb_config>
  <reference><author>tests</author><revision>1</revision><description>pool</description></reference>
%s
  <collect><collect_dir>/var/backups/cback/collect</collect_dir><collect_mode>daily</collect_mode>
    <archive_mode>tar</archive_mode><ignore_file>.cbignore</ignore_file><dir><abs_path>/etc</abs_path></dir></collect>
  <stage>
    <staging_dir>/var/backups/cback/stage</staging_dir>
    <peer>
      <name>master</name>
      <type>local</type>
      <collect_dir>/var/backups/cback/collect</collect_dir>
    </peer>
    <peer>
      <name>scratch</name>
      <type>local</type>
      <collect_dir>/srv/scratch/collect</collect_dir>
      <ignore_failures>all</ignore_failures>
    </peer>
    <peer>
      <name>web1</name>
      <type>remote</type>
      <collect_dir>/var/backups/cback/collect</collect_dir>
    </peer>
    <peer>
      <name>db1.example.com</name>
      <type>remote</type>
      <collect_dir>/srv/backup/collect</collect_dir>
      <backup_user>cback</backup_user>
      <rcp_command>/usr/bin/scp -P 2222 -B -q</rcp_command>
      <rsh_command>/usr/bin/ssh -p 2222</rsh_command>
      <cback_command>/usr/local/bin/cback3 --config /etc/cback3-db.conf</cback_command>
      <managed>Y</managed>
      <managed_actions>collect,store, </managed_actions>
      <ignore_failures>weekly</ignore_failures>
    </peer>
    <peer>
      <name>10.0.0.7</name>
      <type>remote</type>
      <collect_dir>/backup/collect</collect_dir>
      <managed>N</managed>
      <ignore_failures>daily</ignore_failures>
    </peer>
    <peer>
      <name>mail1</name>
      <type>remote</type>
      <collect_dir>/var/backups/cback/collect</collect_dir>
      <managed>y</managed>
      <ignore_failures>none</ignore_failures>
    </peer>
  </stage>
  <peers>
    <peer>
      <name>db1.example.com</name>
      <type>remote</type>
      <collect_dir>/srv/backup/collect</collect_dir>
      <backup_user>cback</backup_user>
      <rcp_command>/usr/bin/scp -P 2222 -B -q</rcp_command>
      <rsh_command>/usr/bin/ssh -p 2222</rsh_command>
      <cback_command>/usr/local/bin/cback3 --config /etc/cback3-db.conf</cback_command>
      <managed>Y</managed>
      <managed_actions>collect,store, </managed_actions>
      <ignore_failures>weekly</ignore_failures>
    </peer>
    <peer><name>mail1</name><type>remote</type><collect_dir>/var/backups/cback/collect</collect_dir>
      <managed>y</managed><ignore_failures>none</ignore_failures></peer>
  </peers>
  <purge><dir><abs_path>/var/backups/cback/stage</abs_path><retain_days>7</retain_days></dir></purge>
</cb_config>
""" % OPTIONS

POOL_MASTER = dict(
    ansible_connection="local",
    cback_starting_day="sunday",
    cback_working_dir="/var/backups/cback/tmp",
    cback_backup_user="backup",
    cback_backup_group="backup",
    cback_rcp_command="/usr/bin/scp -F /etc/cback/ssh_config -B -q -C",
    cback_rsh_command="/usr/bin/ssh -F /etc/cback/ssh_config",
    cback_cback_command="/usr/bin/cback3",
    cback_managed_actions=["collect", "purge"],
    cback_staging_dir="/var/backups/cback/stage",
)

POOL_PEERS = {
    "master": dict(cback_peer_type="local", cback_collect_dir="/var/backups/cback/collect"),
    "scratch": dict(cback_peer_type="local", cback_collect_dir="/srv/scratch/collect", cback_ignore_failure_mode="all"),
    "web1": dict(cback_peer_type="remote", cback_collect_dir="/var/backups/cback/collect", cback_managed=False),
    "db1.example.com": dict(
        cback_peer_type="remote",
        cback_collect_dir="/srv/backup/collect",
        cback_remote_user="cback",
        cback_rcp_command="/usr/bin/scp -P 2222 -B -q",
        cback_rsh_command="/usr/bin/ssh -p 2222",
        cback_cback_command="/usr/local/bin/cback3 --config /etc/cback3-db.conf",
        cback_managed=True,
        cback_managed_actions=["collect", "store"],
        cback_ignore_failure_mode="weekly",
    ),
    "10.0.0.7": dict(cback_peer_type="remote", cback_collect_dir="/backup/collect", cback_managed=False,
                     cback_ignore_failure_mode="daily"),
    "mail1": dict(cback_peer_type="remote", cback_collect_dir="/var/backups/cback/collect", cback_managed=True,
                  cback_ignore_failure_mode="none"),
}

# The peers section holds the pool; the stage section only its staging directory.
PEERS_SECTION = """<?xml version="1.0"?>
<cb_config>
%s
  <peers>
    <peer><name>app1</name><type>remote</type><collect_dir>/var/backups/cback/collect</collect_dir>
      <managed>Y</managed><managed_actions>collect</managed_actions></peer>
    <peer><name>files</name><type>local</type><collect_dir>/srv/files/collect</collect_dir>
      <ignore_failures>daily</ignore_failures></peer>
    <peer><name>app2</name><type>remote</type><collect_dir>/var/backups/cback/collect</collect_dir>
      <backup_user>root</backup_user><ignore_failures>all</ignore_failures></peer>
  </peers>
  <stage>
    <staging_dir>/var/backups/cback/stage</staging_dir>
  </stage>
</cb_config>
""" % OPTIONS

# Both sections list peers: cback3 stages the stage section's; its managed actions use the
# peers section's (app1 managed there; app3 managed, but not staged).
BOTH_SECTIONS = """<?xml version="1.0"?>
<cb_config>
%s
  <peers>
    <peer><name>app1</name><type>remote</type><collect_dir>/peers/app1</collect_dir>
      <managed>Y</managed><managed_actions>collect,purge</managed_actions>
      <cback_command>/opt/cback/bin/cback3</cback_command></peer>
    <peer><name>app2</name><type>remote</type><collect_dir>/peers/app2</collect_dir><managed>N</managed></peer>
    <peer><name>app3</name><type>remote</type><collect_dir>/peers/app3</collect_dir><managed>Y</managed></peer>
    <peer><name>files</name><type>local</type><collect_dir>/peers/files</collect_dir></peer>
  </peers>
  <stage>
    <staging_dir>/var/backups/cback/stage</staging_dir>
    <peer><name>app1</name><type>remote</type><collect_dir>/stage/app1</collect_dir>
      <rsh_command>/usr/bin/ssh -4</rsh_command></peer>
    <peer><name>app2</name><type>remote</type><collect_dir>/stage/app2</collect_dir>
      <managed>Y</managed><managed_actions>collect</managed_actions></peer>
    <peer><name>app4</name><type>remote</type><collect_dir>/stage/app4</collect_dir>
      <managed>Y</managed></peer>
  </stage>
</cb_config>
""" % OPTIONS


@pytest.fixture
def pool_source(tmp_path):
    return source(tmp_path, config(tmp_path, POOL))


# ---------------------------------------------------------------------------
# Debian's sample cback3.conf
# ---------------------------------------------------------------------------


def test_debian_sample(tmp_path, cb3config):
    conf = config(tmp_path, sample_text(), name="cback3.conf.sample")
    inventory = Inventory(source(tmp_path, conf, master_vars=dict(ansible_python_interpreter="/usr/bin/python3")))
    assert inventory.groups == {
        "all": ["debian", "localhost"],
        "ungrouped": [],
        "cback_master": ["localhost"],
        "cback_peers": ["debian"],
    }
    assert inventory.hostvars == {
        "localhost": dict(
            ansible_connection="local",
            ansible_python_interpreter="/usr/bin/python3",
            cback_starting_day="tuesday",
            cback_working_dir="/opt/backup/tmp",
            cback_backup_user="backup",
            cback_backup_group="group",
            cback_rcp_command="/usr/bin/scp -B",
            cback_staging_dir="/opt/backup/stage",
        ),
        "debian": dict(cback_peer_type="local", cback_collect_dir="/opt/backup/collect"),
    }
    assert_matches_cback3(cb3config, conf, inventory)


def test_debian_sample_with_the_master_named_like_its_local_peer(tmp_path, cb3config):
    conf = config(tmp_path, sample_text(), name="cback3.conf.sample")
    inventory = Inventory(source(tmp_path, conf, master="debian"))
    assert inventory.groups["cback_master"] == ["debian"]
    assert inventory.groups["cback_peers"] == ["debian-self"]
    assert inventory.hostvars["debian-self"] == dict(cback_peer_type="local", cback_peer_name="debian",
                                                     cback_collect_dir="/opt/backup/collect")
    assert inventory.hostvars["debian"]["cback_staging_dir"] == "/opt/backup/stage"
    assert_matches_cback3(cb3config, conf, inventory, master="debian", renamed={"debian": "debian-self"})


# ---------------------------------------------------------------------------
# Pool configurations
# ---------------------------------------------------------------------------


def test_pool_local_and_remote_peers(tmp_path, pool_source, cb3config):
    inventory = Inventory(pool_source)
    assert inventory.groups["cback_master"] == ["localhost"]
    assert inventory.groups["cback_peers"] == sorted(POOL_PEERS)
    assert inventory.hostvars["localhost"] == POOL_MASTER
    for name, expected in POOL_PEERS.items():
        assert inventory.hostvars[name] == expected, name
    assert_matches_cback3(cb3config, os.path.join(str(tmp_path), "cback3.conf"), inventory)


def test_peers_keep_the_order_of_the_file(pool_source):
    inventory = Inventory(pool_source)
    group = inventory.manager.groups["cback_peers"]
    assert [host.name for host in group.get_hosts()] == ["master", "scratch", "web1", "db1.example.com", "10.0.0.7", "mail1"]


def test_peers_have_no_connection_variables(pool_source):
    inventory = Inventory(pool_source)
    for host in inventory.groups["cback_peers"]:
        assert [key for key in inventory.hostvars[host] if key.startswith("ansible_")] == [], host


def test_peers_section_when_the_stage_section_lists_none(tmp_path, cb3config):
    conf = config(tmp_path, PEERS_SECTION)
    inventory = Inventory(source(tmp_path, conf))
    assert inventory.groups["cback_peers"] == ["app1", "app2", "files"]
    assert inventory.hostvars["app1"] == dict(cback_peer_type="remote", cback_collect_dir="/var/backups/cback/collect",
                                              cback_managed=True, cback_managed_actions=["collect"])
    assert inventory.hostvars["files"] == dict(cback_peer_type="local", cback_collect_dir="/srv/files/collect",
                                               cback_ignore_failure_mode="daily")
    assert inventory.hostvars["app2"] == dict(cback_peer_type="remote", cback_collect_dir="/var/backups/cback/collect",
                                              cback_remote_user="root", cback_ignore_failure_mode="all", cback_managed=False)
    assert inventory.hostvars["localhost"]["cback_staging_dir"] == "/var/backups/cback/stage"
    assert_matches_cback3(cb3config, conf, inventory)


def test_stage_section_wins_over_peers_section(tmp_path, cb3config, monkeypatch):
    warnings = []
    monkeypatch.setattr(plugin_module().display, "warning", lambda message, *args, **kwargs: warnings.append(message))
    conf = config(tmp_path, BOTH_SECTIONS)
    inventory = Inventory(source(tmp_path, conf))
    # Staged: the stage section's peers, with their own collect dirs, as cback3 stage does.
    assert inventory.groups["cback_peers"] == ["app1", "app2", "app4"]
    # Managed settings come from the peers section's entry of the same name only: the stage
    # section's managed, managed_actions, rsh_command and cback_command are not used by cback3.
    assert inventory.hostvars["app1"] == dict(
        cback_peer_type="remote", cback_collect_dir="/stage/app1",
        cback_cback_command="/opt/cback/bin/cback3", cback_managed=True, cback_managed_actions=["collect", "purge"])
    assert inventory.hostvars["app2"] == dict(cback_peer_type="remote", cback_collect_dir="/stage/app2", cback_managed=False)
    # Not in the peers section: not managed, whatever its stage entry says.
    assert inventory.hostvars["app4"] == dict(cback_peer_type="remote", cback_collect_dir="/stage/app4", cback_managed=False)
    assert_matches_cback3(cb3config, conf, inventory)
    assert all(warning.startswith(conf + ": ") for warning in warnings), warnings
    found = [warning[len(conf) + 2:] for warning in warnings]
    assert found == [
        "stage/peer[1] (app1) and peers/peer[1] disagree: collect_dir '/stage/app1' and '/peers/app1' (cback3 stages with the "
        "first, and runs managed actions with the second; the inventory takes the remote user of the second, as this peer is "
        "managed)",
        "stage/peer[1] (app1): rsh_command not used: cback3 takes managed settings from the peers section only, here peers/peer[1]",
        "stage/peer[2] (app2) and peers/peer[2] disagree: collect_dir '/stage/app2' and '/peers/app2' (cback3 stages with the "
        "first, and runs managed actions with the second)",
        "stage/peer[2] (app2): managed, managed_actions not used: cback3 takes managed settings from the peers section only, "
        "here peers/peer[2]",
        "stage/peer[3] (app4): managed not used: cback3 takes managed settings from the peers section only, which does not "
        "list this peer",
        "the managed peers app3 of the peers section are not remote peers of the stage section: cback3 runs managed actions on "
        "them, but the inventory does not (every peer of the inventory is staged, as the stage section says)",
    ]


def test_elements_cback3_does_not_read_are_ignored(tmp_path, cb3config):
    conf = config(tmp_path, """<cb_config>
  <options><starting_day>monday</starting_day><working_dir>/tmp</working_dir><backup_user>backup</backup_user>
    <backup_group>backup</backup_group><rcp_command>/usr/bin/scp -B</rcp_command>
    <rsh_command></rsh_command><unknown>x</unknown></options>
  <stage><staging_dir>/stage</staging_dir>
    <peer><name>self</name><type>local</type><collect_dir>/collect</collect_dir>
      <backup_user>root</backup_user><managed>Y</managed><managed_actions>collect</managed_actions>
      <rcp_command>/bin/false</rcp_command><remote_user>x</remote_user></peer>
  </stage>
</cb_config>""")
    inventory = Inventory(source(tmp_path, conf))
    # A local peer has only name, type, collect_dir and ignore_failures; an empty element is absent.
    assert inventory.hostvars["self"] == dict(cback_peer_type="local", cback_collect_dir="/collect")
    assert "cback_rsh_command" not in inventory.hostvars["localhost"]
    assert_matches_cback3(cb3config, conf, inventory)


@pytest.mark.parametrize("mode", ["none", "all", "daily", "weekly"])
@pytest.mark.parametrize("peer_type", ["local", "remote"])
def test_ignore_failure_modes(tmp_path, mode, peer_type, cb3config):
    conf = config(tmp_path, """<cb_config>
  <options><starting_day>monday</starting_day><working_dir>/tmp</working_dir><backup_user>backup</backup_user>
    <backup_group>backup</backup_group><rcp_command>/usr/bin/scp -B</rcp_command></options>
  <stage><staging_dir>/stage</staging_dir>
    <peer><name>p-%s</name><type>%s</type><collect_dir>/collect</collect_dir><ignore_failures>%s</ignore_failures></peer>
    <peer><name>unset</name><type>%s</type><collect_dir>/collect</collect_dir></peer>
  </stage>
</cb_config>""" % (mode, peer_type, mode, peer_type))
    inventory = Inventory(source(tmp_path, conf))
    assert inventory.hostvars["p-" + mode]["cback_ignore_failure_mode"] == mode
    assert "cback_ignore_failure_mode" not in inventory.hostvars["unset"]
    assert_matches_cback3(cb3config, conf, inventory)


MINIMAL_OPTIONS = ("<options><starting_day>monday</starting_day><working_dir>/tmp</working_dir><backup_user>backup</backup_user>"
                   "<backup_group>backup</backup_group><rcp_command>/usr/bin/scp -B</rcp_command></options>")


def test_minimal_config(tmp_path, cb3config):
    """The options cback3 requires, a stage section with one peer."""
    conf = config(tmp_path, "<cb_config>%s<stage><staging_dir>/stage</staging_dir><peer><name>a</name><type>local</type>"
                            "<collect_dir>/c</collect_dir></peer></stage></cb_config>" % MINIMAL_OPTIONS)
    inventory = Inventory(source(tmp_path, conf))
    assert inventory.hostvars == {
        "localhost": dict(ansible_connection="local", cback_staging_dir="/stage", cback_starting_day="monday",
                          cback_working_dir="/tmp", cback_backup_user="backup", cback_backup_group="backup",
                          cback_rcp_command="/usr/bin/scp -B"),
        "a": dict(cback_peer_type="local", cback_collect_dir="/c"),
    }
    assert_matches_cback3(cb3config, conf, inventory)


def test_peers_section_without_stage_section(tmp_path, cb3config):
    """A configuration for managed actions only: no staging directory, the peers of the peers section."""
    conf = config(tmp_path, "<cb_config>%s<peers><peer><name>a</name><type>remote</type><collect_dir>/c</collect_dir>"
                            "<managed>Y</managed></peer></peers><collect><collect_dir>/c</collect_dir></collect></cb_config>"
                  % GOOD_OPTIONS)
    inventory = Inventory(source(tmp_path, conf))
    assert "cback_staging_dir" not in inventory.hostvars["localhost"]
    assert inventory.hostvars["a"] == dict(cback_peer_type="remote", cback_collect_dir="/c", cback_managed=True)
    assert_matches_cback3(cb3config, conf, inventory)


# ---------------------------------------------------------------------------
# The source file: options, names, verify_file
# ---------------------------------------------------------------------------


def test_master_name_and_variables(tmp_path):
    conf = config(tmp_path, POOL)
    inventory = Inventory(source(tmp_path, conf, master="backup1.example.com", master_vars=dict(
        ansible_connection="ssh", ansible_python_interpreter="/usr/bin/python3", cback_stage_parallel=16,
        cback_working_dir="/override")))
    assert inventory.groups["cback_master"] == ["backup1.example.com"]
    assert "localhost" not in inventory.hostvars
    expected = dict(POOL_MASTER, ansible_connection="ssh", ansible_python_interpreter="/usr/bin/python3",
                    cback_stage_parallel=16, cback_working_dir="/override")
    assert inventory.hostvars["backup1.example.com"] == expected


def test_peer_named_like_the_master(tmp_path):
    conf = config(tmp_path, POOL)
    inventory = Inventory(source(tmp_path, conf, master="master"))
    assert inventory.groups["cback_master"] == ["master"]
    assert inventory.hostvars["master-self"] == dict(POOL_PEERS["master"], cback_peer_name="master")
    assert inventory.hostvars["master"]["cback_staging_dir"] == "/var/backups/cback/stage"
    assert "cback_peer_type" not in inventory.hostvars["master"]


def test_renamed_peer_avoids_other_peer_names():
    module = plugin_module()
    peers = [dict(name="m"), dict(name="m-self"), dict(name="m-self-2")]
    assert module.peer_hosts(peers, "m") == [("m-self-3", peers[0]), ("m-self", peers[1]), ("m-self-2", peers[2])]


def test_relative_path_is_relative_to_the_source(tmp_path, monkeypatch):
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    config(conf_dir, POOL, name="master.conf")
    path = source(conf_dir, "master.conf")
    monkeypatch.chdir(str(tmp_path))
    assert Inventory(path).groups["cback_peers"] == sorted(POOL_PEERS)


def test_default_path_is_etc_cback3_conf(tmp_path):
    path = write(tmp_path / "default.cback3_conf.yml", "plugin: %s\n" % PLUGIN)
    from ansible.plugins.loader import inventory_loader

    from ansible.parsing.dataloader import DataLoader

    plugin = inventory_loader.get(PLUGIN)
    plugin.loader = DataLoader()
    plugin._read_config_data(path)
    assert plugin.get_option("path") == "/etc/cback3.conf"
    assert plugin.get_option("master") == "localhost"
    assert plugin.get_option("master_vars") == {}


@pytest.mark.parametrize("name, accepted", [
    ("pool.cback3_conf.yml", True),
    ("cback3_conf.yaml", True),
    ("site-cback3_conf.yaml", True),
    ("pool.yml", False),
    ("cback3.conf", False),
    ("pool.cback3_conf.yml.bak", False),
    ("pool.cback3-conf.yml", False),
])
def test_verify_file(tmp_path, name, accepted):
    from ansible.plugins.loader import inventory_loader

    path = write(tmp_path / name, "plugin: %s\n" % PLUGIN)
    assert inventory_loader.get(PLUGIN).verify_file(path) is accepted
    assert inventory_loader.get(PLUGIN).verify_file(str(tmp_path / ("missing-" + name))) is False


def test_keyed_groups_and_compose(tmp_path, pool_source):
    conf = os.path.join(str(tmp_path), "cback3.conf")
    path = source(tmp_path, conf, name="keyed.cback3_conf.yml",
                  keyed_groups=[dict(key="cback_peer_type", prefix="cback_peer")],
                  groups=dict(cback_managed_peers="cback_managed | default(false)"),
                  compose=dict(collect_parent="cback_collect_dir | dirname"))
    inventory = Inventory(path)
    assert inventory.groups["cback_peer_local"] == ["master", "scratch"]
    assert inventory.groups["cback_peer_remote"] == ["10.0.0.7", "db1.example.com", "mail1", "web1"]
    assert inventory.groups["cback_managed_peers"] == ["db1.example.com", "mail1"]
    assert inventory.hostvars["web1"]["collect_parent"] == "/var/backups/cback"


def test_values_are_not_templated(tmp_path):
    import ansible.template
    from ansible.template import Templar

    trusted = getattr(ansible.template, "trust_as_template", lambda text: text)  # ansible-core >= 2.19

    options = MINIMAL_OPTIONS.replace("/usr/bin/scp -B", "/usr/bin/scp {{ 6 * 7 }}")
    conf = config(tmp_path, "<cb_config>" + options +
                            "<stage><staging_dir>/stage/{{ 6 * 7 }}</staging_dir><peer><name>a</name><type>local</type>"
                            "<collect_dir>/c/{{ lookup('env', 'HOME') }}</collect_dir></peer></stage></cb_config>")
    inventory = Inventory(source(tmp_path, conf))
    master = inventory.manager.groups["cback_master"].get_vars()
    peer = inventory.manager.get_host("a").vars
    templar = Templar(loader=inventory.loader, variables=dict(master, **peer))
    assert templar.template(trusted("{{ 6 * 7 }}")) in (42, "42")  # the templar does template
    assert templar.template(trusted("{{ cback_staging_dir }}")) == "/stage/{{ 6 * 7 }}"
    assert templar.template(trusted("{{ cback_rcp_command }}")) == "/usr/bin/scp {{ 6 * 7 }}"
    assert templar.template(trusted("{{ cback_collect_dir }}")) == "/c/{{ lookup('env', 'HOME') }}"


# ---------------------------------------------------------------------------
# Failures: the file and the element are named
# ---------------------------------------------------------------------------

GOOD_OPTIONS = ("<options><starting_day>monday</starting_day><working_dir>/tmp</working_dir><backup_user>backup</backup_user>"
                "<backup_group>backup</backup_group><rcp_command>/usr/bin/scp -B</rcp_command>"
                "<rsh_command>/usr/bin/ssh</rsh_command><cback_command>/usr/bin/cback3</cback_command>"
                "<managed_actions>collect</managed_actions></options>")
LOCAL = "<peer><name>l1</name><type>local</type><collect_dir>/c/l1</collect_dir></peer>"
REMOTE = "<peer><name>r1</name><type>remote</type><collect_dir>/c/r1</collect_dir></peer>"


def stage_conf(*peers, **kwargs):
    staging = kwargs.get("staging", "<staging_dir>/stage</staging_dir>")
    options = kwargs.get("options", GOOD_OPTIONS)
    extra = kwargs.get("extra", "")
    return "<cb_config>%s<stage>%s%s</stage>%s</cb_config>" % (options, staging, "".join(peers), extra)


# (id, cback3.conf text, message after "<path>: ", whether cback3 rejects the file too)
FAILURES = [
    ("malformed", "<cb_config><stage><staging_dir>/s</stage></cb_config>",
     re.compile(r"malformed XML: mismatched tag: line 1, column \d+$"), True),
    ("not-xml", "staging_dir = /s\n", re.compile(r"malformed XML: syntax error: line 1, column \d+$"), True),
    ("empty-file", "", re.compile(r"malformed XML: no element found: line 1, column \d+$"), True),
    ("truncated", stage_conf(LOCAL)[:-5], re.compile(r"malformed XML: unclosed token: line 1, column \d+$"), True),
    ("root", "<config><stage><staging_dir>/s</staging_dir>%s</stage></config>" % LOCAL,
     "the root element is config, not cb_config", True),
    ("no-staging-dir", stage_conf(LOCAL, staging=""), "stage: staging_dir is required", True),
    ("empty-staging-dir", stage_conf(LOCAL, staging="<staging_dir></staging_dir>"), "stage: staging_dir is required", True),
    ("relative-staging-dir", stage_conf(LOCAL, staging="<staging_dir>stage</staging_dir>"),
     "stage: staging_dir must be an absolute path, not 'stage'", True),
    ("remote-no-name", stage_conf(LOCAL, "<peer><type>remote</type><collect_dir>/c</collect_dir></peer>"),
     "stage/peer[2]: name is required", True),
    ("local-no-name", stage_conf("<peer><type>local</type><collect_dir>/c</collect_dir></peer>"),
     "stage/peer[1]: name is required", True),
    ("remote-no-collect-dir", stage_conf(LOCAL, "<peer><name>r2</name><type>remote</type></peer>"),
     "stage/peer[2]: collect_dir is required", True),
    ("local-no-collect-dir", stage_conf(REMOTE, LOCAL, "<peer><name>l2</name><type>local</type></peer>"),
     "stage/peer[3]: collect_dir is required", True),
    ("relative-collect-dir", stage_conf("<peer><name>r2</name><type>remote</type><collect_dir>c</collect_dir></peer>"),
     "stage/peer[1]: collect_dir must be an absolute path, not 'c'", True),
    # cback3 skips a peer without a valid type: without another peer, there is none.
    ("only-peer-bad-type", stage_conf("<peer><name>x</name><type>Remote</type><collect_dir>/c</collect_dir></peer>"),
     "stage: at least one peer of type local or remote is required, here or in a peers section", True),
    ("bad-ignore-failures", stage_conf(LOCAL, "<peer><name>x</name><type>local</type><collect_dir>/c</collect_dir>"
                                              "<ignore_failures>sometimes</ignore_failures></peer>"),
     "stage/peer[2]: ignore_failures must be one of none, all, daily, weekly, not 'sometimes'", True),
    ("bad-managed", stage_conf("<peer><name>x</name><type>remote</type><collect_dir>/c</collect_dir>"
                               "<managed>true</managed></peer>"),
     "stage/peer[1]: managed must be Y or N, not 'true'", True),
    ("bad-peer-action", stage_conf("<peer><name>x</name><type>remote</type><collect_dir>/c</collect_dir>"
                                   "<managed>Y</managed><managed_actions>collect, rm -rf</managed_actions></peer>"),
     "stage/peer[1]: managed_actions: 'rm -rf' is not an action name (lowercase letters and digits)", True),
    ("duplicate-name", stage_conf(LOCAL, REMOTE, "<peer><name>l1</name><type>remote</type><collect_dir>/c</collect_dir></peer>"),
     "stage/peer[3]: name 'l1' is also the name of stage/peer[1]", True),
    ("stage-without-peers", stage_conf(), "stage: at least one peer of type local or remote is required, here or in a peers "
     "section", True),
    ("empty-peers-section", stage_conf(LOCAL, extra="<peers></peers>"), "peers: at least one peer of type local or remote is "
     "required", True),
    # cback3 checks the peers section even when the stage section lists the peers it stages.
    ("peers-section-checked", stage_conf(LOCAL, extra="<peers>%s<peer><name>p</name><type>remote</type></peer></peers>" % REMOTE),
     "peers/peer[2]: collect_dir is required", True),
    ("no-sections", "<cb_config>%s</cb_config>" % GOOD_OPTIONS,
     "cb_config: at least one of the collect, stage, store, purge sections is required", True),
    ("peers-without-action-section", "<cb_config>%s<peers>%s</peers></cb_config>" % (GOOD_OPTIONS, LOCAL),
     "cb_config: at least one of the collect, stage, store, purge sections is required", True),
    ("no-options", stage_conf(LOCAL, options=""), "cb_config: the options section is required", True),
    ("options-without-starting-day", stage_conf(LOCAL, options=GOOD_OPTIONS.replace("<starting_day>monday</starting_day>", "")),
     "options: starting_day is required", True),
    ("options-without-working-dir", stage_conf(LOCAL, options=GOOD_OPTIONS.replace("<working_dir>/tmp</working_dir>", "")),
     "options: working_dir is required", True),
    ("options-without-backup-user", stage_conf(REMOTE, options=GOOD_OPTIONS.replace("<backup_user>backup</backup_user>", "")),
     "options: backup_user is required", True),
    ("options-without-backup-group", stage_conf(LOCAL, options=GOOD_OPTIONS.replace("<backup_group>backup</backup_group>", "")),
     "options: backup_group is required", True),
    ("options-without-rcp-command", stage_conf(LOCAL, options=GOOD_OPTIONS.replace("<rcp_command>/usr/bin/scp -B</rcp_command>", "")),
     "options: rcp_command is required", True),
    ("relative-override", stage_conf(LOCAL, options=GOOD_OPTIONS.replace(
        "</options>", "<override><command>cdrecord</command><abs_path>bin/cdrecord</abs_path></override></options>")),
     "options/override[1]: abs_path must be an absolute path, not 'bin/cdrecord'", True),
    ("bad-hook-action", stage_conf(LOCAL, options=GOOD_OPTIONS.replace(
        "</options>", "<post_action_hook><action>Stage</action><command>true</command></post_action_hook></options>")),
     "options/post_action_hook[1]: action: 'Stage' is not an action name (lowercase letters and digits)", True),
    ("managed-without-rsh", stage_conf(LOCAL, extra="<peers><peer><name>m</name><type>remote</type><collect_dir>/c</collect_dir>"
                                                    "<managed>Y</managed></peer></peers>",
                                       options=GOOD_OPTIONS.replace("<rsh_command>/usr/bin/ssh</rsh_command>", "")),
     "peers/peer[1]: rsh_command is required: neither this peer nor the options section sets it", True),
    ("managed-without-cback-command", stage_conf("<peer><name>m</name><type>remote</type><collect_dir>/c</collect_dir>"
                                                 "<managed>Y</managed></peer>",
                                                 options=GOOD_OPTIONS.replace("<cback_command>/usr/bin/cback3</cback_command>", "")),
     "stage/peer[1]: cback_command is required: neither this peer nor the options section sets it", True),
    ("managed-without-actions", stage_conf("<peer><name>m</name><type>remote</type><collect_dir>/c</collect_dir>"
                                           "<managed>Y</managed><managed_actions> , </managed_actions></peer>",
                                           options=GOOD_OPTIONS.replace("<managed_actions>collect</managed_actions>", "")),
     "stage/peer[1]: managed_actions is required for a managed peer: neither this peer nor the options section lists an action",
     True),
    ("padded-collect-dir", stage_conf("<peer><name>p</name><type>local</type><collect_dir> /c</collect_dir></peer>"),
     "stage/peer[1]: collect_dir must be an absolute path, not ' /c'", True),
    ("bad-starting-day", stage_conf(LOCAL, options="<options><starting_day>Monday</starting_day></options>"),
     "options: starting_day must be an English weekday in lowercase (monday, tuesday, wednesday, thursday, friday, "
     "saturday, sunday), not 'Monday'", True),
    ("relative-working-dir", stage_conf(LOCAL, options="<options><working_dir>tmp</working_dir></options>"),
     "options: working_dir must be an absolute path, not 'tmp'", True),
    ("bad-option-action", stage_conf(LOCAL, options="<options><managed_actions>collect,Store</managed_actions></options>"),
     "options: managed_actions: 'Store' is not an action name (lowercase letters and digits)", True),
]


@pytest.mark.parametrize("text, message, cback3_rejects", [case[1:] for case in FAILURES], ids=[case[0] for case in FAILURES])
def test_failure_names_the_file_and_the_element(tmp_path, text, message, cback3_rejects, cb3config):
    conf = config(tmp_path, text)
    error = parse_error(source(tmp_path, conf))
    if hasattr(message, "match"):
        assert error.startswith(conf + ": ") and message.match(error[len(conf) + 2:]), error
    else:
        assert error == "%s: %s" % (conf, message)
    if cback3_rejects:
        with pytest.raises(ValueError):
            cb3config.Config(xmlPath=conf, validate=True)


def test_missing_file(tmp_path):
    conf = os.path.join(str(tmp_path), "absent.conf")
    assert parse_error(source(tmp_path, conf)) == "%s: cannot read the cback3.conf: No such file or directory" % conf


def test_unreadable_file_is_a_directory(tmp_path):
    conf = tmp_path / "dir.conf"
    conf.mkdir()
    assert parse_error(source(tmp_path, str(conf))) == "%s: cannot read the cback3.conf: Is a directory" % conf


def test_bad_source_options(tmp_path):
    conf = config(tmp_path, POOL)
    assert parse_error(source(tmp_path, conf, master="")) == "%s: master must be a non-empty inventory name" % os.path.join(
        str(tmp_path), "pool.cback3_conf.yml")


def test_a_failed_source_yields_no_inventory(tmp_path):
    """Through InventoryManager (as ansible-playbook), a bad cback3.conf gives no cback groups (and a warning)."""
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader

    conf = config(tmp_path, stage_conf(LOCAL, "<peer><name>r2</name><type>remote</type></peer>"))
    manager = InventoryManager(loader=DataLoader(), sources=[source(tmp_path, conf)])
    assert "cback_master" not in manager.groups and "cback_peers" not in manager.groups


# ---------------------------------------------------------------------------
# docs/inventory.md says what the plugin yields
# ---------------------------------------------------------------------------


def test_docs_example(tmp_path, cb3config):
    """The source file and output of "From an existing cback3.conf", for the XML of the example before it."""
    import yaml

    text = open(os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "docs", "inventory.md")).read()
    example = text.split("## Example: from `cback3.conf` to the inventory", 1)[1]
    section = text.split("## From an existing cback3.conf", 1)[1]
    xml = re.search(r"```xml\n(.*?)```", example, re.S).group(1)
    source_text, yielded = re.findall(r"```yaml\n(.*?)```", section, re.S)[:2]
    options = yaml.safe_load(source_text)
    assert options["path"] == "/etc/cback3.conf"
    options["path"] = config(tmp_path, xml)
    inventory = Inventory(write(tmp_path / "backup.cback3_conf.yml", json.dumps(options)))
    expected = yaml.safe_load(yielded)["all"]["children"]
    assert inventory.groups["cback_master"] == sorted(expected["cback_master"]["hosts"])
    assert inventory.groups["cback_peers"] == sorted(expected["cback_peers"]["hosts"])
    for group in ("cback_master", "cback_peers"):
        for host, values in expected[group]["hosts"].items():
            assert inventory.hostvars[host] == values, host
    assert_matches_cback3(cb3config, options["path"], inventory, master="backup-master",
                          renamed={"backup-master": "backup-master-self"})


# ---------------------------------------------------------------------------
# Warnings: what cback3 accepts but does not read
# ---------------------------------------------------------------------------


@pytest.fixture
def warnings(monkeypatch):
    found = []
    monkeypatch.setattr(plugin_module().display, "warning", lambda message, *args, **kwargs: found.append(message))
    return found


def warned(warnings, conf):
    assert all(warning.startswith(conf + ": ") for warning in warnings), warnings
    return [warning[len(conf) + 2:] for warning in warnings]


def test_no_warning_for_a_clean_file(pool_source, warnings):
    Inventory(pool_source)
    assert warnings == []


def test_unknown_elements_are_warned_about_with_a_suggestion(tmp_path, warnings, cb3config):
    options = GOOD_OPTIONS.replace("</options>", "<workdir>/tmp</workdir><colour>blue</colour></options>")
    conf = config(tmp_path, stage_conf(
        "<peer><name>r</name><type>remote</type><collect_dir>/c</collect_dir><remote_user>x</remote_user>"
        "<ignore_failure>all</ignore_failure><managed_action>collect</managed_action></peer>",
        options=options, staging="<stage_dir>/s</stage_dir><staging_dir>/s</staging_dir>",
        extra="<peers><peer><name>r</name><type>remote</type><colect_dir>/c</colect_dir><collect_dir>/c</collect_dir></peer>"
              "<host>x</host></peers>"))
    inventory = Inventory(source(tmp_path, conf))
    assert warned(warnings, conf) == [
        "options: unknown element workdir, which cback3 does not read (did you mean working_dir?)",
        "options: unknown element colour, which cback3 does not read",
        "peers: unknown element host, which cback3 does not read",
        "peers/peer[1]: unknown element colect_dir, which cback3 does not read (did you mean collect_dir?)",
        "stage: unknown element stage_dir, which cback3 does not read (did you mean staging_dir?)",
        "stage/peer[1]: unknown element remote_user, which cback3 does not read (did you mean backup_user?)",
        "stage/peer[1]: unknown element ignore_failure, which cback3 does not read (did you mean ignore_failures?)",
        "stage/peer[1]: unknown element managed_action, which cback3 does not read (did you mean managed_actions?)",
    ]
    assert inventory.hostvars["r"] == dict(cback_peer_type="remote", cback_collect_dir="/c", cback_managed=False)
    assert_matches_cback3(cb3config, conf, inventory)


def test_remote_elements_of_a_local_peer_are_warned_about(tmp_path, warnings, cb3config):
    conf = config(tmp_path, stage_conf("<peer><name>l</name><type>local</type><collect_dir>/c</collect_dir>"
                                       "<backup_user>root</backup_user><managed>Y</managed></peer>"))
    inventory = Inventory(source(tmp_path, conf))
    assert warned(warnings, conf) == [
        "stage/peer[1]: backup_user is not read: cback3 reads only name, type, collect_dir, ignore_failures of a local peer",
        "stage/peer[1]: managed is not read: cback3 reads only name, type, collect_dir, ignore_failures of a local peer",
    ]
    assert inventory.hostvars["l"] == dict(cback_peer_type="local", cback_collect_dir="/c")
    assert_matches_cback3(cb3config, conf, inventory)


def test_a_peer_without_a_valid_type_is_skipped_as_cback3_skips_it(tmp_path, warnings, cb3config):
    conf = config(tmp_path, stage_conf(LOCAL, "<peer><name>x</name><collect_dir>/c</collect_dir></peer>",
                                       "<peer><name>y</name><type> remote</type><collect_dir>/c</collect_dir></peer>"))
    inventory = Inventory(source(tmp_path, conf))
    assert inventory.groups["cback_peers"] == ["l1"]
    assert warned(warnings, conf) == [
        "stage/peer[2]: not a peer for cback3, which skips a peer whose type is not local or remote (it has no type)",
        "stage/peer[3]: not a peer for cback3, which skips a peer whose type is not local or remote (not ' remote')",
    ]
    assert_matches_cback3(cb3config, conf, inventory)


def test_a_file_without_peers_yields_the_master_only(tmp_path, warnings, cb3config):
    """A client's cback3.conf: cback3 accepts it; the inventory has no peer, and says so."""
    conf = config(tmp_path, "<cb_config>%s<collect><collect_dir>/c</collect_dir></collect></cb_config>" % GOOD_OPTIONS)
    inventory = Inventory(source(tmp_path, conf))
    assert inventory.groups["cback_master"] == ["localhost"] and inventory.groups["cback_peers"] == []
    assert warned(warnings, conf) == ["cb_config: neither a stage nor a peers section lists a peer: the inventory has no peer"]
    cb3config.Config(xmlPath=conf, validate=True)


def test_managed_peer_takes_its_remote_user_from_the_peers_section(tmp_path, warnings, cb3config):
    conf = config(tmp_path, stage_conf(
        "<peer><name>r</name><type>remote</type><collect_dir>/c</collect_dir><backup_user>stager</backup_user>"
        "<rcp_command>/usr/bin/scp -4</rcp_command></peer>",
        extra="<peers><peer><name>r</name><type>remote</type><collect_dir>/c</collect_dir><backup_user>manager</backup_user>"
              "<managed>Y</managed><rsh_command>/usr/bin/ssh -4</rsh_command></peer></peers>"))
    inventory = Inventory(source(tmp_path, conf))
    assert inventory.hostvars["r"] == dict(cback_peer_type="remote", cback_collect_dir="/c", cback_remote_user="manager",
                                           cback_rcp_command="/usr/bin/scp -4", cback_rsh_command="/usr/bin/ssh -4",
                                           cback_managed=True)
    assert warned(warnings, conf) == [
        "stage/peer[1] (r) and peers/peer[1] disagree: backup_user 'stager' and 'manager'; rcp_command '/usr/bin/scp -4' and "
        "'/usr/bin/scp -B' (cback3 stages with the first, and runs managed actions with the second; the inventory takes the "
        "remote user of the second, as this peer is managed)",
    ]
    assert_matches_cback3(cb3config, conf, inventory)


def test_a_local_stage_peer_is_not_managed_by_a_remote_entry(tmp_path, warnings, cb3config):
    conf = config(tmp_path, stage_conf(
        "<peer><name>p</name><type>local</type><collect_dir>/c</collect_dir></peer>",
        extra="<peers><peer><name>p</name><type>remote</type><collect_dir>/c</collect_dir><managed>Y</managed></peer></peers>"))
    inventory = Inventory(source(tmp_path, conf))
    assert inventory.hostvars["p"] == dict(cback_peer_type="local", cback_collect_dir="/c")
    assert warned(warnings, conf) == [
        "stage/peer[1] (p) and peers/peer[1] disagree: type 'local' and 'remote' (cback3 stages with the first, and runs "
        "managed actions with the second; the inventory does not mark a local peer managed)",
        "the managed peers p of the peers section are not remote peers of the stage section: cback3 runs managed actions on "
        "them, but the inventory does not (every peer of the inventory is staged, as the stage section says)",
    ]


def test_cback3_reads_the_first_text_of_an_element(tmp_path, cb3config):
    """As cback3's readString: the first element with text, its first text node, verbatim."""
    conf = config(tmp_path, stage_conf("<peer><name></name><name>p<!-- x -->q</name><type>local</type>"
                                       "<collect_dir><![CDATA[/cdata]]></collect_dir><collect_dir>/c</collect_dir></peer>"))
    inventory = Inventory(source(tmp_path, conf))
    assert inventory.groups["cback_peers"] == ["p"]
    assert inventory.hostvars["p"]["cback_collect_dir"] == "/c"
    assert_matches_cback3(cb3config, conf, inventory)


# ---------------------------------------------------------------------------
# Precedence: what the plugin sets is the master's group's or a peer's host variable
# ---------------------------------------------------------------------------


def test_run_wide_values_are_variables_of_the_master_group(tmp_path, pool_source):
    conf = os.path.join(str(tmp_path), "cback3.conf")
    inventory = Inventory(source(tmp_path, conf, name="vars.cback3_conf.yml", master_vars=dict(cback_verify=True)))
    assert inventory.own["localhost"] == {}
    assert inventory.groupvars["cback_master"] == dict(POOL_MASTER, cback_verify=True)
    assert inventory.own["web1"] == POOL_PEERS["web1"]
    assert inventory.groupvars["cback_peers"] == {}


def test_group_and_host_vars_files_beside_the_source_win(tmp_path, pool_source):
    """group_vars/cback_master.yml and host_vars/<host>.yml beside the source override the plugin's values."""
    from ansible.vars.manager import VariableManager

    (tmp_path / "group_vars").mkdir()
    (tmp_path / "host_vars").mkdir()
    write(tmp_path / "group_vars" / "cback_master.yml", "cback_staging_dir: /srv/stage\nansible_connection: ssh\n")
    write(tmp_path / "host_vars" / "web1.yml", "cback_collect_dir: /srv/web1/collect\n")
    inventory = Inventory(pool_source)
    manager = VariableManager(loader=inventory.loader, inventory=inventory.manager)
    master = manager.get_vars(host=inventory.manager.get_host("localhost"))
    peer = manager.get_vars(host=inventory.manager.get_host("web1"))
    assert master["cback_staging_dir"] == "/srv/stage" and master["ansible_connection"] == "ssh"
    assert master["cback_working_dir"] == POOL_MASTER["cback_working_dir"]
    assert peer["cback_collect_dir"] == "/srv/web1/collect" and peer["cback_peer_type"] == "remote"


# ---------------------------------------------------------------------------
# A fleet: one source per master, composed into one inventory
# ---------------------------------------------------------------------------


def fleet_conf(staging_dir, backup_user, *peers):
    options = GOOD_OPTIONS.replace("<backup_user>backup</backup_user>", "<backup_user>%s</backup_user>" % backup_user)
    return stage_conf(*peers, options=options, staging="<staging_dir>%s</staging_dir>" % staging_dir)


def fleet_peer(name, peer_type="remote"):
    return "<peer><name>%s</name><type>%s</type><collect_dir>/c/%s</collect_dir></peer>" % (name, peer_type, name)


def fleet_source(tmp_path, name, master, *peers, **options):
    """``<tmp>/sources/<name>.cback3_conf.yml`` reading ``<tmp>/confs/<name>.conf`` (staging dir /<name>/stage,
    backup user <name>-user), its master ``master``."""
    confs, sources = tmp_path / "confs", tmp_path / "sources"
    confs.mkdir(exist_ok=True)
    sources.mkdir(exist_ok=True)
    conf = config(confs, fleet_conf("/%s/stage" % name, "%s-user" % name, *peers), name=name + ".conf")
    return source(sources, conf, name="%s.cback3_conf.yml" % name, master=master, **options)


def master_values(name, **more):
    """The plugin's values of the master of ``fleet_source(..., name, ...)``."""
    values = dict(ansible_connection="local", cback_starting_day="monday", cback_working_dir="/tmp",
                  cback_backup_user="%s-user" % name, cback_backup_group="backup", cback_rcp_command="/usr/bin/scp -B",
                  cback_rsh_command="/usr/bin/ssh", cback_cback_command="/usr/bin/cback3", cback_managed_actions=["collect"],
                  cback_staging_dir="/%s/stage" % name)
    values.update(more)
    return values


def remote_peer(name, master, **more):
    values = dict(cback_peer_type="remote", cback_collect_dir="/c/" + name, cback_managed=False, cback_master_host=master)
    values.update(more)
    return values


@pytest.fixture
def fleet(tmp_path):
    """Two sources: ``one`` (master backup1: peers backup1, its local peer, and web1, db1) and ``two``
    (master backup2: peers mail1, files)."""
    one = fleet_source(tmp_path, "one", "backup1", fleet_peer("backup1", "local"), fleet_peer("web1"), fleet_peer("db1"),
                       master_vars=dict(cback_stage_parallel=4))
    two = fleet_source(tmp_path, "two", "backup2", fleet_peer("mail1"), fleet_peer("files", "local"))
    return one, two


FLEET_GROUPS = {
    "all": ["backup1", "backup1-self", "backup2", "db1", "files", "mail1", "web1"],
    "ungrouped": [],
    "cback_master": ["backup1", "backup2"],
    "cback_master_backup1": ["backup1"],
    "cback_master_backup2": ["backup2"],
    "cback_peers": ["backup1-self", "db1", "files", "mail1", "web1"],
}


def fleet_hostvars():
    return {
        "backup1": master_values("one", cback_stage_parallel=4),
        "backup2": master_values("two"),
        "backup1-self": dict(cback_peer_type="local", cback_peer_name="backup1", cback_collect_dir="/c/backup1",
                             cback_master_host="backup1"),
        "web1": remote_peer("web1", "backup1"),
        "db1": remote_peer("db1", "backup1"),
        "mail1": remote_peer("mail1", "backup2"),
        "files": dict(cback_peer_type="local", cback_collect_dir="/c/files", cback_master_host="backup2"),
    }


def test_fleet_one_source_per_master(fleet):
    inventory = Inventory(list(fleet))
    assert inventory.groups == FLEET_GROUPS
    assert inventory.hostvars == fleet_hostvars()
    # Each master's values are its own group's; cback_master has none of them, the hosts none of their own.
    assert inventory.groupvars["cback_master"] == {}
    assert inventory.groupvars["cback_master_backup1"] == master_values("one", cback_stage_parallel=4)
    assert inventory.groupvars["cback_master_backup2"] == master_values("two")
    assert inventory.own["backup1"] == inventory.own["backup2"] == {}
    for name in ("cback_master_backup1", "cback_master_backup2"):
        assert inventory.manager.groups[name].priority == 0 < inventory.manager.groups["cback_master"].priority, name
    # The peers keep the order of the files, the first source's first.
    assert [host.name for host in inventory.manager.groups["cback_peers"].get_hosts()] == [
        "backup1-self", "web1", "db1", "mail1", "files"]


def test_fleet_in_the_other_order_and_from_a_directory(fleet, tmp_path):
    one, two = fleet
    for sources in ([two, one], [str(tmp_path / "sources")]):
        inventory = Inventory(sources)
        assert inventory.groups == FLEET_GROUPS, sources
        assert inventory.hostvars == fleet_hostvars(), sources


def test_a_single_source_has_no_master_group_and_no_master_host(fleet):
    inventory = Inventory(fleet[0])
    assert sorted(inventory.groups) == ["all", "cback_master", "cback_peers", "ungrouped"]
    assert inventory.groupvars["cback_master"] == master_values("one", cback_stage_parallel=4)
    assert [host for host, values in inventory.hostvars.items() if "cback_master_host" in values] == []


def test_three_sources(fleet, tmp_path):
    three = fleet_source(tmp_path, "three", "backup3.example.com", fleet_peer("app1"))
    inventory = Inventory(list(fleet) + [three])
    assert inventory.groups["cback_master"] == ["backup1", "backup2", "backup3.example.com"]
    assert inventory.groups["cback_master_backup3_example_com"] == ["backup3.example.com"]
    assert inventory.hostvars["backup3.example.com"] == master_values("three")
    assert inventory.hostvars["app1"] == remote_peer("app1", "backup3.example.com")
    assert inventory.hostvars["web1"] == remote_peer("web1", "backup1")


def test_master_groups_of_names_alike_are_numbered(tmp_path):
    one = fleet_source(tmp_path, "one", "backup-1", fleet_peer("web1"))
    two = fleet_source(tmp_path, "two", "backup_1", fleet_peer("web2"))
    inventory = Inventory([one, two])
    assert inventory.groups["cback_master_backup_1"] == ["backup-1"]
    assert inventory.groups["cback_master_backup_1_2"] == ["backup_1"]
    assert inventory.hostvars["backup_1"]["cback_staging_dir"] == "/two/stage"
    assert plugin_module().master_group_name("a.b", set(["cback_master_a_b", "cback_master_a_b_2"])) == "cback_master_a_b_3"


def test_keyed_groups_see_the_master_host_with_one_source_too(tmp_path):
    keyed = [dict(key="cback_master_host", prefix="pool")]
    one = fleet_source(tmp_path, "one", "backup1", fleet_peer("web1"), keyed_groups=keyed)
    two = fleet_source(tmp_path, "two", "backup2", fleet_peer("mail1"), fleet_peer("db1"), keyed_groups=keyed)
    alone = Inventory(one)
    assert alone.groups["pool_backup1"] == ["web1"] and "cback_master_host" not in alone.hostvars["web1"]
    both = Inventory([one, two])
    assert both.groups["pool_backup1"] == ["web1"] and both.groups["pool_backup2"] == ["db1", "mail1"]


def test_fleet_precedence_cback_master_and_host_vars_win_per_master(fleet, tmp_path):
    """group_vars/cback_master.yml beside the sources wins over both masters' values, host_vars/<master>.yml over one's."""
    from ansible.vars.manager import VariableManager

    sources = tmp_path / "sources"
    (sources / "group_vars").mkdir()
    (sources / "host_vars").mkdir()
    write(sources / "group_vars" / "cback_master.yml", "cback_working_dir: /srv/work\nansible_connection: ssh\n")
    write(sources / "host_vars" / "backup2.yml", "cback_staging_dir: /srv/stage2\n")
    inventory = Inventory(list(fleet))
    manager = VariableManager(loader=inventory.loader, inventory=inventory.manager)
    found = dict((master, manager.get_vars(host=inventory.manager.get_host(master))) for master in ("backup1", "backup2"))
    assert [(found[master]["cback_working_dir"], found[master]["ansible_connection"]) for master in found] == [
        ("/srv/work", "ssh"), ("/srv/work", "ssh")]
    assert [found[master]["cback_staging_dir"] for master in found] == ["/one/stage", "/srv/stage2"]
    assert [found[master]["cback_backup_user"] for master in found] == ["one-user", "two-user"]


def test_fleet_precedence_the_master_group_s_inventory_variables_win(fleet, tmp_path):
    """Variables of the group cback_master from another source win over each master's own group, read before or after."""
    inline = write(tmp_path / "inline.yml", "all:\n  children:\n    cback_master:\n      vars:\n        cback_working_dir: /inline\n")
    for sources in ([fleet[0], fleet[1], inline], [inline, fleet[0], fleet[1]], [fleet[0], inline, fleet[1]]):
        inventory = Inventory(list(sources))
        assert inventory.groupvars["cback_master"] == dict(cback_working_dir="/inline"), sources
        assert [inventory.hostvars[master]["cback_working_dir"] for master in ("backup1", "backup2")] == ["/inline"] * 2
        assert inventory.groupvars["cback_master_backup1"] == master_values("one", cback_stage_parallel=4)


def test_a_peer_host_keeps_the_master_host_it_has(fleet, tmp_path):
    one = fleet_source(tmp_path, "one", "backup1", fleet_peer("web1"), compose=dict(cback_master_host="'elsewhere'"))
    inventory = Inventory([one, fleet[1]])
    assert inventory.hostvars["web1"]["cback_master_host"] == "elsewhere"


def test_a_source_given_twice_is_read_once(fleet, warnings):
    inventory = Inventory([fleet[0], fleet[0]])
    assert sorted(inventory.groups) == ["all", "cback_master", "cback_peers", "ungrouped"]
    assert inventory.groupvars["cback_master"] == master_values("one", cback_stage_parallel=4)
    assert warnings == ["%s: this inventory source is given twice; it is read once" % fleet[0]]


def inventory_state(data):
    """Everything an InventoryData holds: its groups (hosts, children, vars, priority) and hosts (vars)."""
    return plain(dict(
        groups=dict((name, [[host.name for host in group.hosts], sorted(child.name for child in group.child_groups), group.vars,
                            group.priority]) for name, group in data.groups.items()),
        hosts=dict((name, host.vars) for name, host in data.hosts.items())))


def compose_error(*paths):
    """The message of the AnsibleParserError for the last of ``paths``, read after the others into one inventory;
    the failure changes nothing of the inventory."""
    from ansible.errors import AnsibleParserError
    from ansible.inventory.data import InventoryData
    from ansible.parsing.dataloader import DataLoader
    from ansible.plugins.loader import inventory_loader

    data, loader = InventoryData(), DataLoader()
    for path in paths[:-1]:
        inventory_loader.get(PLUGIN).parse(data, loader, path, cache=False)
    before = inventory_state(data)
    with pytest.raises(AnsibleParserError) as info:
        inventory_loader.get(PLUGIN).parse(data, loader, paths[-1], cache=False)
    assert inventory_state(data) == before
    return getattr(info.value, "message", None) or str(info.value)


def test_a_peer_in_two_sources_fails_naming_both(fleet, tmp_path):
    one = fleet[0]
    three = fleet_source(tmp_path, "three", "backup3", fleet_peer("mail2"), fleet_peer("web1"))
    conf_one, conf_three = str(tmp_path / "confs" / "one.conf"), str(tmp_path / "confs" / "three.conf")
    assert compose_error(one, three) == (
        "%s: the peer web1 (master backup3, in %s) is also the peer web1 (master backup1, in %s) of %s: an inventory host "
        "has one master, so two masters cannot back up hosts of one name; set peer_host_suffix in one of the two sources to "
        "name its peer hosts apart, for example peer_host_suffix: '@backup3' in %s makes this peer the host web1@backup3 "
        "(its cback_peer_name stays web1)" % (three, conf_three, conf_one, one, three))


def test_a_failing_second_source_leaves_the_first_as_it_was(fleet, tmp_path):
    three = fleet_source(tmp_path, "three", "backup3", fleet_peer("web1"))
    inventory = Inventory([fleet[0], three])
    assert sorted(inventory.groups) == ["all", "cback_master", "cback_peers", "ungrouped"]
    assert inventory.groups["cback_master"] == ["backup1"]
    assert inventory.groupvars["cback_master"] == master_values("one", cback_stage_parallel=4)
    assert "cback_master_host" not in inventory.hostvars["web1"]


def test_peer_host_suffix_names_a_source_s_peers_apart(fleet, tmp_path):
    three = fleet_source(tmp_path, "three", "backup3", fleet_peer("web1"), fleet_peer("backup3", "local"),
                         peer_host_suffix="@backup3")
    inventory = Inventory([fleet[0], three])
    assert inventory.groups["cback_peers"] == ["backup1-self", "backup3@backup3", "db1", "web1", "web1@backup3"]
    assert inventory.hostvars["web1"] == remote_peer("web1", "backup1")
    assert inventory.hostvars["web1@backup3"] == remote_peer("web1", "backup3", cback_peer_name="web1")
    assert inventory.hostvars["backup3@backup3"] == dict(cback_peer_type="local", cback_collect_dir="/c/backup3",
                                                         cback_peer_name="backup3", cback_master_host="backup3")
    alone = Inventory(three)  # one source: the suffix applies all the same
    assert alone.groups["cback_peers"] == ["backup3@backup3", "web1@backup3"]
    assert alone.hostvars["web1@backup3"] == dict(cback_peer_type="remote", cback_collect_dir="/c/web1", cback_managed=False,
                                                  cback_peer_name="web1")


def test_peer_host_suffix_that_makes_the_master_s_name(tmp_path):
    one = fleet_source(tmp_path, "one", "web1.b1", fleet_peer("web1"), peer_host_suffix=".b1")
    inventory = Inventory(one)
    assert inventory.groups["cback_peers"] == ["web1.b1-self"]
    assert inventory.hostvars["web1.b1-self"]["cback_peer_name"] == "web1"


@pytest.mark.parametrize("suffix", ["@b 2", "web:2", "a,b", "[1]", "{{ x }}", "@b2\n"])
def test_a_bad_peer_host_suffix_fails(tmp_path, suffix):
    one = fleet_source(tmp_path, "one", "backup1", fleet_peer("web1"), peer_host_suffix=suffix)
    assert parse_error(one) == "%s: peer_host_suffix must be letters, digits, @, ., _ and - only, not %r" % (one, suffix)


def test_a_master_that_is_a_peer_of_another_source_fails(fleet, tmp_path):
    """backup1 backs up backup2, which is the master of another source: in either order, a clear error."""
    one = fleet_source(tmp_path, "one", "backup1", fleet_peer("web1"), fleet_peer("backup2"))
    two = fleet[1]
    conf_one, conf_two = str(tmp_path / "confs" / "one.conf"), str(tmp_path / "confs" / "two.conf")
    assert compose_error(one, two) == (
        "%s: the master backup2 is also a peer host of %s (master backup1, reading %s), the peer backup2 (master backup1, "
        "in %s): a host cannot be both a master and a peer; set peer_host_suffix in %s to name its peer hosts apart, for "
        "example peer_host_suffix: '@backup1' in %s makes this peer the host backup2@backup1 (its cback_peer_name stays "
        "backup2)" % (two, one, conf_one, conf_one, one, one))
    assert compose_error(two, one) == (
        "%s: the peer backup2 (master backup1, in %s) is the master of %s (master backup2, reading %s): a host cannot be "
        "both a master and a peer; set peer_host_suffix in %s to name its peer hosts apart, for example peer_host_suffix: "
        "'@backup1' in %s makes this peer the host backup2@backup1 (its cback_peer_name stays backup2)" % (
            one, conf_one, two, conf_two, one, one))
    suffixed = fleet_source(tmp_path, "one", "backup1", fleet_peer("web1"), fleet_peer("backup2"), peer_host_suffix="@backup1")
    inventory = Inventory([suffixed, two])
    assert inventory.groups["cback_master"] == ["backup1", "backup2"]
    assert inventory.hostvars["backup2@backup1"] == remote_peer("backup2", "backup1", cback_peer_name="backup2")


def test_two_sources_with_one_master_fail(fleet, tmp_path):
    three = fleet_source(tmp_path, "three", "backup1", fleet_peer("app1"))
    assert compose_error(fleet[0], three) == (
        "%s: the master backup1 is also the master of %s (master backup1, reading %s): each source names its own master "
        "(one source per master: the peers of one master belong in its one cback3.conf)" % (
            three, fleet[0], tmp_path / "confs" / "one.conf"))


def test_the_renamed_local_peer_of_a_master_clashes_by_its_host_name(fleet, tmp_path):
    """backup1's local peer is the host backup1-self; another source's peer backup1-self clashes with it."""
    three = fleet_source(tmp_path, "three", "backup3", fleet_peer("backup1-self"))
    message = compose_error(fleet[0], three)
    assert "the peer backup1-self (master backup3, in " in message
    assert "is also the peer backup1 (host backup1-self, master backup1, in " in message
