# cedarbackup.peer — developer entry points.
#   make demo   a stage run (the cedarbackup.peer.stage playbook) over generated local peers
#   make test   install what the tests need, then run every test
#   make bench  benchmark the stage run against cback3 and plain tools (root; not in make test)
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON      ?= python3
VENV        := .venv
VPY         := $(VENV)/bin/python
BUILD       := .build
COLLECTIONS := $(abspath $(BUILD)/collections)
VERSION     := $(shell sed -n 's/^version: *//p' galaxy.yml)
TARBALL     := $(BUILD)/cedarbackup-peer-$(VERSION).tar.gz
APT_PACKAGES := openssh-server openssh-client cedar-backup3 python3 passwd strace util-linux prometheus-node-exporter systemd
PYTEST_ARGS ?=
# Oldest supported ansible-core: the playbook and ansible-doc tests run with it too.
COMPAT_VENV := .venv-2.16

export ANSIBLE_COLLECTIONS_PATH := $(COLLECTIONS)
export ANSIBLE_COLLECTIONS_SCAN_SYS_PATH := false

.PHONY: help demo test bench test-compat system-deps venv collection unit integration molecule docs-check changelog-lint lint sanity clean

help:
	@echo "make demo   - a stage run over three generated local peers, twice, and the staging tree"
	@echo "make test   - install dependencies, then run unit and integration tests"
	@echo "make sanity - ansible-test sanity on the source tree (part of make test)"
	@echo "make bench  - benchmark stage runs against cback3 and plain tools, as root (BENCH_ARGS=\"--quick --only c\")"

# Debian packages the integration tests drive for real (sshd peers, cback3, node_exporter;
# systemd-analyze verifies the systemd units of docs/migrate-from-cback3.md).
system-deps:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "make test needs root to install:$$missing" >&2; exit 1; fi; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -q && apt-get install -y -q --no-install-recommends $$missing; \
	fi

$(VPY): requirements/test.txt
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --disable-pip-version-check -r requirements/test.txt
	@touch $(VPY)

venv: $(VPY)

