# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run the ``cedarbackup.peer.cback3_conf`` inventory plugin in this process, as Ansible does.

Loading a plugin by its FQCN needs Ansible's collection finder (``init_plugin_loader``), which
serves every ``ansible_collections.*`` import while it is installed.  Other unit tests import
the collection as a plain package, so the finder is installed for one test module at a time:
the ``ansible_collections`` modules imported so far are set aside, and put back (and the finder
removed) when the module is done.  The collection is this checkout (``.build/src``, see
``tests/conftest.py``).
"""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[4]
SRC_COLLECTIONS = ROOT / ".build" / "src"


def _collection_modules():
    return dict((name, module) for name, module in sys.modules.items()
                if name == "ansible_collections" or name.startswith("ansible_collections."))


@pytest.fixture(scope="module")
def ansible_plugins():
    """Ansible's plugin loaders, with the collection finder over this checkout installed."""
    from ansible.plugins.loader import init_plugin_loader
    from ansible.utils.collection_loader import AnsibleCollectionConfig
    from ansible.utils.collection_loader._collection_finder import _AnsibleCollectionFinder

    if AnsibleCollectionConfig.collection_finder is not None:  # someone else installed one: use it as it is
        yield
        return
    saved = _collection_modules()
    for name in saved:
        del sys.modules[name]
    init_plugin_loader([str(SRC_COLLECTIONS)])
    try:
        yield
    finally:
        _AnsibleCollectionFinder._remove()
        for name in _collection_modules():
            del sys.modules[name]
        sys.modules.update(saved)
