# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Test support (private): the three modules' parameters as Ansible passes them, and small trees.

``SPECS`` holds each module's real argument spec (and the other ``AnsibleModule`` keyword
arguments), captured by running the module's ``main()`` with a fake ``AnsibleModule``;
``module_params`` builds a parameter dict from it, every option with its default filled in,
the way ``AnsibleModule`` hands them to ``_tasks``.

Also here: ``DATA``, the files of a typical collect dir, and the tree helpers the module
tests share (``fill``, ``snapshot``, ``mode_of``).
"""

import hashlib
import importlib
import os
import stat

from ansible_collections.cedarbackup.peer.tests.support import ansible_run

MODULES = ("cback_collect_indicator", "cback_stage", "cback_managed_action")


# ---------------------------------------------------------------------------
# The modules' real argument specs, parameters with their defaults
# ---------------------------------------------------------------------------


class _Captured(Exception):
    pass


def capture_module_spec(module_name):
    """Run the module's ``main()`` with a fake AnsibleModule that records its arguments.

    ``{"argument_spec": {...}, "kwargs": {...}}``.
    """
    module = importlib.import_module("ansible_collections.cedarbackup.peer.plugins.modules.%s" % module_name)
    captured = {}

    class FakeAnsibleModule(object):
        def __init__(self, argument_spec, **kwargs):
            captured["argument_spec"] = argument_spec
            captured["kwargs"] = kwargs
            raise _Captured()

    original = module.AnsibleModule
    module.AnsibleModule = FakeAnsibleModule
    try:
        try:
            module.main()
        except _Captured:
            pass
    finally:
        module.AnsibleModule = original
    assert "argument_spec" in captured, "%s.main() did not build an AnsibleModule" % module_name
    return captured


SPECS = {name: capture_module_spec(name) for name in MODULES}


def module_params(module_name, **overrides):
    """Parameters as AnsibleModule would pass them: every option, defaults filled in."""
    spec = SPECS[module_name]["argument_spec"]
    unknown = set(overrides) - set(spec)
    assert not unknown, "not options of %s: %s" % (module_name, sorted(unknown))
    params = {key: value.get("default") for key, value in spec.items()}
    params.update(overrides)
    return params


# ---------------------------------------------------------------------------
# Trees
# ---------------------------------------------------------------------------

# A collect dir: ``{name: (content, mode)}``, a dotfile and the collect indicator included.
DATA = {
    "etc.tar.gz": (os.urandom(3000), 0o644),
    "home.tar.gz": (os.urandom(5000), 0o600),
    ".hidden": (b"dotfile", 0o640),
    "cback.collect": (b"", 0o644),
}

mode_of = ansible_run.mode_of


def fill(directory, files=DATA):  # pylint: disable=dangerous-default-value  # read-only constant
    """Write ``{name: (bytes, mode)}`` (``DATA`` unless told) into ``directory`` (created)."""
    return ansible_run.fill(directory, files)


def snapshot(root, skip=(), details=True):
    """Everything observable about a tree: type, mode, ids, size, mtime, content hash.

    ``skip``: names of directories neither listed nor walked into.  ``details=False``:
    entries other than regular files (directories, links) by type, mode and ids alone.
    """
    found = {}
    for dirpath, dirnames, filenames in os.walk(str(root)):
        dirnames[:] = [name for name in dirnames if name not in skip]
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            info = os.lstat(path)
            record = (stat.S_IFMT(info.st_mode), stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid)
            if stat.S_ISREG(info.st_mode):
                with open(path, "rb") as handle:
                    record += (info.st_size, info.st_mtime_ns, hashlib.sha256(handle.read()).hexdigest())
            elif details:
                record += (info.st_size, info.st_mtime_ns, None)
            found[os.path.relpath(path, str(root))] = record
    return found
