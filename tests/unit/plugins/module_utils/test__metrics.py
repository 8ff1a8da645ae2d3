# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``_metrics``: the text exposition format written and read back, what a run changes, the file.

Whether node_exporter accepts what is written is tested with a real node_exporter in
``tests/integration/test_metrics.py``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import stat

import pytest

from ansible_collections.cedarbackup.peer.plugins.module_utils import _metrics as metrics

STAGE_PEER = "cback_stage_peer_last_success_timestamp_seconds"


def row(name, status, seconds=1.5, rc=None):
    return dict(name=name, host=name, type="local", status=status, files=0, bytes=0, seconds=seconds, message="", rc=rc)


def sample_lines(text):
    return [line for line in text.splitlines() if line and not line.startswith("#")]


# ---------------------------------------------------------------------------
# The format
# ---------------------------------------------------------------------------


def test_render_gives_help_and_type_once_per_family_then_its_samples_sorted():
    series = {
        "cback_stage_peer_ok": {("web2",): 0, ("web1",): 1},
        "cback_stage_last_run_timestamp_seconds": {(): 1764122400.25},
        "cback_stage_peer_bytes": {},
    }
    assert metrics.render(series) == "\n".join([
        "# HELP cback_stage_last_run_timestamp_seconds Start time of the last stage run, in seconds since the epoch.",
        "# TYPE cback_stage_last_run_timestamp_seconds gauge",
        "cback_stage_last_run_timestamp_seconds 1764122400.25",
        "# HELP cback_stage_peer_ok 1 when the peer's last attempt did not fail the run (staged or ignored), else 0.",
        "# TYPE cback_stage_peer_ok gauge",
        'cback_stage_peer_ok{peer="web1"} 1',
        'cback_stage_peer_ok{peer="web2"} 0',
    ]) + "\n"
    assert metrics.render({}) == ""


def test_every_family_is_named_as_prometheus_asks():
    for name, family in metrics.FAMILIES.items():
        assert name.startswith(("cback_stage_", "cback_managed_")), name
        assert family.type == "gauge" and family.help and "\n" not in family.help, name
        if "timestamp" in name or "duration" in name:
            assert name.endswith("_seconds"), name


@pytest.mark.parametrize("value", ['a"b', "back\\slash", "new\nline", "ünïcode", "", "{x=\"1\"}, y"])
def test_a_label_value_is_escaped_and_read_back(value):
    series = {"cback_managed_peer_ok": {("collect", value): 1}}
    text = metrics.render(series)
    assert len(sample_lines(text)) == 1, text
    assert metrics.parse(text) == (series, 0)


def test_values_are_read_back_as_written():
    series = {"cback_stage_peer_bytes": {("p",): 2 ** 53 + 2.0}, "cback_stage_peer_duration_seconds": {("p",): 0.1},
              "cback_stage_last_run_timestamp_seconds": {(): 1764122400.123456}, "cback_managed_peer_exit_code": {("purge", "p"): -9}}
    assert metrics.parse(metrics.render(series)) == (series, 0)


def test_parse_reads_what_other_writers_write_too():
    text = "\n".join([
        "# a comment", "",
        'cback_stage_peer_ok{ peer = "web1" , } 1 1764122400000',
        "cback_stage_last_run_peers\t3",
        'cback_managed_peer_ok{peer="db1",action="collect"} 1e0',
        "cback_stage_last_run_duration_seconds +.5",
    ])
    series, dropped = metrics.parse(text)
    assert dropped == 0
    assert series == {"cback_stage_peer_ok": {("web1",): 1.0}, "cback_stage_last_run_peers": {(): 3.0},
                      "cback_managed_peer_ok": {("collect", "db1"): 1.0}, "cback_stage_last_run_duration_seconds": {(): 0.5}}


