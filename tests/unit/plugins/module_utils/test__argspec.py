# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The modules' edge (``_argspec``): parameters checked once into typed values, messages naming the option."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible_collections.cedarbackup.peer.plugins.module_utils import _argspec as spec


@pytest.mark.parametrize("name", ["web\x1b[31m", "a\nb", "tab\there", "del\x7f"])
@pytest.mark.parametrize("peer_type", ["local", "remote"])
def test_a_peer_name_with_a_control_character_is_refused(name, peer_type):
    """A peer name becomes a directory name: a control character never gets there."""
    with pytest.raises(spec.OptionError) as info:
        spec.check_peer_name(name, peer_type)
    assert info.value.option == "name"
    assert "control character" in str(info.value) or "not a hostname" in str(info.value)


def test_a_local_peer_name_with_a_control_character_names_the_control_character():
    with pytest.raises(spec.OptionError) as info:
        spec.check_peer_name("box\x1b", "local")
    assert str(info.value) == "name: peer name 'box\\x1b' holds a control character; a directory is named after it."


def test_a_peer_spec_is_typed_and_takes_the_defaults_of_its_edge():
    peer = spec.peer_spec(dict(name="web1", type="remote", collect_dir="/c", rcp_command=None, host="h1"), default_user="backup",
                          local_user="cbackpeer")
    assert (peer.name, peer.type, peer.remote, peer.collect_dir, peer.remote_user, peer.local_user, peer.rcp_command, peer.host) == (
        "web1", "remote", True, "/c", "backup", "cbackpeer", None, "h1")
    local = spec.peer_spec(dict(type="local", collect_dir="/c"), local_user="cbackpeer")
    assert (local.name, local.remote_user, local.local_user, local.host) == ("localhost", None, None, "localhost")


@pytest.mark.parametrize("values, option, words", [
    (dict(name="web1", collect_dir="rel"), "peers[2].collect_dir", "must be an absolute path"),
    (dict(name="web1"), "peers[2].collect_dir", "is required for every peer"),
    (dict(name="../x", collect_dir="/c"), "peers[2].name", "one directory name"),
    (dict(name="web1", collect_dir="/c", remote_user="a b"), "peers[2].remote_user", "not a valid user name"),
    (dict(name="web1", collect_dir="/c", rsh_command='""'), "peers[2].rsh_command", "is not a command"),
    (dict(name="web1", collect_dir="/c", ignore_failure_mode="often"), "peers[2].ignore_failure_mode", "must be one of"),
])
def test_a_bad_peer_entry_names_its_option_with_the_entry(values, option, words):
    with pytest.raises(spec.OptionError) as info:
        spec.peer_spec(values, "peers[2].")
    assert info.value.option == option and words in str(info.value), str(info.value)


def test_a_managed_peer_needs_no_collect_dir():
    assert spec.peer_spec(dict(name="web1"), collect=False).collect_dir is None


def test_two_peers_with_one_name_both_get_the_error_once():
    peers = [dict(name="a", host="a", error=None), dict(name="a", host="a2", error=None), dict(name="b", host="b", error="bad")]
    spec.mark_duplicate_names(peers)
    assert [peer["error"] for peer in peers] == [
        "invalid settings: peer name 'a' is also used by a2.", "invalid settings: peer name 'a' is also used by a.", "bad"]


def test_the_conduct_checks_the_working_dir_and_the_timeouts(tmp_path):
    conduct = spec.conduct(dict(working_dir=str(tmp_path), timeout=0, connect_timeout=5, ssh_multiplex=False))
    assert (conduct.working_dir, conduct.timeout, conduct.connect_timeout, conduct.ssh_multiplex) == (str(tmp_path), None, 5, False)
    assert spec.conduct(dict(working_dir=str(tmp_path / "missing")), remote=False).working_dir is None  # a local peer uses none
    with pytest.raises(spec.OptionError) as info:
        spec.conduct(dict(working_dir=str(tmp_path / "missing")))
    assert info.value.option == "working_dir" and "does not exist" in str(info.value)
    with pytest.raises(spec.OptionError) as info:
        spec.conduct(dict(timeout=-1))
    assert info.value.option == "timeout"


def test_ownership_names_the_option_of_an_unknown_user_or_group():
    assert spec.ownership(None, None, "owner", "group") is None
    assert spec.ownership(0, "0", "owner", "group") == (0, 0)
    with pytest.raises(spec.OptionError) as info:
        spec.ownership("cbnosuchuser", None, "backup_user", "backup_group", " on the master")
    assert str(info.value) == "backup_user: no such user 'cbnosuchuser' on the master."
