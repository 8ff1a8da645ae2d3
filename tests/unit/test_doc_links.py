# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Every relative link of the project's Markdown (README, docs/, the roles' READMEs) leads to a
file that exists and, with ``#anchor``, to a heading of that file (GitHub's anchor rules)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
LINK = re.compile(r"\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6} (.*)$")


def markdown_files():
    found = [os.path.join(ROOT, "README.md")]
    found += sorted(os.path.join(ROOT, "docs", name) for name in os.listdir(os.path.join(ROOT, "docs")) if name.endswith(".md"))
    roles = os.path.join(ROOT, "roles")
    found += sorted(os.path.join(roles, role, "README.md") for role in os.listdir(roles) if os.path.isfile(os.path.join(roles, role, "README.md")))
    return found


def anchors(path):
    """The anchors GitHub gives the headings of ``path`` (outside code blocks): lower case, punctuation
    but ``-`` and ``_`` dropped, spaces as ``-``, ``-1``, ``-2`` ... after repeats."""
    found, seen, fenced = set(), {}, False
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("```"):
                fenced = not fenced
            match = None if fenced else HEADING.match(line.rstrip("\n"))
            if match:
                slug = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower()).replace(" ", "-")
                count = seen.get(slug, 0)
                seen[slug] = count + 1
                found.add(slug if count == 0 else "%s-%d" % (slug, count))
    return found


def test_anchor_rules():
    assert "the-json-summary-and-the-days-history" in anchors(os.path.join(ROOT, "docs", "stage-run.md"))


@pytest.mark.parametrize("path", markdown_files(), ids=lambda path: os.path.relpath(path, ROOT))
def test_relative_links_lead_somewhere(path):
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    broken = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):
            continue  # https:, mailto: ...
        name, _sep, anchor = target.partition("#")
        destination = os.path.normpath(os.path.join(os.path.dirname(path), name)) if name else path
        if not os.path.exists(destination):
            broken.append("%s (no such file)" % target)
        elif anchor and destination.endswith(".md") and anchor not in anchors(destination):
            broken.append("%s (no such heading)" % target)
    assert not broken, broken
