"""Test-wide setup: make the collection importable from this checkout.

Unit tests import ``ansible_collections.cedarbackup.peer`` from the working tree through a
symlinked collection root under ``.build/src``.  Integration tests drive the collection
as installed by ``make collection`` (``ANSIBLE_COLLECTIONS_PATH``), or install it
themselves when run outside make (the ``installed_collections`` fixture below).
"""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC_COLLECTIONS = ROOT / ".build" / "src"


def _link_source_collection():
    link = SRC_COLLECTIONS / "ansible_collections" / "cedarbackup" / "peer"
    if not link.is_symlink() or os.readlink(link) != str(ROOT):
        link.parent.mkdir(parents=True, exist_ok=True)
        tmp = link.with_name("peer.tmp-%d" % os.getpid())
        os.symlink(str(ROOT), str(tmp))
        os.replace(str(tmp), str(link))


_link_source_collection()
if str(SRC_COLLECTIONS) not in sys.path:
    sys.path.insert(0, str(SRC_COLLECTIONS))


import subprocess  # noqa: E402

import pytest  # noqa: E402

INSTALLED = ROOT / ".build" / "collections"


def _newest_source_mtime():
    newest = (ROOT / "galaxy.yml").stat().st_mtime
    for top in ("plugins", "meta", "roles", "playbooks"):
        for path in (ROOT / top).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts:
                newest = max(newest, path.stat().st_mtime)
    return newest


@pytest.fixture(scope="session")
def installed_collections():
    """Collections path holding cedarbackup.peer built from this checkout.

    ``make test`` builds and installs it first (``make collection``); run alone, the
    fixture rebuilds it when it is missing or older than the sources, so that the
    artifact under test is never stale.
    """
    manifest = INSTALLED / "ansible_collections" / "cedarbackup" / "peer" / "MANIFEST.json"
    if not manifest.exists() or manifest.stat().st_mtime < _newest_source_mtime():
        subprocess.run(["make", "-s", "collection"], cwd=str(ROOT), check=True, timeout=600, stdout=subprocess.DEVNULL)
    assert manifest.exists()
    return INSTALLED
