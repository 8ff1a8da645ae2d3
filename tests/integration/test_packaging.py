"""The collection as it is shipped: galaxy.yml, the built artifact, the changelog, and what
ansible-builder makes of the collection for an execution environment.

The artifact is built from the working tree here, with the command of ``make collection``,
so that it is never stale. No container engine is needed: ``ansible-builder create`` only
writes the build context; the galaxy stage (``ansible-galaxy collection install`` from the
context's ``_build/requirements.yml``) and the builder stage's introspection (the context's
``scripts/introspect.py``) are then run here as the image build would run them.
"""

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml
from bindep.depends import Depends

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
GALAXY = yaml.safe_load((ROOT / "galaxy.yml").read_text())
VERSION = GALAXY["version"]
TARBALL_NAME = "cedarbackup-peer-%s.tar.gz" % VERSION
REPOSITORY = "https://github.com/cedarbackup/cedarbackup.peer"
OPENSSH_BINDEP = ["openssh-client [platform:dpkg]", "openssh-clients [platform:rpm]"]


def run(argv, cwd=ROOT, env=None, timeout=120):
    result = subprocess.run(
        [str(a) for a in argv], cwd=str(cwd), env=env, stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=timeout, check=False,
    )
    assert result.returncode == 0, "%s failed (%d):\n%s\n%s" % (
        " ".join(str(a) for a in argv), result.returncode, result.stdout, result.stderr)
    return result


@pytest.fixture(scope="module")
def tarball(tmp_path_factory):
    """The collection artifact built from the working tree, as ``make collection`` builds it."""
    out = tmp_path_factory.mktemp("artifact")
    run([VENV_BIN / "ansible-galaxy", "collection", "build", "--force", "--output-path", out, "."])
    path = out / TARBALL_NAME
    assert path.is_file(), sorted(p.name for p in out.iterdir())
    return path


@pytest.fixture(scope="module")
def members(tarball):
    with tarfile.open(str(tarball)) as tar:
        return {m.name.rstrip("/"): m for m in tar.getmembers()}


def read_member(tarball, name):
    with tarfile.open(str(tarball)) as tar:
        return tar.extractfile(name).read()


# -- galaxy.yml ---------------------------------------------------------------------------

def test_galaxy_metadata():
    for key in ("namespace", "name", "version", "readme", "authors", "description", "license",
                "tags", "repository", "documentation", "homepage", "issues", "build_ignore"):
        assert GALAXY.get(key), "galaxy.yml has no %s" % key
    assert (GALAXY["namespace"], GALAXY["name"]) == ("cedarbackup", "peer")
    assert GALAXY["repository"] == REPOSITORY
    assert GALAXY["homepage"] == REPOSITORY
    assert GALAXY["issues"] == REPOSITORY + "/issues"
    assert GALAXY["documentation"].startswith(REPOSITORY + "/")
    assert GALAXY["license"] == ["GPL-3.0-or-later"]
    assert (ROOT / GALAXY["readme"]).is_file()
    assert all(isinstance(a, str) and a.strip() for a in GALAXY["authors"])
    # Galaxy tags: lowercase alphanumeric, at most 64 characters, at most 20 of them.
    assert len(GALAXY["tags"]) <= 20
    for tag in GALAXY["tags"]:
        assert re.match(r"^[a-z][a-z0-9]{0,63}$", tag), tag
    # The integration tests import tests/support from the installed artifact.
    for pattern in GALAXY["build_ignore"]:
        assert not fnmatch.fnmatch("tests/support/__init__.py", pattern), pattern
        assert not fnmatch.fnmatch("tests", pattern), pattern


def test_ansible_lint_finds_nothing_in_galaxy_yml():
    result = subprocess.run(
        [str(VENV_BIN / "ansible-lint"), "--nocolor", "-f", "codeclimate", "galaxy.yml"],
        cwd=str(ROOT), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120, check=False,
    )
    findings = [f["check_name"] for f in json.loads(result.stdout or "[]")]
    assert findings == [], result.stderr
    assert result.returncode == 0, result.stderr


