# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``_ids``: user names of ids."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.cedarbackup.peer.plugins.module_utils import _ids


def test_current_user_name_unknown_uid(monkeypatch):
    monkeypatch.setattr(_ids.os, "geteuid", lambda: 987654)
    assert _ids.current_user_name() == "987654"
