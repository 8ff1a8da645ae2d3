# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Render docs/modules.md from the modules' own documentation.

Runs ``ansible-doc --json cedarbackup.peer.<module>`` for each module of the collection
against this checkout (linked into a temporary collections path, nothing is installed)
and writes Markdown: description, options, attributes, notes, examples, return values.

    python3 docs/generate_module_docs.py            # rewrite docs/modules.md
    python3 docs/generate_module_docs.py --check    # exit 1 if docs/modules.md is stale

``ansible-doc`` is taken from beside the running Python (a venv), else from PATH, unless
``--ansible-doc`` names it.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

COLLECTION = "cedarbackup.peer"
# The per-peer modules (the building blocks, members of the action group) first, then the
# run modules (a whole run in one module execution: what the roles run).
PEER_MODULES = ["cback_collect_indicator", "cback_stage", "cback_managed_action"]
RUN_MODULES = ["cback_stage_run", "cback_managed_run"]
MODULES = PEER_MODULES + RUN_MODULES
ACTION_GROUP = COLLECTION + ".cback"

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUTPUT = os.path.join(ROOT, "docs", "modules.md")

HEADER = """\
# Module reference

Generated from the modules' own documentation (DOCUMENTATION, EXAMPLES, RETURN and the
shared doc fragments) by `docs/generate_module_docs.py`; do not edit it by hand.
`ansible-doc cedarbackup.peer.<module>` shows the same text. To regenerate it from a
checkout, with ansible-core installed (in the active venv or on the PATH):

```sh
python3 docs/generate_module_docs.py          # rewrite docs/modules.md
python3 docs/generate_module_docs.py --check  # fail if docs/modules.md is out of date
```

The per-peer modules work on one peer each and belong to the action group
`cedarbackup.peer.cback`: options shared by every task can be set once with
`module_defaults: {group/cedarbackup.peer.cback: {...}}`. The run modules do a whole stage
or managed run over a list of peers in one module execution, the peers in parallel
threads; they are what the roles run, and are not in the action group. An option that is a
list of dicts lists the keys of each entry as `option[].key`.
"""

GROUPS = [
    ("Per-peer modules", PEER_MODULES),
    ("Run modules", RUN_MODULES),
]


# ----- Ansible markup -> Markdown -----

_MARKUP = re.compile(
    r"(?<![A-Za-z0-9_])(?:(?P<name>RV|[OVCEIBMUP])\((?P<arg>[^)]*)\)"
    r"|L\((?P<text>[^,)]*),\s*(?P<url>[^)]*)\)"
    r"|(?P<hr>HORIZONTALLINE))"
)


def _code(text):
    fence = "``" if "`" in text else "`"
    pad = " " if fence == "``" else ""
    return "%s%s%s%s%s" % (fence, pad, text, pad, fence)


def _plain(text):
    return text.replace("<", "&lt;").replace(">", "&gt;")


def _module_link(fqcn):
    prefix = COLLECTION + "."
    if fqcn.startswith(prefix) and fqcn[len(prefix):] in MODULES:
        return "[%s](#%s)" % (_code(fqcn), fqcn[len(prefix):])
    return _code(fqcn)


def _name_ref(arg):
    """``O()``/``RV()`` argument as Markdown: ``fqcn#module:name[=value]`` names another module's option."""
    if "#" not in arg:
        return _code(arg)
    fqcn, _sep, rest = arg.partition("#")
    name = rest.partition(":")[2] or rest
    return "%s of %s" % (_code(name), _module_link(fqcn))


def markup(text):
    """Convert Ansible documentation markup (C(), O(), V(), RV(), M(), ...) to Markdown."""
    out = []
    pos = 0
    for match in _MARKUP.finditer(text):
        out.append(_plain(text[pos:match.start()]))
        pos = match.end()
        name, arg = match.group("name"), match.group("arg")
        if match.group("hr"):
            out.append("\n\n---\n\n")
        elif match.group("url") is not None:
            out.append("[%s](%s)" % (_plain(match.group("text")), match.group("url").strip()))
        elif name == "I":
            out.append("*%s*" % _plain(arg))
        elif name == "B":
            out.append("**%s**" % _plain(arg))
        elif name == "U":
            out.append("<%s>" % arg)
        elif name == "M":
            out.append(_module_link(arg))
        elif name in ("O", "RV"):
            out.append(_name_ref(arg))
        else:  # C, V, E, P: literal values and names
            out.append(_code(arg))
    out.append(_plain(text[pos:]))
    return "".join(out)


