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


def stale_files():
    """Collection sources that differ from (or are missing in) the installed copy."""
    installed = INSTALLED / "ansible_collections" / "cedarbackup" / "peer"
    stale = []
    for top in ("plugins", "meta", "roles", "playbooks"):
        for source in sorted((ROOT / top).rglob("*")):
            if not source.is_file() or "__pycache__" in source.parts:
                continue
            copy = installed / source.relative_to(ROOT)
            if not copy.is_file() or copy.read_bytes() != source.read_bytes():
                stale.append(str(source.relative_to(ROOT)))
    return stale


@pytest.fixture(scope="session")
def installed_collections():
    """Collections path holding cedarbackup.peer built from this checkout.

    ``make test`` builds and installs it first (``make collection``); run alone, the
    fixture rebuilds it when it is missing or differs from the sources, so that the
    artifact under test is never stale.
    """
    manifest = INSTALLED / "ansible_collections" / "cedarbackup" / "peer" / "MANIFEST.json"
    if not manifest.is_file() or stale_files():
        result = subprocess.run(
            ["make", "-s", "collection"], cwd=str(ROOT), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600, check=False,
        )
        assert result.returncode == 0, result.stdout.decode(errors="replace")
    assert manifest.is_file()
    assert stale_files() == []
    return INSTALLED
