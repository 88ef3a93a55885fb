"""The docs and the code in step: what README.md and docs/*.md name exists, and what users can run or set is named.

1. every `make <target>` the docs mention is a Makefile target, and every target meant for users (the Makefile's
   .PHONY list) is mentioned;
2. every `scripts/...py` (and other source file) the docs mention exists, and every script in scripts/ is mentioned;
3. every PUBLISHER_* name the docs mention is read by the code, and every setting the code reads is a row of
   docs/configuration.md's settings table (and every row there is read somewhere);
4. every param of both DAGs is a row of docs/configuration.md's params table, and every row there is a real param
   of the DAG it names;
5. every relative link leads to a file that exists, and to a heading that exists when it names one;
and docs/benchmarks.md is what bench/docs.py makes of bench/results/ now, and holds the only measured numbers.
Service-free: it reads files only (the DAGs and the code through their syntax trees, nothing imported).
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

from bench import docs as bench_docs
from include.catalog_publisher.defaults import project_root

ROOT = project_root()
CODE_DIRS = ("include", "dags", "scripts", "devstack", "plugins")
SETTING = re.compile(r"\b(?:CATALOG_)?PUBLISHER_[A-Z0-9_]*[A-Z0-9]\b")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)


def doc_pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


@cache
def text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def code_spans(markdown: str) -> list[str]:
    """Inline code spans and the lines of fenced code blocks."""
    blocks = [line for block in FENCE.findall(markdown) for line in block.splitlines()[1:-1]]
    return re.findall(r"`([^`\n]+)`", FENCE.sub("", markdown)) + blocks


def python_files(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


# -- 1. make targets ---------------------------------------------------------------------------------------------


def makefile_targets() -> tuple[set[str], set[str]]:
    """(every target the Makefile defines by name, the .PHONY targets: the commands meant for users)."""
    makefile = text(ROOT / "Makefile")
    defined = set(re.findall(r"^([a-z][a-z0-9-]*)\s*:(?!=)", makefile, re.M))
    phony = set(re.search(r"^\.PHONY:(.*)$", makefile, re.M).group(1).split())
    return defined, phony


def mentioned_make_targets() -> dict[str, set[str]]:
    """target -> the pages that mention `make <target>` (in code, after any VAR=value)."""
    found: dict[str, set[str]] = {}
    for page in doc_pages():
        for span in code_spans(text(page)):
            words = span.split("#", 1)[0].split()
            if "make" not in words:
                continue
            for word in words[words.index("make") + 1 :]:
                if "=" in word or word.startswith("-"):
                    continue
                if not re.fullmatch(r"[a-z][a-z0-9-]*", word):
                    break
                found.setdefault(word, set()).add(rel(page))
    return found


def test_every_make_target_the_docs_mention_exists():
    defined, _ = makefile_targets()
    missing = {t: sorted(p) for t, p in mentioned_make_targets().items() if t not in defined}
    assert not missing, f"the docs mention make targets the Makefile lacks; fix the docs or the Makefile: {missing}"


def test_every_make_target_for_users_is_documented():
    defined, phony = makefile_targets()
    assert phony <= defined, f".PHONY lists targets the Makefile does not define: {sorted(phony - defined)}"
    undocumented = sorted(phony - mentioned_make_targets().keys())
    assert not undocumented, (
        f"Makefile targets meant for users (.PHONY) that no page mentions as `make <target>`: {undocumented}; "
        "add them to the README's table of make targets"
    )


def test_the_readme_keeps_the_two_commands():
    readme = text(ROOT / "README.md")
    for command in ("make demo   #", "make test   #"):
        assert command in readme, f"README.md lost its `{command.split('#')[0].strip()}` line (a fixed contract)"


# -- 2. scripts and other source files ----------------------------------------------------------------------------


SOURCE_PATH = re.compile(r"\b((?:scripts|bench|tests|include|dags|plugins|devstack)/[\w/.-]*\w\.py)(?:::(\w+))?")


def test_every_source_file_the_docs_mention_exists():
    missing = []
    for page in doc_pages():
        for path, function in SOURCE_PATH.findall(text(page)):
            if not (ROOT / path).is_file():
                missing.append(f"{rel(page)}: {path}")
            elif function and not re.search(rf"^\s*def {function}\(", text(ROOT / path), re.M):
                missing.append(f"{rel(page)}: {path}::{function}")
    assert not missing, "the docs name files or tests that do not exist; fix or remove these mentions:\n" + "\n".join(
        missing
    )


def test_every_script_is_documented():
    mentioned = {path for page in doc_pages() for path, _ in SOURCE_PATH.findall(text(page))}
    scripts = [rel(p) for p in python_files("scripts")]
    assert scripts, "no scripts found under scripts/"
    undocumented = [script for script in scripts if script not in mentioned]
    assert not undocumented, (
        f"scripts no page mentions by path: {undocumented}; describe them (the runbook's commands in "
        "docs/runbook.md, the development tools in docs/operations.md or the README)"
    )


# -- 3. settings --------------------------------------------------------------------------------------------------


def _environment_read(node: ast.AST) -> str | None:
    """The setting a node names: a PUBLISHER_* constant, the value of a `*_ENV` (or `*_ENV_PREFIX`, as `NAME_*`)
    constant, or the literal name of an `os.environ.get` / `os.getenv` lookup."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and SETTING.fullmatch(node.value):
        return node.value
    if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
        targets = [t.id for t in node.targets if isinstance(t, ast.Name)]
        if any(t.endswith(("_ENV", "_ENV_PREFIX")) for t in targets):
            return node.value.value + ("*" if node.value.value.endswith("_") else "")
    if isinstance(node, ast.Call) and ast.unparse(node.func) in ("os.environ.get", "os.getenv") and node.args:
        first = node.args[0]
        return first.value if isinstance(first, ast.Constant) and isinstance(first.value, str) else None
    return None