def paragraphs(value):
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return list(value)


def cell(value):
    """Text for one Markdown table cell: paragraphs joined with <br>, pipes escaped."""
    text = "<br>".join(markup(p) for p in paragraphs(value))
    return text.replace("|", "\\|").replace("\n", " ")


def literal(value):
    if isinstance(value, bool):
        return _code("true" if value else "false")
    if isinstance(value, (list, dict)):
        return _code(json.dumps(value))
    return _code(str(value))


def type_of(spec):
    kind = spec.get("type", "str")
    if spec.get("elements"):
        kind = "%s / elements=%s" % (kind, spec["elements"])
    return kind


# ----- sections -----


def _child_prefix(prefix, name, spec):
    """Prefix of the keys below ``name``: ``name[].`` for a list of dicts, ``name.`` for a dict."""
    return prefix + name + ("[]." if spec.get("type") == "list" else ".")


def options_table(options, prefix=""):
    rows = []
    for name in sorted(options):
        spec = options[name]
        description = paragraphs(spec.get("description"))
        if spec.get("choices"):
            description.append("Choices: %s." % ", ".join(literal(c) for c in spec["choices"]))
        if spec.get("aliases"):
            description.append("Aliases: %s." % ", ".join(_code(a) for a in spec["aliases"]))
        if spec.get("version_added") and spec.get("version_added_collection") == COLLECTION:
            description.append("Added in version %s." % spec["version_added"])
        default = literal(spec["default"]) if "default" in spec and spec["default"] is not None else ""
        rows.append(
            "| %s | %s | %s | %s | %s |"
            % (_code(prefix + name), type_of(spec), default, "yes" if spec.get("required") else "no", cell(description))
        )
        if spec.get("suboptions"):
            rows.extend(options_table(spec["suboptions"], _child_prefix(prefix, name, spec))[2:])
    return ["| Option | Type | Default | Required | Description |", "|---|---|---|---|---|"] + rows


def attributes_table(attributes):
    rows = ["| Attribute | Support | Description |", "|---|---|---|"]
    for name in sorted(attributes):
        attribute = attributes[name]
        description = paragraphs(attribute.get("description")) + paragraphs(attribute.get("details"))
        if attribute.get("membership"):
            description.append("Member of %s." % ", ".join(_code(m) for m in attribute["membership"]))
        rows.append("| %s | %s | %s |" % (_code(name), attribute.get("support", ""), cell(description)))
    return rows


def return_table(returns, prefix=""):
    rows = []
    for name in sorted(returns):
        spec = returns[name]
        description = paragraphs(spec.get("description"))
        if "sample" in spec and spec["sample"] not in (None, ""):
            description.append("Sample: %s" % literal(spec["sample"]))
        rows.append(
            "| %s | %s | %s | %s |" % (_code(prefix + name), type_of(spec), cell(spec.get("returned", "")), cell(description))
        )
        if spec.get("contains"):
            rows.extend(return_table(spec["contains"], _child_prefix(prefix, name, spec))[2:])
    return ["| Key | Type | Returned | Description |", "|---|---|---|---|"] + rows


def seealso(entries):
    lines = []
    for entry in entries:
        if "module" in entry:
            line = "- %s" % _module_link(entry["module"])
            if entry.get("description"):
                line += ": %s" % markup(entry["description"])
        elif "link" in entry:
            line = "- [%s](%s)" % (_plain(entry.get("name", entry["link"])), entry["link"])
            if entry.get("description"):
                line += ": %s" % markup(entry["description"])
        elif "ref" in entry:
            line = "- %s" % _plain(entry.get("name", entry["ref"]))
        else:
            continue
        lines.append(line)
    return lines


