# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``_paths``: path encoding (``CedarBackup3.util.encodePath``), joining, single names."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import sys
import types

import pytest

from ansible_collections.cedarbackup.peer.plugins.module_utils import _paths


@pytest.mark.parametrize(
    "value, expected",
    [
        (None, None),
        ("/tmp/x", "/tmp/x"),
        ("", ""),
        (b"/tmp/x", "/tmp/x"),
        (b"", ""),
        ("/tmp/caf\u00e9", "/tmp/caf\u00e9"),
        ("/tmp/caf\u00e9".encode("utf-8"), "/tmp/caf\u00e9"),
    ],
)
def test_encode_path_table(value, expected):
    result = _paths.encode_path(value)
    assert result == expected
    if expected is not None:
        assert isinstance(result, str)


def test_encode_path_undecodable_bytes_round_trip():
    raw = b"/tmp/coll\xffect\xfe"
    text = _paths.encode_path(raw)
    assert isinstance(text, str)
    assert text == os.fsdecode(raw)
    assert "\udcff" in text
    assert os.fsencode(text) == raw
    assert text.encode(sys.getfilesystemencoding(), "surrogateescape") == raw


def test_encode_path_undecodable_bytes_name_is_usable(tmp_path):
    raw = os.fsencode(str(tmp_path)) + b"/dir\xff"
    os.mkdir(raw)
    text = _paths.encode_path(raw)
    assert os.path.isdir(text)
    assert os.fsencode(os.listdir(str(tmp_path))[0]) == b"dir\xff"


def test_encode_path_decoding_error_is_value_error(monkeypatch):
    fake_sys = types.SimpleNamespace(getfilesystemencoding=lambda: "utf-16-le", getdefaultencoding=lambda: "utf-8")
    monkeypatch.setattr(_paths, "sys", fake_sys)
    with pytest.raises(ValueError) as info:
        _paths.encode_path(b"/")  # one byte: truncated UTF-16, not recoverable by surrogateescape
    assert str(info.value).startswith("Path could not be safely encoded as utf-16-le: ")


@pytest.mark.parametrize(
    "parts, expected",
    [
        (("/a",), "/a"),
        (("/a", "b"), "/a/b"),
        (("/a/", "b"), "/a/b"),
        (("/a", "b", "c"), "/a/b/c"),
        (("/a", "/b"), "/b"),
        (("/a", ""), "/a/"),
        (("a\\b", "c"), "a/b/c"),
        (("/coll", "cback.collect"), "/coll/cback.collect"),
        (("/my coll", "x y"), "/my coll/x y"),
    ],
)
def test_path_join_table(parts, expected):
    assert _paths.path_join(*parts) == expected


@pytest.mark.parametrize(
    "value, expected",
    [
        ("peer01", True),
        ("a.b", True),
        (".hidden", True),
        ("...", True),
        ("with space", True),
        ("-dash", True),
        ("caf\u00e9", True),
        ("", False),
        (".", False),
        ("..", False),
        ("a/b", False),
        ("/", False),
        ("/abs", False),
        ("trailing/", False),
        ("a\0b", False),
        (None, False),
        (b"bytes", False),
        (5, False),
    ],
)
def test_is_single_name_table(value, expected):
    assert _paths.is_single_name(value) is expected
