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
  - "The group C(cback_master) holds the master (O(master)). Everything the plugin sets for the master is a
    variable of the B(group) C(cback_master) (of the master's own group when there are several sources, see below):
    C(ansible_connection=local), then the run-wide settings, from the
    C(options) section C(cback_starting_day), C(cback_working_dir), C(cback_backup_user), C(cback_backup_group),
    C(cback_rcp_command), C(cback_rsh_command), C(cback_cback_command) and C(cback_managed_actions) (a list), and from
    the C(stage) section C(cback_staging_dir), each only when the element is in the file (the roles' defaults apply
    otherwise), then O(master_vars) over both."
  - "The group C(cback_peers) holds one host per C(peer) of the C(stage) section, or of the C(peers) section when the
    C(stage) section lists no peer, as C(cback3 stage) chooses. A host is named by the peer's C(name); a peer whose
    name is O(master) becomes the host C(<name>-self) with C(cback_peer_name) set to its name. Its B(host) variables:
    C(cback_peer_type) (C(type)), C(cback_collect_dir) (C(collect_dir)) and C(cback_ignore_failure_mode)
    (C(ignore_failures)); for a remote peer also C(cback_remote_user) (C(backup_user)) and C(cback_rcp_command),
    each only when the element is there, so that the run-wide value applies otherwise, as in C(cback3), and
    C(cback_managed). A peer whose C(type) is not V(local) or V(remote) is skipped, as C(cback3) skips it."
  - "Managed settings come from the C(peers) section only, where C(cback3) reads managed peers: C(cback_managed)
    (V(true) for C(managed) V(Y)), C(cback_managed_actions), C(cback_rsh_command), C(cback_cback_command) and, for a
    managed peer, C(cback_remote_user) are those of the C(peers) section's remote peer of the same name; a
    C(managed) V(Y) of a C(stage) peer does not make it managed. A managed peer of the C(peers) section that is not a
    remote peer of the C(stage) section cannot be in the inventory without being staged."
  - "The plugin warns, naming the file and the elements, about what C(cback3) accepts but does not read or reads in
    two ways: a peer's C(stage) and C(peers) entries that disagree (C(type), C(collect_dir), C(ignore_failures),
    remote user, C(rcp_command)), managed settings of a C(stage) peer, managed peers left out, skipped peers, the
    remote-only elements of a local peer, and unknown elements of the C(options), C(stage) and C(peers) sections and
    their peers (with a suggestion, for example C(did you mean collect_dir?))."
  - Peers need no connection variables (Ansible never connects to them) and get none.
  - "Several sources, one per master (C(-i a.cback3_conf.yml -i b.cback3_conf.yml), or a directory holding
    them), compose one inventory, a fleet: C(cback_master) holds every source's master and C(cback_peers) every
    source's peers. Each master's values are then variables of its own group C(cback_master_<master>) (characters
    other than letters, digits and C(_) of the master's name as C(_), for example C(cback_master_backup1_example_com);
    numbered C(_2), ... past an existing group of that name), which holds that master alone and has the
    C(ansible_group_priority) C(0), below the default C(1) of C(cback_master), so that C(cback_master)'s variables
    win over them as over a single source's; the group C(cback_master) has none of the plugin's values. Each peer
    host gets the host variable C(cback_master_host), its source's master (not with a single source: one master
    is every peer's master). The first source's values move to its own group, and its peers get
    C(cback_master_host), when a second source is read."
  - "With several sources, each must name its own master, and an inventory host is the peer of one source only and
    is not a master: a peer host in two sources (two masters back up a host of that name), a master that is the
    host of another source's peer, and two sources with the same master fail, naming both sources, the peer and
    both masters. O(peer_host_suffix) names a source's peer hosts apart: with V(@backup2), the peer C(web1) is
    the host C(web1@backup2), its C(cback_peer_name) C(web1) (the name the rcp and rsh commands connect to, and
    its staging directory). A source given twice is read once, with a warning."
  - The options C(compose), C(groups) and C(keyed_groups) see each peer's C(cback_master_host), with one source too;
    for example C(keyed_groups) with the key C(cback_master_host) groups the peers by master.
  - The other sections (C(reference), C(extensions), C(collect), C(store), C(purge), extension sections) and the
    command overrides and hooks of C(options) are not read; the C(collect), C(store), C(purge) and C(extensions)
    sections are not checked.
  - "The file must be one C(cback3 validate) accepts, as far as the C(options), C(stage) and C(peers) sections go:
    well-formed XML with the root C(cb_config); an C(options) section with C(starting_day) (a lowercase English
    weekday), C(working_dir) (absolute), C(backup_user), C(backup_group) and C(rcp_command); one of the C(collect),
    C(stage), C(store) or C(purge) sections; a C(stage) section with an absolute C(staging_dir), and peers unless a
    C(peers) section has some; a C(peers) section with peers; each peer with C(name) and an absolute C(collect_dir),
    a valid C(ignore_failures) and C(managed), unique names in a section; a remote peer's remote user and
    C(rcp_command) set by the peer or the C(options) section, and for a managed peer its C(rsh_command),
    C(cback_command) and C(managed_actions) too; action names of lowercase letters and digits; absolute
    C(override) paths. Otherwise it fails with a message naming the file and the element, for example
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
      - Inventory name of the master, the host of the group C(cback_master) where the run's work for this source's
        peers happens.
      - A peer of this name becomes the host C(<name>-self).
      - With several sources, each names its own master, and no master is the host of another source's peer.
    type: str
    default: localhost
  master_vars:
    description:
      - Extra variables of the master, for example its connection variables (C(ansible_connection),
        C(ansible_host), C(ansible_python_interpreter)) or run settings without a C(cback3.conf) element
        (C(cback_stage_parallel), C(cback_verify)).
      - They are variables of the group C(cback_master) (of the master's own group C(cback_master_<master>) when
        there are several sources), set over C(ansible_connection=local) and over the run-wide values read from the
        file.
    type: dict
    default: {}
  peer_host_suffix:
    description:
      - Appended to the inventory host name of every peer of this source, for example V(@backup2) to name the
        peer C(web1) C(web1@backup2); C(cback_peer_name) is then set to the peer's name (V(web1)), which stays the
        host the rcp and rsh commands connect to and the name of its staging directory.
      - For a fleet whose masters back up hosts of the same name, or where a master is also another master's peer,
        since an inventory host is the peer of one source only, and not a master.
      - Letters, digits, C(@), C(.), C(_) and C(-) only.
    type: str
    default: ""
    version_added: 0.2.0
