# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit-test fixtures shared by several test modules."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible_collections.cedarbackup.peer.tests.support.fake_runner import FakeRunner


@pytest.fixture
def fake_runner(monkeypatch):
    """Put a ``FakeRunner`` in place of ``run_command`` (and its ``converse`` in place of
    ``start_conversation``) in each module given; return it.

    ``fake_runner(peer, _tasks, rc=3, stderr="...")``: the keyword arguments go to
    ``FakeRunner``; ``runner=`` installs a runner made by the test (a subclass, say).
    """
    def install(*modules, **options):
        runner = options.pop("runner", None) or FakeRunner(**options)
        for module in modules:
            monkeypatch.setattr(module, "run_command", runner)
            if hasattr(module, "start_conversation"):
                monkeypatch.setattr(module, "start_conversation", runner.converse)
        return runner
    return install
