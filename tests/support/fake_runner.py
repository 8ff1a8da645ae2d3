# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Test support: the one fake ``run_command`` of the unit tests.

No ssh, scp, sftp or cback3 command runs: ``FakeRunner`` stands in for ``run_command``
(``tests/unit/conftest.py``'s ``fake_runner`` fixture puts it in place), records every
argv and answers with scripted results; its ``converse`` stands in for
``start_conversation`` (no conversation unless a subclass makes one).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ansible_collections.cedarbackup.peer.plugins.module_utils._command import EXEC_FAILED, CommandResult


class Call(object):
    """One recorded command.

    ``raw``: the argv as given; ``argv``: in the runner's ``form`` (``raw`` unless told, e.g.
    ``tests.support.argv.cedar_form``); ``inner``: the argv as given too (a command is never
    wrapped); ``user``: the local user it runs as (``None``: the current one); ``timeout`` and
    the other keyword arguments (``kwargs``) of the call.
    """

    def __init__(self, argv, timeout, kwargs, form=list):
        self.raw = list(argv)
        self.argv = form(self.raw)
        self.timeout = timeout
        self.kwargs = kwargs
        self.inner = list(self.raw)
        self.user = kwargs.get("user")

    @property
    def program(self):
        """The base name of the program really run (``scp``, ``ssh``, ``cback3``, ...)."""
        return os.path.basename(self.inner[0])

    def __repr__(self):
        return "Call(%r, timeout=%r)" % (self.argv, self.timeout)


class FakeRunner(object):
    """A fake ``run_command``: records every call; answers from a queue of responses
    (``respond``), then with the default response given to the constructor (rc 0, no output).

    A response's ``effect`` is called with the ``Call`` before the answer (to create files
    the way scp would, say); ``raises`` is raised instead of answering.  ``forbid``: a
    message (``%r``: the argv); every call is recorded and fails with ``AssertionError``.
    """

    call_type = Call

    def __init__(self, rc=0, stdout="", stderr="", timed_out=False, form=list, forbid=None):
        self.calls = []
        self.responses = []
        self.default = (rc, stdout, stderr, None, None, timed_out)
        self.form = form
        self.forbid = forbid

    def respond(self, rc=0, stdout="", stderr="", effect=None, raises=None, timed_out=False):
        self.responses.append((rc, stdout, stderr, effect, raises, timed_out))
        return self

    def __call__(self, argv, timeout=None, **kwargs):
        call = self.call_type(argv, timeout, kwargs, self.form)
        self.calls.append(call)
        if self.forbid is not None:
            raise AssertionError(self.forbid % (call.raw,))
        return self.answer(call)

    def answer(self, call):
        """The ``CommandResult`` of ``call``: the next scripted response, else the default."""
        rc, stdout, stderr, effect, raises, timed_out = self.responses.pop(0) if self.responses else self.default
        if effect is not None:
            effect(call)
        if raises is not None:
            raise raises
        return self.result(call, rc, stdout, stderr, timed_out)

    def converse(self, argv, timeout=None, **kwargs):
        """A fake ``start_conversation``: by default no conversation starts (what a missing
        ``sftp`` gives), so the code under test runs its separate commands."""
        return CommandResult(list(argv), EXEC_FAILED, "", "%s: no conversation in this test\n" % argv[0], False)

    @staticmethod
    def result(call, rc, stdout="", stderr="", timed_out=False):
        return CommandResult(list(call.raw), rc, stdout, stderr, timed_out)

    @property
    def argvs(self):
        return [call.argv for call in self.calls]

    @property
    def timeouts(self):
        return [call.timeout for call in self.calls]
