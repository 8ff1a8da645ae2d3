# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``_ids``: user names of ids, handing files over to a user."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import pwd

import pytest

from ansible_collections.cedarbackup.peer.plugins.module_utils import _ids


def test_current_user_name_unknown_uid(monkeypatch):
    monkeypatch.setattr(_ids.os, "geteuid", lambda: 987654)
    assert _ids.current_user_name() == "987654"


@pytest.mark.skipif(os.getuid() != 0, reason="handing over needs root")
def test_give_to_user_never_chowns_a_symlink_target(tmp_path):
    victim = tmp_path / "root-only"
    victim.write_text("secret\n")
    os.chmod(str(victim), 0o600)
    link = tmp_path / "private"
    os.symlink(str(victim), str(link))
    _ids.give_to_user(str(link), "nobody")
    info = os.stat(str(victim))
    assert (info.st_uid, info.st_gid) == (0, 0)
    assert os.lstat(str(link)).st_uid == pwd.getpwnam("nobody").pw_uid
