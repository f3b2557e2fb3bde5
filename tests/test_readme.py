"""The README and docs/ stay true: every SQL example runs against a real pipeline run and returns
rows, every `profiling` command shown exists with the options shown, every page is reachable from
the README and every relative link resolves, and the README stays short."""

from __future__ import annotations

import pytest
import typer
from typer.exceptions import TyperException

from doc_pages import DOCS, PAGES, README, ROOT, anchors, name, relative_links, shown_commands, sql_blocks

README_MAX_LINES = 250

QUERIES = sql_blocks()
COMMANDS = shown_commands()


def test_the_readme_counts_the_tests_that_start_a_jvm_of_their_own():
    import re
    import subprocess
    import sys

    # One collection (it imports every test module): "25/294 tests collected (269 deselected)".
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:xdist", "-p",
                           "no:cacheprovider", "-m", "jvm", "tests"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    counted = re.search(r"(\d+)/(\d+) tests collected", proc.stdout)
    assert counted, proc.stdout[-2000:] + proc.stderr[-2000:]
    stated = re.search(r"(\d+) of the (\d+) tests start a JVM of their own", README.read_text())
    assert stated, "README: the sentence with the count of `jvm` tests is gone"
    assert stated.groups() == counted.groups()


def test_the_docs_have_sql_examples():
    assert len(QUERIES) >= 4


@pytest.mark.parametrize("block", QUERIES, ids=[f"{name(b.page)}-sql{i}" for i, b in enumerate(QUERIES)])
def test_docs_sql_runs_and_returns_rows(pipeline, spark, block):
    rows = spark.sql(block.body).collect()
    assert rows, f"no rows from ({name(block.page)}):\n{block.body}"
    assert all(value is not None for row in rows for value in row)


def test_the_docs_show_commands():
    assert len(COMMANDS) >= 10
    assert {name(command.page) for command in COMMANDS} >= {"README.md", "docs/sql.md", "docs/operations.md"}


@pytest.mark.parametrize("shown", COMMANDS, ids=[f"{name(c.page)}-cmd{i}" for i, c in enumerate(COMMANDS)])
def test_a_shown_command_exists_with_its_options(shown):
    from profiling.cli import app

    where = f"{name(shown.page)}: {shown.line}"
    command = typer.main.get_command(app)  # typer's own click: a group has .commands, a command .params
    args = list(shown.args)
    path = ["profiling"]
    while hasattr(command, "commands"):
        assert args, f"{where}: `{' '.join(path)}` needs a subcommand"
        sub = args.pop(0)
        assert sub in command.commands, f"{where}: `{' '.join(path)}` has no command {sub!r}"
        command = command.commands[sub]
        path.append(sub)
    options = {opt for param in command.params if param.param_type_name == "option"
               for opt in (*param.opts, *param.secondary_opts)} | {"--help"}
    for arg in args:
        if arg.startswith("-") and arg != "-":
            option = arg.split("=", 1)[0]
            assert option in options, (f"{where}: `{' '.join(path)}` has no option {option}; "
                                       f"it has {', '.join(sorted(options))}")
    try:  # the number of arguments, the values each option needs, the required options
        command.make_context(" ".join(path), args)
    except TyperException as exc:
        pytest.fail(f"{where}: {exc.format_message()}")


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(README.parent / target.split("#")[0]).resolve() for target in relative_links(README)}
    missing = [name(page) for page in sorted(DOCS.glob("*.md")) if page.resolve() not in linked]
    assert not missing, f"README.md does not link {missing}"


def test_every_docs_page_is_reachable_from_the_readme():
    reached, todo = {README.resolve()}, [README]
    while todo:
        page = todo.pop()
        for target in relative_links(page):
            path = (page.parent / target.split("#")[0]).resolve()
            if path.suffix == ".md" and path.is_file() and path not in reached:
                reached.add(path)
                todo.append(path)
    missing = [name(page) for page in PAGES if page.resolve() not in reached]
    assert not missing, f"not reachable from README.md: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=name)
def test_every_relative_link_resolves(page):
    broken = []
    for target in relative_links(page):
        file, _, anchor = target.partition("#")
        path = (page.parent / file).resolve() if file else page
        if not path.exists():
            broken.append(f"{target} (no such file)")
        elif ROOT.resolve() not in path.resolve().parents and path.resolve() != ROOT.resolve():
            broken.append(f"{target} (outside the repository)")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(f"{target} (no heading #{anchor} in {name(path)})")
    assert not broken, f"{name(page)}: broken links {broken}"


def test_the_readme_is_short():
    lines = len(README.read_text().splitlines())
    assert lines <= README_MAX_LINES, (f"README.md has {lines} lines; keep it to {README_MAX_LINES} "
                                       "and move the detail to docs/")