@pytest.mark.parametrize("line", [
    "node_load1 0.5",                                         # another exporter's metric
    "cback_stage_peer_ok 1",                                  # a peer series without its peer
    'cback_stage_peer_ok{peer="a",other="b"} 1',              # labels that are not the family's
    'cback_stage_peer_ok{peer="a",peer="b"} 1',               # a label twice
    'cback_stage_last_run_peers{peer="a"} 1',                 # labels on a run-wide series
    'cback_stage_peer_ok{peer="a"} NaN',
    'cback_stage_peer_ok{peer="a"} +Inf',
    'cback_stage_peer_ok{peer="a"} 1e999',
    'cback_stage_peer_ok{peer="a"} 1_000',
    'cback_stage_peer_ok{peer="a} 1',
    'cback_stage_peer_ok{peer="a"}',
    "cback_stage_peer_ok{peer=a} 1",
    "\x00\xff garbage",
])
def test_parse_drops_and_counts_what_is_not_a_sample_of_its_families(line):
    series, dropped = metrics.parse("cback_stage_last_run_failed_peers 2\n%s\n" % line)
    assert (series, dropped) == ({"cback_stage_last_run_failed_peers": {(): 2.0}}, 1)


def test_parse_never_raises_on_bytes_that_are_not_text():
    text = os.urandom(4096).decode("utf-8", "replace")
    series, dropped = metrics.parse(text)
    assert isinstance(series, dict) and dropped >= 0


# ---------------------------------------------------------------------------
# What a run changes
# ---------------------------------------------------------------------------


def test_a_stage_run_sets_its_values_and_each_peers():
    rows = [row("web1", "staged", 2.0), row("web2", "failed", 0.5), row("lap", "ignored", 0.1), row("db", "not ready", 0.2)]
    series = metrics.stage_update({}, 1000.0, 12.5, rows, {"web1": (4, 4096), "web2": (1, 10)})
    assert series["cback_stage_last_run_timestamp_seconds"] == {(): 1000.0}
    assert series["cback_stage_last_run_duration_seconds"] == {(): 12.5}
    assert series["cback_stage_last_run_peers"] == {(): 4}
    assert series["cback_stage_last_run_failed_peers"] == {(): 2}
    assert series[STAGE_PEER] == {("web1",): 1000.0}
    assert series["cback_stage_peer_ok"] == {("web1",): 1, ("web2",): 0, ("lap",): 1, ("db",): 0}
    assert series["cback_stage_peer_last_run_timestamp_seconds"] == dict(((name,), 1000.0) for name in ("web1", "web2", "lap", "db"))
    assert series["cback_stage_peer_files"] == {("web1",): 4, ("web2",): 1, ("lap",): 0, ("db",): 0}
    assert series["cback_stage_peer_bytes"][("web1",)] == 4096
    assert series["cback_stage_peer_duration_seconds"][("web2",)] == 0.5


def test_a_peers_last_success_moves_only_when_a_run_stages_it():
    first = metrics.stage_update({}, 1000.0, 1, [row("a", "staged"), row("b", "staged")], {})
    # a run that fails a, then one that leaves it out (--limit b)
    second = metrics.stage_update(first, 2000.0, 1, [row("a", "failed"), row("b", "staged")], {})
    third = metrics.stage_update(second, 3000.0, 1, [row("b", "not ready")], {"b": (2, 20)})
    assert third[STAGE_PEER] == {("a",): 1000.0, ("b",): 2000.0}
    assert third["cback_stage_peer_ok"] == {("a",): 0, ("b",): 0}
    assert third["cback_stage_peer_last_run_timestamp_seconds"] == {("a",): 2000.0, ("b",): 3000.0}
    assert third["cback_stage_last_run_peers"] == {(): 1}
    assert first[STAGE_PEER] == {("a",): 1000.0, ("b",): 1000.0}, "the previous series are not changed in place"