@cache
def code_settings() -> frozenset[str]:
    """Every setting the code reads, but Airflow's own configuration (`AIRFLOW__*`, documented by Airflow)."""
    names = set()
    for path in python_files(*CODE_DIRS):
        names |= {name for node in ast.walk(ast.parse(text(path))) if (name := _environment_read(node))}
    return frozenset(n for n in names if not n.startswith("AIRFLOW__") and n != "PYTHONPATH")


def table_rows(page: Path, heading: str, every: bool = False) -> list[list[str]]:
    """The cells of the first table (`every`: of every table) under the `## heading` of a page (header and rule rows
    left out)."""
    section = text(page).split(f"\n## {heading}\n", 1)
    assert len(section) == 2, f"{rel(page)} has no '## {heading}' section"
    lines, rows, table = section[1].split("\n## ", 1)[0].splitlines(), [], 0
    for number, line in enumerate(lines):
        if not line.startswith("|"):
            table += bool(rows) and number > 0 and lines[number - 1].startswith("|")
            if table and not every:
                break
            continue
        if line.startswith("|---") or (number + 1 < len(lines) and lines[number + 1].startswith("|---")):
            continue  # a header or its rule
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def documented_settings() -> list[str]:
    """The settings of every table under docs/configuration.md's `## Settings`: the pipeline's (settings.py's) and
    those the runbook commands, development and the tests read."""
    return [row[0].strip("`") for row in table_rows(ROOT / "docs" / "configuration.md", "Settings", every=True)]


def test_every_setting_the_code_reads_is_in_the_settings_table():
    documented = set(documented_settings())
    missing = sorted(code_settings() - documented)
    assert not missing, (
        f"settings the code reads that docs/configuration.md's settings table lacks: {missing}; add a row each "
        "(setting | default | meaning)"
    )


def test_every_row_of_the_settings_table_is_read_somewhere():
    sources = "\n".join(text(p) for p in python_files(*CODE_DIRS, "tests", "bench"))
    rows = documented_settings()
    duplicated = sorted({name for name in rows if rows.count(name) > 1})
    assert not duplicated, f"docs/configuration.md's settings table has a row twice: {duplicated}"
    stale = [name for name in rows if not re.search(rf"\b{re.escape(name.rstrip('*'))}(?![A-Z0-9_])", sources)]
    assert not stale, f"docs/configuration.md's settings table has settings nothing reads any more: {stale}; drop them"


def test_every_publisher_setting_the_docs_mention_exists():
    pages = [*doc_pages(), ROOT / "CHANGELOG.md", ROOT / ".env.example"]
    unknown = {f"{rel(page)}: {name}" for page in pages for name in SETTING.findall(text(page))}
    unknown = sorted(entry for entry in unknown if entry.rsplit(": ", 1)[1] not in code_settings())
    assert not unknown, f"the docs name settings the code does not read; fix or remove them: {unknown}"


# -- 4. params ----------------------------------------------------------------------------------------------------