# -- the artifact -------------------------------------------------------------------------

SHIPPED = [
    "MANIFEST.json", "FILES.json", "README.md", "LICENSE", "CHANGELOG.md", "bindep.txt",
    "meta/runtime.yml", "meta/execution-environment.yml",
    "changelogs/changelog.yaml", "changelogs/config.yaml",
    "roles/stage/README.md", "roles/managed/README.md",
    "docs/execution-environment.md", "docs/execution-environment.yml",
    "tests/conftest.py", "tests/support/__init__.py",
]
LEFT_OUT = [
    "bench", "demo", ".ci", ".git", ".gitignore", ".ansible-lint", "requirements", "Makefile",
    "pytest.ini", "extensions/molecule", ".build", ".venv", "changelogs/.plugin-cache.yaml",
]


def _ignored(path):
    """Whether a build_ignore pattern of galaxy.yml matches the path or a directory above it."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    return any(fnmatch.fnmatch(p, pattern) for p in prefixes for pattern in GALAXY["build_ignore"])


def test_artifact_ships_the_packaging_files(tarball, members):
    missing = [name for name in SHIPPED if name not in members]
    assert missing == []
    assert read_member(tarball, "LICENSE") == (ROOT / "LICENSE").read_bytes()
    assert read_member(tarball, "LICENSE").startswith(b"                    GNU GENERAL PUBLIC LICENSE\n")
    assert read_member(tarball, "CHANGELOG.md") == (ROOT / "CHANGELOG.md").read_bytes()
    info = json.loads(read_member(tarball, "MANIFEST.json"))["collection_info"]
    for key in ("version", "repository", "documentation", "homepage", "issues", "tags", "authors", "license"):
        assert info[key] == GALAXY[key], key


def test_artifact_leaves_out_what_build_ignore_names(members):
    shipped_ignored = sorted(name for name in members if _ignored(name))
    assert shipped_ignored == []
    for name in LEFT_OUT:
        assert name not in members and not any(m.startswith(name + "/") for m in members), name
    assert not [m for m in members if m.endswith(".whl")]


def test_artifact_ships_every_tracked_file_not_ignored(members):
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    tracked = run(["git", "ls-files", "-z"]).stdout.split("\0")
    # galaxy.yml itself becomes MANIFEST.json.
    expected = sorted(p for p in tracked if p and p != "galaxy.yml" and (ROOT / p).is_file() and not _ignored(p))
    assert [p for p in expected if p not in members] == []


# -- execution environments ---------------------------------------------------------------

def test_collection_declares_its_system_requirements():
    meta = yaml.safe_load((ROOT / "meta" / "execution-environment.yml").read_text())
    assert meta["version"] == 1
    assert meta["dependencies"] == {"system": "bindep.txt"}  # no python requirements
    depends = Depends((ROOT / meta["dependencies"]["system"]).read_text())
    assert [rule[0] for rule in depends.active_rules(["platform:dpkg", "default"])] == ["openssh-client"]
    assert [rule[0] for rule in depends.active_rules(["platform:rpm", "default"])] == ["openssh-clients"]


def test_execution_environment_build_context(tarball, tmp_path):
    # The repository's layout: the definition under docs/, the tarball of `make collection`
    # under .build/ (the definition copies it from ../.build).
    (tmp_path / "docs").mkdir()
    definition = tmp_path / "docs" / "execution-environment.yml"
    shutil.copy(str(ROOT / "docs" / "execution-environment.yml"), str(definition))
    (tmp_path / ".build").mkdir()
    shutil.copy(str(tarball), str(tmp_path / ".build" / TARBALL_NAME))
    context = tmp_path / "context"

    run([VENV_BIN / "ansible-builder", "create", "-f", definition, "-c", context,
         "--output-filename", "Containerfile"])

    spec = yaml.safe_load(definition.read_text())
    assert spec["version"] == 3
    containerfile = (context / "Containerfile").read_text()
    assert "FROM $EE_BASE_IMAGE AS base" in containerfile
    assert "ansible-galaxy collection install $ANSIBLE_GALAXY_CLI_COLLECTION_OPTS -r requirements.yml" in containerfile
    assert "/output/scripts/introspect.py introspect" in containerfile
    build = context / "_build"
    assert (build / "collections" / TARBALL_NAME).read_bytes() == tarball.read_bytes()
    requirements = yaml.safe_load((build / "requirements.yml").read_text())
    assert requirements == {"collections": [{"name": "collections/" + TARBALL_NAME, "type": "file"}]}

    # The galaxy stage: WORKDIR /build (the context's _build), install from requirements.yml
    # into /usr/share/ansible/collections, the image's collections path (here, the only one:
    # the collection installed by `make collection` must not count as already there).
    collections = tmp_path / "usr-share-ansible" / "collections"
    env = dict(os.environ, ANSIBLE_GALAXY_DISABLE_GPG_VERIFY="1", ANSIBLE_COLLECTIONS_PATH=str(collections))
    run([VENV_BIN / "ansible-galaxy", "collection", "install", "-r", "requirements.yml",
         "--collections-path", collections], cwd=build, env=env)
    installed = collections / "ansible_collections" / "cedarbackup" / "peer"
    assert json.loads((installed / "MANIFEST.json").read_text())["collection_info"]["version"] == VERSION

    # The builder stage: introspection of the installed collections, with the script the
    # image build runs; its bindep file is what the final stage installs.
    bindep_out = tmp_path / "bindep.txt"
    pip_out = tmp_path / "requirements.txt"
    run([sys.executable, build / "scripts" / "introspect.py", "introspect", collections,
         "--write-bindep=%s" % bindep_out, "--write-pip=%s" % pip_out])
    lines = [line for line in bindep_out.read_text().splitlines() if line]
    assert lines == [req + "  # from collection cedarbackup.peer" for req in OPENSSH_BINDEP]
    assert not pip_out.exists()  # written only when a collection has python requirements
    depends = Depends(bindep_out.read_text())
    # The example's base image is Fedora based (rpm).
    assert [rule[0] for rule in depends.active_rules(["platform:rpm", "default"])] == ["openssh-clients"]


# -- the changelog --------------------------------------------------------------------------

def test_changelog_lint():
    for argv in (["lint"], ["lint-changelog-yaml", "changelogs/changelog.yaml"]):
        result = run([VENV_BIN / "antsibull-changelog"] + argv)
        assert result.stdout.strip() == "", result.stdout


def test_changelog_has_the_galaxy_version():
    changes = yaml.safe_load((ROOT / "changelogs" / "changelog.yaml").read_text())
    assert VERSION in changes["releases"]
    heading = "## v" + VERSION.replace(".", "\\.")
    assert heading in (ROOT / "CHANGELOG.md").read_text().splitlines()


def test_changelog_md_is_current(tmp_path):
    out = tmp_path / "CHANGELOG.md"
    run([VENV_BIN / "antsibull-changelog", "generate", "--output", out, "--output-format", "md"])
    assert out.read_text() == (ROOT / "CHANGELOG.md").read_text(), (
        "CHANGELOG.md is not what antsibull-changelog generates from changelogs/changelog.yaml: "
        "run `antsibull-changelog generate`")


# -- documentation links ----------------------------------------------------------------------

LINKED_FROM = ["README.md", "roles/stage/README.md", "roles/managed/README.md", "docs/execution-environment.md",
               "docs/cback3-behaviour.md"]


@pytest.mark.parametrize("document", LINKED_FROM)
def test_relative_links_resolve(document):
    path = ROOT / document
    targets = re.findall(r"\]\(([^)\s]+)\)", path.read_text())
    broken = []
    for target in targets:
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue
        if not (path.parent / target.split("#", 1)[0]).exists():
            broken.append(target)
    assert broken == []