def test_a_stage_run_keeps_the_managed_series_and_the_other_way_round():
    managed = metrics.managed_update({}, "collect", 500.0, 3, [row("db", "ok", rc=0)])
    both = metrics.stage_update(managed, 1000.0, 1, [row("a", "staged")], {})
    assert both["cback_managed_peer_ok"] == {("collect", "db"): 1}
    again = metrics.managed_update(both, "purge", 2000.0, 1, [row("db", "failed", rc=2)])
    assert again[STAGE_PEER] == {("a",): 1000.0}
    assert again["cback_managed_peer_ok"] == {("collect", "db"): 1, ("purge", "db"): 0}
    assert again["cback_managed_last_run_failed_peers"] == {("collect",): 0, ("purge",): 1}


def test_a_managed_peers_exit_code_is_its_last_commands():
    first = metrics.managed_update({}, "collect", 1000.0, 3, [row("db", "ok", rc=0), row("web", "failed", rc=3)])
    assert first["cback_managed_peer_exit_code"] == {("collect", "db"): 0, ("collect", "web"): 3}
    assert first["cback_managed_peer_last_success_timestamp_seconds"] == {("collect", "db"): 1000.0}
    # web's settings became invalid: no command ran, so no exit code; its last success stays unset
    second = metrics.managed_update(first, "collect", 2000.0, 1, [row("web", "failed", rc=None)])
    assert second["cback_managed_peer_exit_code"] == {("collect", "db"): 0}
    assert second["cback_managed_peer_ok"] == {("collect", "db"): 1, ("collect", "web"): 0}
    assert second["cback_managed_peer_last_success_timestamp_seconds"] == {("collect", "db"): 1000.0}


# ---------------------------------------------------------------------------
# The file
# ---------------------------------------------------------------------------


def stage_once(path, started=1000.0, rows=None):
    rows = rows if rows is not None else [row("a", "staged")]
    return metrics.write(str(path), lambda series: metrics.stage_update(series, started, 1.0, rows, {}))


def read(path):
    return metrics.parse(path.read_text())[0]


def test_write_makes_a_file_of_mode_0644_and_keeps_what_it_read(tmp_path):
    path = tmp_path / "cedarbackup.prom"
    assert stage_once(path) == (True, [])
    assert stat.S_IMODE(os.stat(str(path)).st_mode) == 0o644
    assert stage_once(path, 2000.0, [row("b", "staged")]) == (True, [])
    assert read(path)[STAGE_PEER] == {("a",): 1000.0, ("b",): 2000.0}
    assert sorted(os.listdir(str(tmp_path))) == ["cedarbackup.prom"], "no temporary file is left"


def test_a_corrupt_previous_file_is_dropped_with_a_warning_never_a_failure(tmp_path):
    path = tmp_path / "cedarbackup.prom"
    path.write_bytes(b'cback_stage_peer_last_success_timestamp_seconds{peer="old"} 500\nnode_load1 2\n\xff\xfe{{{\n')
    written, warnings = stage_once(path)
    assert written is True
    assert warnings == ["Metrics file %s: 2 lines of the previous file are not this collection's metrics or could not be read; "
                        "left out of the new file." % path]
    assert read(path)[STAGE_PEER] == {("old",): 500.0, ("a",): 1000.0}
    assert "node_load1" not in path.read_text()


def test_a_previous_file_too_large_is_not_read(tmp_path, monkeypatch):
    path = tmp_path / "cedarbackup.prom"
    path.write_text('cback_stage_peer_last_success_timestamp_seconds{peer="old"} 500\n' * 10)
    monkeypatch.setattr(metrics, "MAX_BYTES", 100)
    written, warnings = stage_once(path)
    assert written and len(warnings) == 1 and "holds more than 100 bytes" in warnings[0] and "start afresh" in warnings[0]
    assert read(path)[STAGE_PEER] == {("a",): 1000.0}