def render_module(name, data):
    doc = data["doc"]
    fqcn = "%s.%s" % (COLLECTION, name)
    lines = ["## %s" % name, "", "`%s` — %s" % (fqcn, markup(doc["short_description"])), ""]
    if doc.get("version_added"):
        lines += ["Added in version %s of %s." % (doc["version_added"], doc.get("version_added_collection", COLLECTION)), ""]
    for paragraph in paragraphs(doc.get("description")):
        lines += ["- %s" % markup(paragraph)]
    lines += ["", "### Options", ""] + options_table(doc.get("options", {}))
    if doc.get("attributes"):
        lines += ["", "### Attributes", ""] + attributes_table(doc["attributes"])
    if doc.get("notes"):
        lines += ["", "### Notes", ""] + ["- %s" % markup(n) for n in paragraphs(doc["notes"])]
    if doc.get("seealso"):
        lines += ["", "### See also", ""] + seealso(doc["seealso"])
    if data.get("examples"):
        lines += ["", "### Examples", "", "```yaml", data["examples"].strip("\n"), "```"]
    if data.get("return"):
        lines += ["", "### Return values", ""] + return_table(data["return"])
    return lines


def _in_action_group(doc):
    return ACTION_GROUP in (doc.get("attributes", {}).get("action_group", {}).get("membership") or [])


def render(docs):
    for name in PEER_MODULES:
        if not _in_action_group(docs[name]["doc"]):
            sys.exit("%s.%s is listed as a per-peer module but is not in %s" % (COLLECTION, name, ACTION_GROUP))
    for name in RUN_MODULES:
        if _in_action_group(docs[name]["doc"]):
            sys.exit("%s.%s is listed as a run module but is in %s" % (COLLECTION, name, ACTION_GROUP))
    lines = [HEADER]
    for title, names in GROUPS:
        lines += ["%s:" % title, ""]
        for name in names:
            lines.append("- [%s](#%s): %s" % (name, name, markup(docs[name]["doc"]["short_description"])))
        lines.append("")
    for name in MODULES:
        lines += render_module(name, docs[name]) + [""]
    return "\n".join(lines).rstrip("\n") + "\n"


# ----- ansible-doc -----


def find_ansible_doc(explicit):
    if explicit:
        return explicit
    beside = os.path.join(os.path.dirname(sys.executable), "ansible-doc")
    if os.access(beside, os.X_OK):
        return beside
    found = shutil.which("ansible-doc")
    if not found:
        sys.exit("ansible-doc not found: install ansible-core or pass --ansible-doc")
    return found


def load_docs(ansible_doc):
    """ansible-doc --json of every module, with this checkout as the collection."""
    with tempfile.TemporaryDirectory(prefix="cback-docs.") as tmp:
        namespace = os.path.join(tmp, "ansible_collections", COLLECTION.split(".", maxsplit=1)[0])
        os.makedirs(namespace)
        os.symlink(ROOT, os.path.join(namespace, COLLECTION.split(".")[1]))
        env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=tmp, ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="false", ANSIBLE_NOCOLOR="1")
        docs = {}
        for name in MODULES:
            fqcn = "%s.%s" % (COLLECTION, name)
            proc = subprocess.run(
                [ansible_doc, "--json", "-t", "module", fqcn],
                env=env,
                cwd=tmp,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                universal_newlines=True,
                check=False,
            )
            if proc.returncode != 0:
                sys.exit("ansible-doc failed for %s:\n%s" % (fqcn, proc.stderr))
            result = json.loads(proc.stdout)
            if fqcn not in result:
                sys.exit("ansible-doc returned no documentation for %s:\n%s" % (fqcn, proc.stderr))
            docs[name] = result[fqcn]
        return docs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--output", default=DEFAULT_OUTPUT, help="file to write (default: docs/modules.md)")
    parser.add_argument("--check", action="store_true", help="do not write; exit 1 if the file is out of date")
    parser.add_argument("--ansible-doc", help="ansible-doc executable to use")
    args = parser.parse_args(argv)

    text = render(load_docs(find_ansible_doc(args.ansible_doc)))
    if args.check:
        try:
            with open(args.output, encoding="utf-8") as handle:
                current = handle.read()
        except FileNotFoundError:
            current = None
        if current != text:
            print("%s is out of date: run python3 docs/generate_module_docs.py" % os.path.relpath(args.output), file=sys.stderr)
            return 1
        return 0
    with open(args.output, "w", encoding="utf-8") as handle:
        handle.write(text)
    print("wrote %s" % os.path.relpath(args.output))
    return 0


if __name__ == "__main__":
    sys.exit(main())