# Build the collection artifact and install it where the tests and the demo find it.
collection: $(VPY)
	@rm -rf $(COLLECTIONS) $(BUILD)/*.tar.gz && mkdir -p $(BUILD)
	$(VENV)/bin/ansible-galaxy collection build --force --output-path $(BUILD) . >/dev/null
	$(VENV)/bin/ansible-galaxy collection install --force -p $(COLLECTIONS) $(TARBALL) >/dev/null
	@echo "installed $(TARBALL) into $(COLLECTIONS)"

DEMO_DIR := $(abspath $(BUILD)/demo)

# The stage playbook over a generated pool of local peers, run twice: the second run
# finds everything staged and changes nothing.
demo: collection
	@rm -rf $(DEMO_DIR) && mkdir -p $(DEMO_DIR)
	CBACK_DEMO_DIR=$(DEMO_DIR) $(VENV)/bin/ansible-playbook -i localhost, demo/prepare.yml \
	  -e ansible_connection=local -e ansible_python_interpreter=$(abspath $(VPY))
	CBACK_DEMO_DIR=$(DEMO_DIR) $(VENV)/bin/ansible-playbook -i demo/inventory.yml cedarbackup.peer.stage
	@echo "== second run, same day: nothing to copy =="
	CBACK_DEMO_DIR=$(DEMO_DIR) $(VENV)/bin/ansible-playbook -i demo/inventory.yml cedarbackup.peer.stage | sed -n '/PLAY RECAP/,$$p'
	@echo "== the staging tree (files go to backup media from the daily directory) =="
	@cd $(DEMO_DIR)/stage && find . -mindepth 1 | sort | while read -r p; do \
	  if [ -d "$$p" ]; then printf '%s %-15s %8s  %s/\n' "$$(stat -c %a "$$p")" "$$(stat -c %U:%G "$$p")" "" "$${p#./}"; \
	  else printf '%s %-15s %8s  %s\n' "$$(stat -c %a "$$p")" "$$(stat -c %U:%G "$$p")" "$$(stat -c %s "$$p")" "$${p#./}"; fi; done
	@echo "summary: $$(ls $(DEMO_DIR)/stage/*/*/*.stage-summary.json) (the day's runs: $$(ls -d $(DEMO_DIR)/stage/*/*/*.stage-runs)/)"
	@echo "== the metrics file $(DEMO_DIR)/metrics/cedarbackup.prom, its samples =="
	@grep -v '^#' $(DEMO_DIR)/metrics/cedarbackup.prom

unit: collection
	$(VPY) -m pytest tests/unit $(PYTEST_ARGS)

integration: system-deps collection
	$(VPY) -m pytest tests/integration $(PYTEST_ARGS)

# Molecule scenarios stage and managed (extensions/molecule): real sshd peers on loopback,
# real cback3; molecule installs nothing (dependency and prerun are off in molecule.yml).
molecule: system-deps collection
	cd extensions && export PATH="$(abspath $(VENV))/bin:$$PATH" && \
	  ../$(VENV)/bin/molecule test -s stage && ../$(VENV)/bin/molecule test -s managed

changelog-lint: $(VPY)
	$(VENV)/bin/antsibull-changelog lint

# ansible-lint, production profile (.ansible-lint), on the roles, playbooks and the demo.
# From the repository root, as a contributor runs it (ansible-lint installs the collection
# into .ansible/ itself; .ansible-lint has the profile and the excluded paths).
lint: collection
	env -u ANSIBLE_COLLECTIONS_PATH -u ANSIBLE_COLLECTIONS_SCAN_SYS_PATH $(VENV)/bin/ansible-lint

# docs/modules.md is generated from the modules' own documentation: it must be current.
docs-check: collection
	$(VPY) docs/generate_module_docs.py --check

# ansible-test sanity, every test that applies, on the source tree as git sees it (plugins,
# roles, tests, bench, docs, ...; the installed copy lacks bench and the build files).
# ansible-test wants the content under ansible_collections/<namespace>/<name>: a symlink to
# this tree, named as the content root (ANSIBLE_TEST_CONTENT_ROOT: from the physical path
# ansible-test would find no collection layout). --local: no containers; ansible-test still
# makes one virtual environment per sanity test (pinned tools from the package index) under
# HOME=$(SANITY_HOME), bootstrapping pip with its cached get_pip_<pip version>.py: a
# stand-in (requirements/ansible_test_get_pip.py), as get-pip's download host is unreachable.
# Ignore entries, if any, go in tests/sanity/ignore-<ansible-core version>.txt.
SANITY_HOME := $(abspath $(BUILD)/ansible-test-home)
SANITY_ROOT := $(abspath $(BUILD)/sanity/ansible_collections)/cedarbackup/peer
SANITY_ARGS ?=
# The pip version ansible-test bootstraps into its virtual environments (names the script).
ANSIBLE_TEST_PIP := import types; from ansible_test._internal.python_requirements import get_venv_packages; \
  print(get_venv_packages(types.SimpleNamespace(version="")).get("pip", ""))

sanity: $(VPY)
	@rm -rf tests/output/junit && mkdir -p $(SANITY_HOME)/.ansible/test/cache $(dir $(SANITY_ROOT))
	@ln -sfn ../../../.. $(SANITY_ROOT)
	@pip=$$(cd / && $(abspath $(VPY)) -c '$(ANSIBLE_TEST_PIP)') && test -n "$$pip" || \
	  { echo "make sanity: cannot tell which pip version ansible-test bootstraps" >&2; exit 1; }; \
	  cp requirements/ansible_test_get_pip.py $(SANITY_HOME)/.ansible/test/cache/get_pip_$${pip//./_}.py
	cd $(SANITY_ROOT) && HOME=$(SANITY_HOME) ANSIBLE_TEST_CONTENT_ROOT=$(SANITY_ROOT) $(abspath $(VENV))/bin/ansible-test \
	  sanity --local --python $$($(abspath $(VPY)) -c 'import sys; print("%d.%d" % sys.version_info[:2])') --junit $(SANITY_ARGS)
	@cd tests/output/junit && echo "sanity: $$(grep -L -e '<failure' -e '<error' -e '<skipped' *.xml | wc -l) passed," \
	  "$$(grep -l -e '<failure' -e '<error' *.xml | wc -l) failed, $$(grep -l '<skipped' *.xml | wc -l) skipped"

$(COMPAT_VENV)/bin/ansible-playbook: requirements/compat-2.16.txt
	$(PYTHON) -m venv $(COMPAT_VENV)
	$(COMPAT_VENV)/bin/python -m pip install -q --disable-pip-version-check -r requirements/compat-2.16.txt
	@touch $@

# The same playbook-level tests, driven by the oldest supported ansible-core.
test-compat: system-deps collection $(COMPAT_VENV)/bin/ansible-playbook
	CBACK_ANSIBLE_BIN=$(abspath $(COMPAT_VENV))/bin $(VPY) -m pytest \
	  tests/integration/test_modules_ansible.py tests/integration/test_documentation.py \
	  tests/integration/test_filter_docs.py tests/integration/test_stage_run.py tests/integration/test_managed_run.py \
	  tests/integration/test_setup_role.py tests/integration/test_setup_existing_files.py \
	  tests/integration/test_migrate_from_cback3.py tests/integration/test_fleet.py $(PYTEST_ARGS)

test: system-deps collection changelog-lint docs-check lint sanity
	$(VPY) -m pytest tests/unit tests/integration $(PYTEST_ARGS)
	$(MAKE) --no-print-directory molecule
	$(MAKE) --no-print-directory test-compat

# Benchmark of the stage run against cback3 and plain tools (not part of make test; needs
# root, takes minutes): bench/run.py writes bench/results/<date>-<description>.md and .json.
BENCH_ARGS ?=
bench: system-deps collection
	$(VPY) bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(BUILD) .pytest_cache $(COMPAT_VENV) tests/output