def test_a_symlink_in_place_of_the_file_is_replaced_never_followed(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text('cback_stage_peer_last_success_timestamp_seconds{peer="leak"} 1\n')
    (tmp_path / "metrics").mkdir()
    path = tmp_path / "metrics" / "cedarbackup.prom"
    os.symlink(str(secret), str(path))
    written, warnings = stage_once(path)
    assert written and "not a regular file" in warnings[0]
    assert not os.path.islink(str(path)) and read(path)[STAGE_PEER] == {("a",): 1000.0}
    assert secret.read_text() == 'cback_stage_peer_last_success_timestamp_seconds{peer="leak"} 1\n'


def test_a_hard_link_in_place_of_the_file_is_not_read_and_replaced(tmp_path):
    other = tmp_path / "other"
    other.write_text('cback_stage_peer_last_success_timestamp_seconds{peer="leak"} 1\n')
    path = tmp_path / "cedarbackup.prom"
    os.link(str(other), str(path))
    written, warnings = stage_once(path)
    assert written and "2 hard links" in warnings[0]
    assert read(path)[STAGE_PEER] == {("a",): 1000.0}
    assert "leak" in other.read_text()


def test_a_missing_directory_is_a_warning_and_nothing_is_created(tmp_path):
    path = tmp_path / "missing" / "cedarbackup.prom"
    written, warnings = stage_once(path)
    assert written is False
    assert warnings == ["Metrics file %s not written: cannot open its directory: No such file or directory." % path]
    assert not (tmp_path / "missing").exists()


def test_a_directory_in_place_of_the_file_is_a_warning(tmp_path):
    path = tmp_path / "cedarbackup.prom"
    path.mkdir()
    written, warnings = stage_once(path)
    assert written is False
    assert "is a directory, not a regular file" in warnings[0] and "not written" in warnings[-1], warnings
    assert path.is_dir() and os.listdir(str(tmp_path)) == ["cedarbackup.prom"]


def test_a_file_that_cannot_be_written_leaves_the_previous_one(tmp_path):
    # a name the directory takes, but whose temporary file's name is too long
    path = tmp_path / ("m" * 250)
    path.write_text('cback_stage_peer_last_success_timestamp_seconds{peer="old"} 500\n')
    written, warnings = stage_once(path)
    assert written is False
    assert warnings == ["Metrics file %s not written: File name too long; the previous file, if any, is left as it was." % path]
    assert path.read_text() == 'cback_stage_peer_last_success_timestamp_seconds{peer="old"} 500\n'
    assert os.listdir(str(tmp_path)) == [path.name]


def test_a_run_waits_for_another_writer_and_gives_up_with_a_warning(tmp_path, monkeypatch):
    import fcntl

    path = tmp_path / "cedarbackup.prom"
    monkeypatch.setattr(metrics, "LOCK_SECONDS", 0.2)
    holder = os.open(str(tmp_path), os.O_RDONLY)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)
        written, warnings = stage_once(path)
    finally:
        os.close(holder)
    assert written is False and "held the lock" in warnings[0], warnings
    assert not path.exists()


# ---------------------------------------------------------------------------
# docs/monitoring.md
# ---------------------------------------------------------------------------


def test_the_monitoring_page_lists_every_family_and_its_rules_use_only_them():
    import re
    from pathlib import Path

    import yaml

    text = (Path(__file__).resolve().parents[4] / "docs" / "monitoring.md").read_text()
    for name, family in metrics.FAMILIES.items():
        row = [line for line in text.splitlines() if line.startswith("| `%s` |" % name)]
        assert len(row) == 1, name
        assert row[0].split("|")[2].strip() == ", ".join("`%s`" % label for label in family.labels), row
    blocks = [block for block in re.findall(r"```yaml\n(.*?)```", text, re.S) if "groups:" in block]
    assert len(blocks) == 1
    rules = yaml.safe_load(blocks[0])["groups"][0]["rules"]
    assert len(rules) >= 4
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"} and rule["alert"] and rule["expr"], rule
        for name in re.findall(r"\bcback_[a-z_]+", rule["expr"]):
            assert name in metrics.FAMILIES, (rule["alert"], name)
