# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: cback3_conf
short_description: A Cedar Backup 3 master's cback3.conf as the inventory
version_added: 0.1.0
description:
  - Reads the C(cback3.conf) of a Cedar Backup 3 master and yields the inventory the roles and playbooks
    C(cedarbackup.peer.stage) and C(cedarbackup.peer.managed) read, so that an existing Cedar Backup
    configuration drives them unchanged.
  - "The source is a YAML file whose name ends in C(cback3_conf.yml) or C(cback3_conf.yaml) and holds
    C(plugin: cedarbackup.peer.cback3_conf)."
  - "The group C(cback_master) holds one host, the master (O(master), a local connection unless O(master_vars) says
    otherwise). Its variables are the run-wide settings: from the C(options) section C(cback_starting_day),
    C(cback_working_dir), C(cback_backup_user), C(cback_backup_group), C(cback_rcp_command), C(cback_rsh_command),
    C(cback_cback_command) and C(cback_managed_actions) (a list), and from the C(stage) section C(cback_staging_dir);
    each only when the element is in the file (the roles' defaults apply otherwise)."
  - "The group C(cback_peers) holds one host per C(peer) of the C(stage) section, or of the C(peers) section when the
    C(stage) section lists no peer, as C(cback3 stage) chooses. A host is named by the peer's C(name); a peer whose
    name is O(master) becomes the host C(<name>-self) with C(cback_peer_name) set to its name. Its variables:
    C(cback_peer_type) (C(type)), C(cback_collect_dir) (C(collect_dir)) and C(cback_ignore_failure_mode)
    (C(ignore_failures)); for a remote peer also C(cback_remote_user) (C(backup_user)), C(cback_rcp_command),
    C(cback_rsh_command), C(cback_cback_command) and C(cback_managed_actions) (a list), each only when the element
    is there, so that the run-wide value applies otherwise, as in C(cback3), and C(cback_managed) (V(true) for
    C(managed) V(Y), else V(false)). Local peers have no other elements in C(cback3.conf); C(cback3) ignores any
    other element of a peer and so does this plugin."
  - "C(cback3) runs managed actions on the managed peers of the C(peers) section. When the peers come from the
    C(stage) section and the C(peers) section has a remote peer of the same name, that entry decides
    C(cback_managed), and its C(managed_actions), C(rsh_command) and C(cback_command) win over the C(stage)
    entry's. A managed peer of the
    C(peers) section that the C(stage) section leaves out cannot be in the inventory without being staged: the
    plugin warns, naming it."
  - Peers need no connection variables (Ansible never connects to them) and get none.
  - The other sections (C(reference), C(extensions), C(collect), C(store), C(purge), extension sections) and the
    command overrides and hooks of C(options) are not read.
  - "The file is checked as C(cback3) checks it: malformed XML, a root element other than C(cb_config), a missing
    C(name), C(type) or C(collect_dir) of a peer, a C(type) other than V(local) or V(remote), a C(stage) section
    without C(staging_dir), a relative C(collect_dir), C(staging_dir) or C(working_dir), an unknown
    C(starting_day) or C(ignore_failures), a C(managed) other than V(Y) or V(N), an action name other than
    lowercase letters and digits, two peers of one section with one name, or no peer at all each fail with a
    message naming the file and the element, for example
    C(/etc/cback3.conf: stage/peer[2]: collect_dir is required)."
  - Values are taken verbatim (not templated).
author:
  - Cedar Backup peer collection maintainers (@cedarbackup)
extends_documentation_fragment:
  - ansible.builtin.constructed
options:
  plugin:
    description: The name of this plugin; it makes the file a source of this plugin.
    type: str
    required: true
    choices: [cedarbackup.peer.cback3_conf]
  path:
    description:
      - Path of the C(cback3.conf) to read. A relative path is relative to the directory of the source file; C(~) is
        expanded.
    type: str
    default: /etc/cback3.conf
  master:
    description:
      - Inventory name of the master, the one host of the group C(cback_master), where the run's work happens.
      - A peer of this name becomes the host C(<name>-self).
    type: str
    default: localhost
  master_vars:
    description:
      - Extra variables of the master, for example its connection variables (C(ansible_connection),
        C(ansible_host), C(ansible_python_interpreter)) or run settings without a C(cback3.conf) element
        (C(cback_stage_parallel), C(cback_verify)).
      - They are set over C(ansible_connection=local) and over the run-wide values read from the file.
    type: dict
    default: {}
notes:
  - Variables of the master can also come from C(group_vars/cback_master) or C(host_vars/<master>) beside the
    source, and peers' from C(host_vars/<peer>); those win over the values this plugin sets.
"""

EXAMPLES = r"""
# master.cback3_conf.yml: the master's own cback3.conf, the master being this host.
plugin: cedarbackup.peer.cback3_conf
path: /etc/cback3.conf
---
# remote-master.cback3_conf.yml: a copy of a master's cback3.conf on the controller; the master
# is reached over ssh, and runs more peers at once than by default.
plugin: cedarbackup.peer.cback3_conf
path: files/backup1-cback3.conf
master: backup1.example.com
master_vars:
  ansible_connection: ssh
  ansible_python_interpreter: /usr/bin/python3
  cback_stage_parallel: 16
---
# keyed.cback3_conf.yml: also group the peers by type (cback_peer_local, cback_peer_remote).
plugin: cedarbackup.peer.cback3_conf
keyed_groups:
  - key: cback_peer_type
    prefix: cback_peer

# Then, for example:
#   ansible-inventory -i master.cback3_conf.yml --graph --vars
#   ansible-playbook -i master.cback3_conf.yml cedarbackup.peer.stage
#   ansible-playbook -i master.cback3_conf.yml cedarbackup.peer.managed -e cback_action=collect
"""

import os
import re
import xml.etree.ElementTree as ET

from ansible.errors import AnsibleParserError
from ansible.module_utils.common.text.converters import to_native, to_text
from ansible.plugins.inventory import BaseInventoryPlugin, Constructable
from ansible.utils.display import Display
from ansible.utils.unsafe_proxy import wrap_var

display = Display()

MASTER_GROUP = "cback_master"
PEERS_GROUP = "cback_peers"
SOURCE_SUFFIXES = ("cback3_conf.yml", "cback3_conf.yaml")

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
FAILURE_MODES = ("none", "all", "daily", "weekly")
PEER_TYPES = ("local", "remote")
# cback3's ACTION_NAME_REGEX (non-empty).
ACTION_RE = re.compile(r"^[a-z0-9]+$")
# cback3's readBoolean: Y/y or N/n, nothing else.
BOOLEANS = {"Y": True, "y": True, "N": False, "n": False}

# options/<element> -> run-wide variable of the master.
OPTIONS = (
    ("starting_day", "cback_starting_day"),
    ("working_dir", "cback_working_dir"),
    ("backup_user", "cback_backup_user"),
    ("backup_group", "cback_backup_group"),
    ("rcp_command", "cback_rcp_command"),
    ("rsh_command", "cback_rsh_command"),
    ("cback_command", "cback_cback_command"),
    ("managed_actions", "cback_managed_actions"),
)
# <peer>/<element> -> per-peer variable; local peers have the first three only (as in cback3).
LOCAL_PEER_ELEMENTS = (
    ("type", "cback_peer_type"),
    ("collect_dir", "cback_collect_dir"),
    ("ignore_failures", "cback_ignore_failure_mode"),
)
REMOTE_PEER_ELEMENTS = LOCAL_PEER_ELEMENTS + (
    ("backup_user", "cback_remote_user"),
    ("rcp_command", "cback_rcp_command"),
    ("rsh_command", "cback_rsh_command"),
    ("cback_command", "cback_cback_command"),
    ("managed", "cback_managed"),
    ("managed_actions", "cback_managed_actions"),
)
# What cback3's managed actions take from the peers section's entry of a peer.
MANAGED_ELEMENTS = ("managed", "managed_actions", "rsh_command", "cback_command")


class Cback3ConfError(Exception):
    """A cback3.conf that cannot be used: ``where`` is the element (``stage/peer[2]``), or None."""

    def __init__(self, where, message):
        super(Cback3ConfError, self).__init__(message)
        self.where = where
        self.message = message

    def __str__(self):
        return self.message if self.where is None else "%s: %s" % (self.where, self.message)


def _text(parent, tag):
    """The text of the first child ``tag`` of ``parent``, as cback3's readString: None when absent or empty."""
    child = parent.find(tag)
    if child is None or child.text is None or child.text == "":
        return None
    return child.text


def _actions(value, where, tag):
    """A comma-separated list of actions (cback3's parseCommaSeparatedString), each a valid action name."""
    actions = [item.strip() for item in value.split(",")]
    actions = [item for item in actions if item]
    for action in actions:
        if not ACTION_RE.match(action):
            raise Cback3ConfError(where, "%s: %r is not an action name (lowercase letters and digits)" % (tag, action))
    return actions


def _absolute(value, where, tag):
    if not value.startswith("/"):
        raise Cback3ConfError(where, "%s must be an absolute path, not %r" % (tag, value))
    return value


def _options(root):
    """``{element: value}`` of the options section (values converted), empty without the section."""
    section = root.find("options")
    found = {}
    if section is None:
        return found
    for tag, _var in OPTIONS:
        value = _text(section, tag)
        if value is None:
            continue
        if tag == "starting_day" and value not in WEEKDAYS:
            raise Cback3ConfError("options", "starting_day must be an English weekday in lowercase (%s), not %r" % (
                ", ".join(WEEKDAYS), value))
        if tag == "working_dir":
            _absolute(value, "options", tag)
        if tag == "managed_actions":
            value = _actions(value, "options", tag)
        found[tag] = value
    return found


def _peer(element, where):
    """One ``<peer>``: ``{element: value}`` of what cback3 reads for its type (values converted)."""
    name = _text(element, "name")
    if name is None:
        raise Cback3ConfError(where, "name is required")
    peer_type = _text(element, "type")
    if peer_type is None:
        raise Cback3ConfError(where, "type is required (local or remote)")
    if peer_type not in PEER_TYPES:
        raise Cback3ConfError(where, "type must be local or remote, not %r" % peer_type)
    found = dict(name=name)
    for tag, _var in (LOCAL_PEER_ELEMENTS if peer_type == "local" else REMOTE_PEER_ELEMENTS):
        value = _text(element, tag)
        if value is None:
            continue
        if tag == "collect_dir":
            _absolute(value, where, tag)
        elif tag == "ignore_failures" and value not in FAILURE_MODES:
            raise Cback3ConfError(where, "ignore_failures must be one of %s, not %r" % (", ".join(FAILURE_MODES), value))
        elif tag == "managed":
            if value not in BOOLEANS:
                raise Cback3ConfError(where, "managed must be Y or N, not %r" % value)
            value = BOOLEANS[value]
        elif tag == "managed_actions":
            value = _actions(value, where, tag)
        found[tag] = value
    if "collect_dir" not in found:
        raise Cback3ConfError(where, "collect_dir is required")
    if peer_type == "remote":
        found.setdefault("managed", False)  # as cback3: a remote peer is managed or not
    return found


def _peer_list(section, section_name):
    """The peers of a section, in document order; two peers of one name fail."""
    peers = []
    seen = {}
    for index, element in enumerate(section.findall("peer"), 1):
        where = "%s/peer[%d]" % (section_name, index)
        peer = _peer(element, where)
        if peer["name"] in seen:
            raise Cback3ConfError(where, "name %r is also the name of %s" % (peer["name"], seen[peer["name"]]))
        seen[peer["name"]] = where
        peer["where"] = where
        peers.append(peer)
    return peers


def read_cback3_conf(path):
    """What the inventory needs of a cback3.conf.

    Returns a dict: ``options`` (``{element: value}`` of the options section), ``staging_dir``
    (None without a stage section), ``section`` (``stage`` or ``peers``: where the peers come from),
    ``peers`` (dicts of the elements cback3 reads for each peer, plus ``where``) and
    ``left_out`` (managed peers of the peers section the stage section does not list).
    Raises ``Cback3ConfError`` naming the element, ``OSError`` when the file cannot be read.
    """
    with open(path, "rb") as handle:
        data = handle.read()
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise Cback3ConfError(None, "malformed XML: %s" % exc)
    if root.tag != "cb_config":
        raise Cback3ConfError(None, "the root element is %s, not cb_config" % root.tag)
    options = _options(root)
    stage = root.find("stage")
    peers_section = root.find("peers")
    staging_dir = None
    stage_peers = []
    if stage is not None:
        staging_dir = _text(stage, "staging_dir")
        if staging_dir is None:
            raise Cback3ConfError("stage", "staging_dir is required")
        _absolute(staging_dir, "stage", "staging_dir")
        stage_peers = _peer_list(stage, "stage")
    listed_peers = None
    if peers_section is not None:
        listed_peers = _peer_list(peers_section, "peers")
        if not listed_peers:
            raise Cback3ConfError("peers", "at least one peer is required")
    if stage_peers:
        section, peers = "stage", stage_peers
    elif listed_peers:
        section, peers = "peers", listed_peers
    elif stage is not None:
        raise Cback3ConfError("stage", "at least one peer is required, here or in a peers section")
    else:
        raise Cback3ConfError("cb_config", "no stage or peers section: no peer to stage")
    left_out = []
    if section == "stage" and listed_peers:
        by_name = dict((peer["name"], peer) for peer in listed_peers if peer["type"] == "remote")
        names = set(peer["name"] for peer in stage_peers)
        for peer in peers:
            entry = by_name.get(peer["name"])
            if peer["type"] != "remote" or entry is None:
                continue
            for tag in MANAGED_ELEMENTS:  # managed is always there
                if tag in entry:
                    peer[tag] = entry[tag]
        left_out = [peer["name"] for peer in listed_peers if peer.get("managed") and peer["name"] not in names]
    return dict(options=options, staging_dir=staging_dir, section=section, peers=peers, left_out=left_out)


def master_variables(conf):
    """The master's run-wide variables from a ``read_cback3_conf`` result."""
    variables = {}
    for tag, var in OPTIONS:
        if tag in conf["options"]:
            variables[var] = conf["options"][tag]
    if conf["staging_dir"] is not None:
        variables["cback_staging_dir"] = conf["staging_dir"]
    return variables


def peer_variables(peer):
    """One peer's host variables from a ``read_cback3_conf`` peer."""
    elements = LOCAL_PEER_ELEMENTS if peer["type"] == "local" else REMOTE_PEER_ELEMENTS
    return dict((var, peer[tag]) for tag, var in elements if tag in peer)


def peer_hosts(peers, master):
    """``[(inventory host, peer)]``: a peer named like the master becomes ``<name>-self`` (then -self-2, ...)."""
    taken = set(peer["name"] for peer in peers) | set([master])
    hosts = []
    for peer in peers:
        host = peer["name"]
        if host == master:
            host = candidate = "%s-self" % peer["name"]
            number = 1
            while host in taken:
                number += 1
                host = "%s-%d" % (candidate, number)
            taken.add(host)
        hosts.append((host, peer))
    return hosts


class InventoryModule(BaseInventoryPlugin, Constructable):

    NAME = "cedarbackup.peer.cback3_conf"

    def verify_file(self, path):
        return super(InventoryModule, self).verify_file(path) and to_text(path).endswith(SOURCE_SUFFIXES)

    def parse(self, inventory, loader, path, cache=True):
        super(InventoryModule, self).parse(inventory, loader, path, cache=cache)
        self._read_config_data(path)
        conf_path = os.path.expanduser(self.get_option("path"))
        if not os.path.isabs(conf_path):
            conf_path = os.path.join(os.path.dirname(os.path.abspath(to_native(path))), conf_path)
        master = self.get_option("master")
        if not master:
            raise AnsibleParserError("%s: master must be a non-empty inventory name" % to_native(path))
        master_vars = self.get_option("master_vars") or {}
        if not isinstance(master_vars, dict):
            raise AnsibleParserError("%s: master_vars must be a dict" % to_native(path))
        try:
            conf = read_cback3_conf(conf_path)
        except Cback3ConfError as exc:
            raise AnsibleParserError("%s: %s" % (conf_path, exc))
        except (IOError, OSError) as exc:
            raise AnsibleParserError("%s: cannot read the cback3.conf: %s" % (conf_path, to_native(exc.strerror or exc)))

        strict = self.get_option("strict")
        self.inventory.add_group(MASTER_GROUP)
        self.inventory.add_group(PEERS_GROUP)
        self.inventory.add_host(master, group=MASTER_GROUP)
        variables = dict(ansible_connection="local")
        variables.update(wrap_var(master_variables(conf)))
        variables.update(master_vars)
        self._set_host_vars(master, variables, strict)
        for host, peer in peer_hosts(conf["peers"], master):
            self.inventory.add_host(host, group=PEERS_GROUP)
            variables = wrap_var(peer_variables(peer))
            if host != peer["name"]:
                variables["cback_peer_name"] = wrap_var(peer["name"])
            self._set_host_vars(host, variables, strict)
        if conf["left_out"]:
            display.warning(
                "%s: the managed peers %s of the peers section are not in the stage section: cback3 runs managed "
                "actions on them, but they are not in the inventory (every peer of the inventory is staged)."
                % (conf_path, ", ".join(conf["left_out"])))

    def _set_host_vars(self, host, variables, strict):
        for key, value in variables.items():
            self.inventory.set_variable(host, key, value)
        self._set_composite_vars(self.get_option("compose"), variables, host, strict=strict)
        self._add_host_to_composed_groups(self.get_option("groups"), variables, host, strict=strict)
        self._add_host_to_keyed_groups(self.get_option("keyed_groups"), variables, host, strict=strict)
