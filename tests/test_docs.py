"""The docs stay honest: the README's size and commands, links, settings, flags and commands.

Pure reading: no service, no database. Code blocks, links and headings are read by
:mod:`tests.doctext`; commands are parsed by the real command line
(:func:`service.__main__.build_parser`), settings checked against :class:`service.config.Settings`.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from service.__main__ import build_parser
from service.config import Settings

from . import doctext

ROOT = Path(__file__).parent.parent
README = ROOT / "README.md"
OPERATIONS = ROOT / "docs" / "operations.md"
DOC_PAGES = sorted((ROOT / "docs").glob("*.md"))
#: Every page a reader is sent to: the README, docs/, and the manifests' own README.
PAGES = [README, *DOC_PAGES, ROOT / "config" / "kubernetes" / "README.md"]
#: A CDC_* name; one right after "=" is a value (SNOWFLAKE_USER=CDC_SERVICE), not a setting.
_CDC_NAME = re.compile(r"(?<![A-Za-z0-9_=])CDC_[A-Z0-9_]*[A-Z0-9]")
_FLAG = re.compile(r"--[a-z][a-z0-9-]*")


def _steps(command: str) -> list[str]:
    return [step.strip() for step in command.split("&&")]


def _ci_command() -> str:
    """The one command .ci/run runs: its lines from the venv's creation on, joined."""
    text = (ROOT / ".ci" / "run").read_text().replace("\\\n", " ")
    (line,) = [ln for ln in text.splitlines() if ln.startswith("python3 -m venv")]
    return " ".join(line.split())


def _readme_lines() -> list[str]:
    blocks, _ = doctext.split(README.read_text())
    return [ln.strip() for b in blocks for ln in b.splitlines()]


def _field(name: str) -> str:
    """``CDC_BATCH_SIZE`` -> ``batch_size``, as service.config.load reads it."""
    return name.removeprefix("CDC_").lower()


def _settings_rows() -> list[str]:
    """The rows of docs/operations.md's settings table (the table under "## Settings")."""
    text = OPERATIONS.read_text()
    section = text.split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    rows = [ln for ln in section.splitlines() if ln.startswith("| `")]
    assert rows, "docs/operations.md has no settings table"
    return rows


def _parse_run(flag: str, row: str) -> argparse.Namespace:
    """``ecomm-cdc run FLAG VALUE`` with a number or a value the row shows in backticks
    (``--target snowflake``), or ``ecomm-cdc run FLAG`` for a switch."""
    values = ["1", *re.findall(r"`([a-z-]+)`", row)]
    for argv in [["run", flag, v] for v in values] + [["run", flag]]:
        try:
            return build_parser().parse_args(argv)
        except SystemExit:
            continue
    raise AssertionError(f"{flag} does not parse for ecomm-cdc run")


def test_readme_fits_in_200_lines() -> None:
    """The README is a first page, not a manual: at most 200 lines."""
    lines = README.read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines"


def test_readme_test_command_is_what_ci_runs() -> None:
    """The README's test command is .ci/run's, step for step, but for CI's lint and type checks."""
    ci = _steps(_ci_command())
    (readme,) = [ln for ln in _readme_lines() if "pytest" in ln]
    checks = [s for s in ci if s not in _steps(readme)]
    assert [s for s in ci if s not in checks] == _steps(readme)
    assert checks, "CI runs only the README's command: then it does not lint"
    for step in checks:
        assert step.split()[0] in (".venv/bin/ruff", ".venv/bin/mypy"), step
    assert _steps(readme)[-1] == ".venv/bin/python -m pytest -q"


def test_readme_run_command_installs_and_runs() -> None:
    """The README's first command makes CI's venv, installs the package and runs a bounded run."""
    (line,) = [ln for ln in _readme_lines() if ln.endswith("ecomm-cdc run --events 200000")]
    venv, install, run = _steps(line)
    assert venv == _steps(_ci_command())[0]
    assert install == ".venv/bin/pip install -e ."
    ns = build_parser().parse_args(run.split()[1:])
    assert (ns.command, ns.events) == ("run", "200000")


def test_every_relative_link_points_at_a_file_and_a_heading() -> None:
    """Links in the README, docs/ and the manifests' README reach a file, and a heading there."""
    broken = []
    checked = 0
    for page in PAGES:
        for target in doctext.links(page):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):
                continue  # http:, https:, mailto:
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            checked += 1
            if not file.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and file.suffix == ".md" and anchor not in doctext.anchors(file):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert checked >= 20
    assert not broken, "\n".join(broken)


def test_readme_links_every_doc_page() -> None:
    """Every page in docs/ is reachable from the README."""
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in doctext.links(README)}
    missing = [p.name for p in DOC_PAGES if p.resolve() not in linked]
    assert not missing, f"README.md links none of {missing}"


def test_every_cdc_name_in_the_docs_is_a_setting() -> None:
    """A CDC_* name anywhere in the docs is a field of Settings (load() refuses any other)."""
    unknown = []
    seen = set()
    for page in PAGES:
        for name in _CDC_NAME.findall(page.read_text()):
            seen.add(name)
            if _field(name) not in Settings.model_fields:
                unknown.append(f"{page.relative_to(ROOT)}: {name}")
    assert len(seen) >= 20
    assert not unknown, "\n".join(unknown)


def test_the_settings_table_lists_every_setting_once() -> None:
    """docs/operations.md's table has a row for each Settings field, and one only."""
    documented = [
        _field(name) for row in _settings_rows() for name in _CDC_NAME.findall(row.split("|")[1])
    ]
    assert sorted(documented) == sorted(set(documented)), "a setting has two rows"
    assert set(documented) == set(Settings.model_fields)


def test_every_flag_in_the_settings_table_parses_for_run() -> None:
    """Each row's --flag is a flag of `ecomm-cdc run` that sets the same field as its variable."""
    flags = 0
    for row in _settings_rows():
        first = row.split("|")[1]
        for flag in _FLAG.findall(first):
            flags += 1
            (variable,) = _CDC_NAME.findall(first)
            ns = _parse_run(flag, row)
            assert getattr(ns, _field(variable), None) is not None, (flag, variable)
    assert flags >= 20


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_command_in_the_docs_parses(page: Path) -> None:
    """Each `ecomm-cdc ...` line in a page's code blocks parses with the real command line.

    Lines with placeholders are not skipped: the pages keep placeholders (``<container>``)
    out of ecomm-cdc's own arguments, in prose or behind other programs (docker, kubectl).
    """
    commands = doctext.cli_commands(page)
    for line, argv in commands:
        try:
            build_parser().parse_args(argv)
        except SystemExit:
            pytest.fail(f"{page.relative_to(ROOT)}: does not parse: {line}")


def test_the_docs_show_every_command() -> None:
    """Between them, the pages' code blocks show each subcommand of ecomm-cdc at least once."""
    shown = {argv[0] for page in PAGES for _, argv in doctext.cli_commands(page) if argv}
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert set(sub.choices) <= shown, set(sub.choices) - shown
