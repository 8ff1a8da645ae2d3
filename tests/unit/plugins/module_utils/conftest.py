# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fixtures of the peer tests (``test_peer_local.py``, ``test_peer_remote.py``)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

import pytest

from ansible_collections.cedarbackup.peer.plugins.module_utils import peer


@pytest.fixture
def syncs(monkeypatch):
    """Every ``os.fsync`` of the peer module, as the path of the descriptor, in order."""
    seen = []
    real = os.fsync

    def recording(fd):
        seen.append(os.readlink("/proc/self/fd/%d" % fd))
        return real(fd)

    monkeypatch.setattr(peer.os, "fsync", recording)
    return seen
