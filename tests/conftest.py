"""Test-wide setup: make the collection importable from this checkout.

Unit tests import ``ansible_collections.cedarbackup.peer`` from the working tree through a
symlinked collection root under ``.build/src``.  Integration tests drive the collection
as installed by ``make collection`` (``ANSIBLE_COLLECTIONS_PATH``), or install it
themselves when run outside make (see ``tests/integration/conftest.py``).
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