def dag_params() -> dict[str, set[str]]:
    """dag_id -> its params: what include/catalog_publisher/params.py gives each DAG (the DAG files take it whole)."""
    from include.catalog_publisher.params import indexer_params, publisher_params, rebuild_params

    return {
        "publish_product_images": set(publisher_params()),
        "index_product_catalog": set(indexer_params()),
        "rebuild_product_index": set(rebuild_params()),
    }


def documented_params() -> list[tuple[str, str]]:
    """(param, dag_id) of each row of docs/configuration.md's params table."""
    rows = table_rows(ROOT / "docs" / "configuration.md", "Params")
    return [(row[0].strip("`"), row[1].strip("`")) for row in rows]


def test_every_param_of_every_dag_is_in_the_params_table():
    documented = set(documented_params())
    every = {(param, dag) for dag, params in dag_params().items() for param in params}
    missing = sorted(every - documented)
    assert not missing, (
        f"params missing from docs/configuration.md's params table: {missing}; add a row each "
        "(param | DAG | form section | default | meaning)"
    )


def test_every_row_of_the_params_table_is_a_real_param():
    params = dag_params()
    unknown = [(param, dag) for param, dag in documented_params() if param not in params.get(dag, set())]
    assert not unknown, (
        f"docs/configuration.md's params table lists params its DAG does not have: {unknown}; fix the name or the DAG "
        "column, or drop the row"
    )


# -- 5. links -----------------------------------------------------------------------------------------------------


def anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lowercased, punctuation but `-` and `_` dropped, spaces to hyphens."""
    headings = re.findall(r"^#+ (.+)$", FENCE.sub("", markdown), re.M)
    return {re.sub(r"[^a-z0-9 _-]", "", h.lower()).replace(" ", "-") for h in headings}


def test_every_relative_link_leads_to_a_file_and_heading_that_exist():
    broken = []
    for page in doc_pages():
        for target in re.findall(r"\]\(([^)\s]+)\)", FENCE.sub("", text(page))):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists():
                broken.append(f"{rel(page)}: {target} (no such file)")
            elif anchor and linked.suffix == ".md" and anchor not in anchors(text(linked)):
                broken.append(f"{rel(page)}: {target} (no such heading in {rel(linked)})")
    assert not broken, "broken links; point them at a file and heading that exist:\n" + "\n".join(broken)


# -- benchmarks ---------------------------------------------------------------------------------------------------

MEASURED = re.compile(
    r"\b\d+(?:\.\d+)?x\b"  # a ratio
    r"|\b\d[\d,]*(?:\.\d+)? ?(?:images|img|docs|documents|messages|products|objects|files|MB)/s\b"  # a rate
    r"|\b\d+\.\d+ ?s\b"  # seconds with a fraction
)


def test_benchmarks_page_is_what_bench_results_give_now():
    assert text(ROOT / "docs" / "benchmarks.md") == bench_docs.render(), (
        "docs/benchmarks.md is stale against bench/results/: run make bench-docs"
    )


def test_measured_numbers_are_only_on_the_benchmarks_page():
    found = []
    for page in doc_pages():
        if page.name == "benchmarks.md":
            continue
        prose = FENCE.sub("", text(page))
        found += [f"{rel(page)}: {m}" for m in MEASURED.findall(prose)]
    assert not found, (
        "measured numbers outside docs/benchmarks.md (the one page generated from bench/results/); "
        f"move them there through bench/docs.py, or say it without the number: {found}"
    )


# -- 6. the settings table is settings.py's ------------------------------------------------------------------------


def test_the_settings_table_is_written_from_the_settings_module():
    from include.catalog_publisher.settings import markdown_table

    assert markdown_table() in text(ROOT / "docs" / "configuration.md"), (
        "docs/configuration.md's settings table differs from include/catalog_publisher/settings.py: replace it with "
        "the output of `.venv/bin/python -m include.catalog_publisher.settings`"
    )


def test_only_the_settings_module_reads_the_pipelines_settings_from_the_environment():
    """One parser and one error for every setting: no other module of include/ or dags/ reads one by itself."""
    from include.catalog_publisher.settings import SETTINGS

    names = {setting.name for setting in SETTINGS}
    readers = []
    for path in python_files("include", "dags"):
        if path.name == "settings.py":
            continue
        for name in names:
            if re.search(rf"""environ(?:\.get\(|\[)\s*["']{name}["']|getenv\(\s*["']{name}["']""", text(path)):
                readers.append(f"{rel(path)} reads {name}")
    assert not readers, f"read these through include/catalog_publisher/settings.py instead: {readers}"