notes:
  - "Ansible's variable precedence applies: C(group_vars/cback_master) and C(host_vars/<master>) beside the source
    win over every value the plugin sets for the master (C(ansible_connection) and O(master_vars) included),
    C(host_vars/<peer>) over a peer's, and C(-e) over all. So does C(group_vars/all) beside the source or the
    playbook (Ansible applies C(group_vars) files after the groups' inventory variables), but not the variables
    of the group C(all) of another inventory source; C(group_vars/cback_peers) does not override a peer's value
    (host variables win over group variables)."
  - "With several sources the same holds for each master: C(group_vars/cback_master) wins over every master's
    values, C(host_vars/<master>) and the C(group_vars) of the master's other groups over that master's."
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
---
# A fleet of two masters: fleet/backup1.cback3_conf.yml and fleet/backup2.cback3_conf.yml, each
# reading a copy of its master's cback3.conf; each peer host gets cback_master_host, each master
# its own staging_dir, backup_user, ... from its own file (in the groups cback_master_backup1 and
# cback_master_backup2). Both files list a peer web1: backup2's is named web1@backup2.
plugin: cedarbackup.peer.cback3_conf
path: backup1-cback3.conf
master: backup1
master_vars:
  ansible_connection: ssh
---
plugin: cedarbackup.peer.cback3_conf
path: backup2-cback3.conf
master: backup2
peer_host_suffix: "@backup2"
master_vars:
  ansible_connection: ssh

# Then, for example:
#   ansible-inventory -i fleet/ --graph
#   ansible-inventory -i fleet/backup1.cback3_conf.yml -i fleet/backup2.cback3_conf.yml --host web1@backup2
"""

import difflib
import os
import re
from xml.dom import minidom
from xml.parsers.expat import ExpatError

from ansible.errors import AnsibleParserError
from ansible.module_utils.common.text.converters import to_native, to_text
from ansible.plugins.inventory import BaseInventoryPlugin, Constructable
from ansible.utils.display import Display
from ansible.utils.unsafe_proxy import wrap_var

display = Display()

MASTER_GROUP = "cback_master"
PEERS_GROUP = "cback_peers"
SOURCE_SUFFIXES = ("cback3_conf.yml", "cback3_conf.yaml")
# With several sources, each master's values are variables of its own group, cback_master_<master>,
# whose priority (below the default 1) lets the group cback_master's variables win over them.
MASTER_GROUP_PRIORITY = 0
MASTER_HOST_VAR = "cback_master_host"
# peer_host_suffix: characters that keep an inventory host name one word of a host pattern.
SUFFIX_RE = re.compile(r"[A-Za-z0-9@._-]*")
# The cback3_conf sources read into an InventoryData (one Ansible inventory), in the order read:
# an attribute of that object, since each source may be read by another instance of the plugin.
SOURCES_ATTR = "_cedarbackup_peer_cback3_conf_sources"

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
FAILURE_MODES = ("none", "all", "daily", "weekly")
PEER_TYPES = ("local", "remote")
# cback3's ACTION_NAME_REGEX, applied as cback3 applies it (re.search, items never empty).
ACTION_RE = re.compile(r"^[a-z0-9]*$")
# cback3's readBoolean: Y/y or N/n, nothing else.
BOOLEANS = {"Y": True, "y": True, "N": False, "n": False}
# The sections cback3 requires at least one of (Config.validate's requireOneAction).
ACTION_SECTIONS = ("collect", "stage", "store", "purge")

# options/<element> -> run-wide variable of the master's group.
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
# What cback3 requires in the options section (Config._validateOptions).
REQUIRED_OPTIONS = ("starting_day", "working_dir", "backup_user", "backup_group", "rcp_command")
OPTIONS_KNOWN = tuple(tag for tag, _var in OPTIONS) + ("override", "pre_action_hook", "post_action_hook")
STAGE_KNOWN = ("staging_dir", "peer")
PEERS_KNOWN = ("peer",)
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
PEER_KNOWN = ("name",) + tuple(tag for tag, _var in REMOTE_PEER_ELEMENTS)
LOCAL_PEER_KNOWN = ("name",) + tuple(tag for tag, _var in LOCAL_PEER_ELEMENTS)
# What cback3's managed actions take from the peers section's entry of a peer (never from the stage section).
MANAGED_ELEMENTS = ("managed", "managed_actions", "rsh_command", "cback_command")
# Names users write for an element that difflib does not relate to it.
ALIASES = {"remote_user": "backup_user", "user": "backup_user", "group": "backup_group", "target_dir": "staging_dir",
           "stage_dir": "staging_dir", "actions": "managed_actions"}


class Cback3ConfError(Exception):
    """A cback3.conf that cannot be used: ``where`` is the element (``stage/peer[2]``), or None."""

    def __init__(self, where, message):
        super(Cback3ConfError, self).__init__(message)
        self.where = where
        self.message = message

    def __str__(self):
        return self.message if self.where is None else "%s: %s" % (self.where, self.message)


def _children(parent, tag):
    """The child elements ``tag`` of ``parent`` (cback3's readChildren)."""
    return [node for node in parent.childNodes if node.nodeType == node.ELEMENT_NODE and node.tagName == tag]


def _first(parent, tag):
    """The first child element ``tag`` of ``parent``, or None (cback3's readFirstChild)."""
    found = _children(parent, tag)
    return found[0] if found else None


def _text(parent, tag):
    """cback3's readString: the first text node of the first child ``tag`` that has one; None otherwise.

    Taken verbatim: cback3 strips nothing, so ``<type> remote</type>`` is not ``remote``.
    """
    for element in _children(parent, tag):
        for node in element.childNodes:
            if node.nodeType == node.TEXT_NODE:
                return node.nodeValue
    return None


def _unknown(parent, known, where, warnings, ignored=None):
    """A warning for each child element of ``parent`` that cback3 does not read, with a suggestion."""
    ignored = ignored or {}
    seen = set()
    for node in parent.childNodes:
        if node.nodeType != node.ELEMENT_NODE or node.tagName in seen:
            continue
        tag = node.tagName
        seen.add(tag)
        if tag in ignored:
            warnings.append("%s: %s is not read: %s" % (where, tag, ignored[tag]))
        elif tag not in known:
            guess = ALIASES.get(tag) if ALIASES.get(tag) in known else None
            guess = guess or next(iter(difflib.get_close_matches(tag, known, n=1)), None)
            hint = " (did you mean %s?)" % guess if guess else ""
            warnings.append("%s: unknown element %s, which cback3 does not read%s" % (where, tag, hint))


def _actions(value, where, tag):
    """A comma-separated list of actions (cback3's parseCommaSeparatedString), each a valid action name."""
    actions = [item.strip() for item in value.split(",")]
    actions = [item for item in actions if item]
    for action in actions:
        if not ACTION_RE.search(action):
            raise Cback3ConfError(where, "%s: %r is not an action name (lowercase letters and digits)" % (tag, action))
    return actions


def _absolute(value, where, tag):
    if not os.path.isabs(value):
        raise Cback3ConfError(where, "%s must be an absolute path, not %r" % (tag, value))
    return value


def _options(section, warnings):
    """``{element: value}`` of the options section (values converted), checked as cback3 checks it."""
    _unknown(section, OPTIONS_KNOWN, "options", warnings)
    found = {}
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
    for index, override in enumerate(_children(section, "override"), 1):
        path = _text(override, "abs_path")
        if path is not None:
            _absolute(path, "options/override[%d]" % index, "abs_path")
    for tag in ("pre_action_hook", "post_action_hook"):
        for index, hook in enumerate(_children(section, tag), 1):
            action = _text(hook, "action")
            if action is not None and not ACTION_RE.search(action):
                raise Cback3ConfError("options/%s[%d]" % (tag, index),
                                      "action: %r is not an action name (lowercase letters and digits)" % action)
    for tag in REQUIRED_OPTIONS:
        if tag not in found:
            raise Cback3ConfError("options", "%s is required" % tag)
    return found


def _peer(element, where, warnings):
    """One ``<peer>``: ``{element: value}`` of what cback3 reads for its type, or None for a peer cback3 skips."""
    peer_type = _text(element, "type")
    if peer_type not in PEER_TYPES:
        warnings.append("%s: not a peer for cback3, which skips a peer whose type is not local or remote (%s)" % (
            where, "it has no type" if peer_type is None else "not %r" % peer_type))
        return None
    if peer_type == "local":
        remote_only = "cback3 reads only %s of a local peer" % ", ".join(LOCAL_PEER_KNOWN)
        _unknown(element, LOCAL_PEER_KNOWN, where, warnings,
                 ignored=dict((tag, remote_only) for tag in PEER_KNOWN if tag not in LOCAL_PEER_KNOWN))
    else:
        _unknown(element, PEER_KNOWN, where, warnings)
    found = dict(name=_text(element, "name"), where=where)
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
    if peer_type == "remote":
        found.setdefault("managed", False)  # as cback3: a remote peer is managed or not
    return found


def _peer_list(section, section_name, warnings):
    """The peers of a section cback3 reads (type local or remote), in document order."""
    peers = []
    for index, element in enumerate(_children(section, "peer"), 1):
        peer = _peer(element, "%s/peer[%d]" % (section_name, index), warnings)
        if peer is not None:
            peers.append(peer)
    return peers


def _check_peer_list(peers, options, where, none_message):
    """cback3's _validatePeerList: at least one peer, each complete, settings resolvable, names unique."""
    if not peers:
        raise Cback3ConfError(where, none_message)
    seen = {}
    for peer in peers:
        if peer["name"] is None:
            raise Cback3ConfError(peer["where"], "name is required")
        if "collect_dir" not in peer:
            raise Cback3ConfError(peer["where"], "collect_dir is required")
        if peer["type"] == "remote":
            needed = [("backup_user", "backup_user"), ("rcp_command", "rcp_command")]
            if peer["managed"]:
                needed += [("rsh_command", "rsh_command"), ("cback_command", "cback_command")]
            for tag, option in needed:
                if tag not in peer and option not in options:
                    raise Cback3ConfError(peer["where"], "%s is required: neither this peer nor the options section sets it" % tag)
            if peer["managed"] and not peer.get("managed_actions") and not options.get("managed_actions"):
                raise Cback3ConfError(peer["where"], "managed_actions is required for a managed peer: neither this peer nor the "
                                                     "options section lists an action")
    for peer in peers:
        if peer["name"] in seen:
            raise Cback3ConfError(peer["where"], "name %r is also the name of %s" % (peer["name"], seen[peer["name"]]))
        seen[peer["name"]] = peer["where"]


def _effective(peer, options, tag):
    return peer.get(tag, options.get(tag))


def _merge(peer, entry, options, warnings):
    """A stage section peer, its managed settings from the peers section's ``entry`` of its name (or None).

    cback3 stages with the stage section's entry and runs managed actions on the peers section's
    managed peers only: the inventory's managed settings (managed, managed_actions, rsh_command,
    cback_command and, for a managed peer, the remote user) are the peers section's.
    """
    label = "%s (%s)" % (peer["where"], peer["name"])
    if entry is not None:
        differences = []
        tags = ("type", "collect_dir", "ignore_failures")
        if peer["type"] == entry["type"] == "remote":
            tags += ("backup_user", "rcp_command")
        for tag in tags:
            mine, theirs = _effective(peer, options, tag), _effective(entry, options, tag)
            if mine != theirs:
                differences.append("%s %s and %s" % (tag, "unset" if mine is None else repr(mine),
                                                     "unset" if theirs is None else repr(theirs)))
        if differences:
            what = "cback3 stages with the first, and runs managed actions with the second"
            if peer["type"] == "remote" and entry["type"] == "remote" and entry["managed"]:
                what += "; the inventory takes the remote user of the second, as this peer is managed"
            elif entry.get("managed") and peer["type"] != "remote":
                what += "; the inventory does not mark a local peer managed"
            warnings.append("%s and %s disagree: %s (%s)" % (label, entry["where"], "; ".join(differences), what))
    if peer["type"] != "remote":
        return peer
    merged = dict((tag, value) for tag, value in peer.items() if tag not in MANAGED_ELEMENTS)
    merged["managed"] = False
    if entry is not None and entry["type"] == "remote":
        for tag in MANAGED_ELEMENTS:
            if tag in entry:
                merged[tag] = entry[tag]
        if entry["managed"]:
            merged.pop("backup_user", None)
            if "backup_user" in entry:
                merged["backup_user"] = entry["backup_user"]
    unused = [tag for tag in MANAGED_ELEMENTS if tag in peer and peer[tag] != merged.get(tag) and (tag != "managed" or peer[tag])]
    if unused:
        warnings.append("%s: %s not used: cback3 takes managed settings from the peers section only, %s" % (
            label, ", ".join(unused), "here %s" % entry["where"] if entry is not None else "which does not list this peer"))
    return merged


def read_cback3_conf(path):
    """What the inventory needs of a cback3.conf, checked as ``cback3 validate`` checks it.

    Returns a dict: ``options`` (``{element: value}`` of the options section), ``staging_dir``
    (None without a stage section), ``section`` (``stage`` or ``peers``: where the peers come from;
    None when neither lists one), ``peers`` (dicts of the elements cback3 reads for each peer, plus
    ``where``) and ``warnings`` (what cback3 accepts but ignores, and where the stage and peers
    sections disagree).
    Raises ``Cback3ConfError`` naming the element, ``OSError`` when the file cannot be read.
    """
    with open(path, "rb") as handle:
        data = handle.read()
    try:
        root = minidom.parseString(data).documentElement
    except ExpatError as exc:
        raise Cback3ConfError(None, "malformed XML: %s" % exc)
    if root.tagName != "cb_config":
        raise Cback3ConfError(None, "the root element is %s, not cb_config" % root.tagName)
    warnings = []
    section = _first(root, "options")
    if section is None:
        raise Cback3ConfError("cb_config", "the options section is required")
    options = _options(section, warnings)
    peers_section = _first(root, "peers")
    stage = _first(root, "stage")
    listed = None
    if peers_section is not None:
        _unknown(peers_section, PEERS_KNOWN, "peers", warnings)
        listed = _peer_list(peers_section, "peers", warnings)
    staging_dir = None
    stage_peers = []
    if stage is not None:
        _unknown(stage, STAGE_KNOWN, "stage", warnings)
        staging_dir = _text(stage, "staging_dir")
        if staging_dir is not None:
            _absolute(staging_dir, "stage", "staging_dir")
        stage_peers = _peer_list(stage, "stage", warnings)
    if not any(_first(root, tag) is not None for tag in ACTION_SECTIONS):
        raise Cback3ConfError("cb_config", "at least one of the %s sections is required" % ", ".join(ACTION_SECTIONS))
    if listed is not None:
        _check_peer_list(listed, options, "peers", "at least one peer of type local or remote is required")
    if stage is not None:
        if staging_dir is None:
            raise Cback3ConfError("stage", "staging_dir is required")
        if listed is None or stage_peers:
            _check_peer_list(stage_peers, options, "stage",
                             "at least one peer of type local or remote is required, here or in a peers section")
    if stage_peers:
        by_name = dict((peer["name"], peer) for peer in listed or [])
        peers = [_merge(peer, by_name.get(peer["name"]), options, warnings) for peer in stage_peers]
        staged = set(peer["name"] for peer in stage_peers if peer["type"] == "remote")
        left_out = [peer["name"] for peer in listed or [] if peer.get("managed") and peer["name"] not in staged]
        if left_out:
            warnings.append("the managed peers %s of the peers section are not remote peers of the stage section: cback3 runs "
                            "managed actions on them, but the inventory does not (every peer of the inventory is staged, "
                            "as the stage section says)" % ", ".join(left_out))
        section_name = "stage"
    elif listed:
        peers, section_name = listed, "peers"
    else:
        peers, section_name = [], None
        warnings.append("cb_config: neither a stage nor a peers section lists a peer: the inventory has no peer")
    return dict(options=options, staging_dir=staging_dir, section=section_name, peers=peers, warnings=warnings)


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


def peer_hosts(peers, master, suffix=""):
    """``[(inventory host, peer)]``: a peer's host is its name and ``suffix``; one named like the master
    becomes ``<host>-self`` (then -self-2, ...)."""
    taken = set(peer["name"] + suffix for peer in peers) | set([master])
    hosts = []
    for peer in peers:
        host = peer["name"] + suffix
        if host == master:
            host = candidate = "%s-self" % host
            number = 1
            while host in taken:
                number += 1
                host = "%s-%d" % (candidate, number)
            taken.add(host)
        hosts.append((host, peer))
    return hosts


class Source(object):
    """One source read into an inventory: its ``path``, the cback3.conf it reads (``conf``), its ``master``
    and ``hosts`` ({inventory host: peer name}, in the file's order).

    Where the master's values are: while the source is the inventory's only one, variables of the group
    cback_master, ``values`` being them as stored there and ``replaced`` the values of cback_master they
    replaced (from a source read before); once there are several, variables of its own group ``group``.
    """

    def __init__(self, path, conf, master, hosts):
        self.path = path
        self.conf = conf
        self.master = master
        self.hosts = hosts
        self.values = {}
        self.replaced = {}
        self.group = None

    def describe(self):
        return "%s (master %s, reading %s)" % (self.path, self.master, self.conf)

    def peer(self, host):
        """The peer of inventory host ``host``, for messages."""
        name = self.hosts[host]
        return "the peer %s (%smaster %s, in %s)" % (name, "" if host == name else "host %s, " % host, self.master, self.conf)


def sources_of(inventory):
    """The list of ``Source`` read into ``inventory`` (an InventoryData, or Ansible's proxy of one)."""
    data = getattr(inventory, "__wrapped__", inventory)
    sources = getattr(data, SOURCES_ATTR, None)
    if sources is None:
        sources = []
        setattr(data, SOURCES_ATTR, sources)
    return sources


def _suffix_hint(where, source, host):
    """How to name ``source``'s peer hosts apart, for its peer host ``host``; ``where``: which sources."""
    suffix = "@" + re.sub(r"[^A-Za-z0-9._-]", "_", source.master)
    name = source.hosts[host]
    return ("set peer_host_suffix in %s to name its peer hosts apart, for example peer_host_suffix: '%s' in %s makes "
            "this peer the host %s%s (its cback_peer_name stays %s)" % (where, suffix, source.path, name, suffix, name))


def composition_error(sources, new):
    """Why the ``Source`` ``new`` cannot join an inventory of the ``sources`` read before it, or None.

    One source per master; a host is the peer of one source, or a master, never both.
    """
    for old in sources:
        if new.master == old.master:
            return ("%s: the master %s is also the master of %s: each source names its own master (one source per "
                    "master: the peers of one master belong in its one cback3.conf)" % (new.path, new.master, old.describe()))
    for old in sources:
        if new.master in old.hosts:
            return ("%s: the master %s is also a peer host of %s, %s: a host cannot be both a master and a peer; %s" % (
                new.path, new.master, old.describe(), old.peer(new.master), _suffix_hint(old.path, old, new.master)))
    for host in new.hosts:
        for old in sources:
            if host == old.master:
                return ("%s: %s is the master of %s: a host cannot be both a master and a peer; %s" % (
                    new.path, new.peer(host), old.describe(), _suffix_hint(new.path, new, host)))
            if host in old.hosts:
                return ("%s: %s is also %s of %s: an inventory host has one master, so two masters cannot back up hosts "
                        "of one name; %s" % (new.path, new.peer(host), old.peer(host), old.path,
                                             _suffix_hint("one of the two sources", new, host)))
    return None


def master_group_name(master, taken):
    """The name of ``master``'s own group, ``cback_master_<master>`` (other characters than letters, digits and _ as _),
    numbered (``_2``, ...) past the names in ``taken``."""
    base = "%s_%s" % (MASTER_GROUP, re.sub(r"[^A-Za-z0-9_]", "_", master))
    for number in range(1, len(taken) + 2):
        name = base if number == 1 else "%s_%d" % (base, number)
        if name not in taken:
            return name
    raise AssertionError("unreachable: %d names cannot take %d" % (len(taken), len(taken) + 1))


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
        suffix = self.get_option("peer_host_suffix") or ""
        if not SUFFIX_RE.fullmatch(suffix):
            raise AnsibleParserError("%s: peer_host_suffix must be letters, digits, @, ., _ and - only, not %r" % (
                to_native(path), suffix))
        try:
            conf = read_cback3_conf(conf_path)
        except Cback3ConfError as exc:
            raise AnsibleParserError("%s: %s" % (conf_path, exc))
        except (IOError, OSError) as exc:
            raise AnsibleParserError("%s: cannot read the cback3.conf: %s" % (conf_path, to_native(exc.strerror or exc)))
        hosts = peer_hosts(conf["peers"], master, suffix)
        sources = sources_of(self.inventory)
        new = Source(to_native(path), conf_path, master, dict((host, peer["name"]) for host, peer in hosts))
        if any(os.path.realpath(old.path) == os.path.realpath(new.path) for old in sources):
            display.warning("%s: this inventory source is given twice; it is read once" % new.path)
            return
        error = composition_error(sources, new)
        if error:
            raise AnsibleParserError(error)

        strict = self.get_option("strict")
        self.inventory.add_group(MASTER_GROUP)
        self.inventory.add_group(PEERS_GROUP)
        self.inventory.add_host(master, group=MASTER_GROUP)
        # Every value of the master is a variable of a group, so that group_vars/cback_master,
        # host_vars/<master> and -e win over it in Ansible's precedence: of cback_master while this
        # is the only source, else of the master's own group.
        variables = dict(ansible_connection="local")
        variables.update(wrap_var(master_variables(conf)))
        variables.update(master_vars)
        if len(sources) == 1 and sources[0].group is None:
            self._move_to_own_group(sources[0])
        if sources:
            new.group = self._master_group(master)
        group = self.inventory.groups[MASTER_GROUP]
        for key, value in variables.items():
            if new.group is None and key in group.vars:
                new.replaced[key] = group.vars[key]
            self.inventory.set_variable(new.group or MASTER_GROUP, key, value)
            if new.group is None:
                new.values[key] = group.vars.get(key)  # as stored (Group.vars may be a new dict after a merge)
        self._construct(master, variables, strict)
        for host, peer in hosts:
            self.inventory.add_host(host, group=PEERS_GROUP)
            variables = wrap_var(peer_variables(peer))
            if host != peer["name"]:
                variables["cback_peer_name"] = wrap_var(peer["name"])
            if sources:
                variables[MASTER_HOST_VAR] = master
            for key, value in variables.items():
                self.inventory.set_variable(host, key, value)
            self._construct(host, dict(variables, **{MASTER_HOST_VAR: master}), strict)
        sources.append(new)
        for warning in conf["warnings"]:
            display.warning("%s: %s" % (conf_path, warning))

    def _master_group(self, master):
        """A new group holding ``master`` alone, for its values, below cback_master in priority."""
        name = master_group_name(master, set(self.inventory.groups))
        self.inventory.add_group(name)
        self.inventory.set_variable(name, "ansible_group_priority", MASTER_GROUP_PRIORITY)
        self.inventory.add_host(master, group=name)
        return name

    def _move_to_own_group(self, source):
        """The first source, once a second is read: its master's values to its own group, its peers' cback_master_host.

        cback_master gets back the values the first source replaced; a value of cback_master that another
        source set over the first source's stays there, as does a cback_master_host a peer host has already.
        """
        source.group = self._master_group(source.master)
        group_vars = self.inventory.groups[MASTER_GROUP].vars
        for key, value in source.values.items():
            self.inventory.set_variable(source.group, key, value)
            if key in group_vars and group_vars[key] is value:
                if key in source.replaced:
                    group_vars[key] = source.replaced[key]
                else:
                    del group_vars[key]
        source.values, source.replaced = {}, {}
        for host in source.hosts:
            if host in self.inventory.hosts and MASTER_HOST_VAR not in self.inventory.hosts[host].vars:
                self.inventory.set_variable(host, MASTER_HOST_VAR, source.master)

    def _construct(self, host, variables, strict):
        """compose, groups and keyed_groups of Ansible's constructed inventories, over ``variables``."""
        self._set_composite_vars(self.get_option("compose"), variables, host, strict=strict)
        self._add_host_to_composed_groups(self.get_option("groups"), variables, host, strict=strict)
        self._add_host_to_keyed_groups(self.get_option("keyed_groups"), variables, host, strict=strict)
