"""The documentation holds together: every relative link in README.md and docs/*.md (and the
plugins' and benchmark results' READMEs) reaches a file (and, for `#anchor` links into markdown,
a heading) that exists; README.md stays a ten-minute read that links every docs page; its
settings table names every FRUITS_* setting fruits/settings.py reads, with the default the code
has, and no setting the code does not read.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from conftest import ROOT
from fruits import settings

README = ROOT / "README.md"
DOC_PAGES = sorted((ROOT / "docs").glob("*.md"))
OTHER_PAGES = [ROOT / "plugins" / "README.md", ROOT / "benchmarks" / "results" / "README.md"]
MAX_README_LINES = 250

_FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"!?\[[^\]\n]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.MULTILINE)


def _prose(text: str) -> str:
    """The text outside fenced code blocks (a `# comment` in a shell block is not a heading)."""
    return _FENCE.sub("", text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"<[^>]+>", "", heading).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading's anchor in `page`, repeated headings numbered as GitHub numbers them."""
    seen: dict[str, int] = {}
    found = set()
    for heading in _HEADING.findall(_prose(page.read_text(encoding="utf-8"))):
        base = slug(heading)
        count = seen.get(base, 0)
        found.add(base if count == 0 else f"{base}-{count}")
        seen[base] = count + 1
    return found


def relative_links(page: Path) -> list[str]:
    text = _CODE_SPAN.sub("", _prose(page.read_text(encoding="utf-8")))
    return [target for target in _LINK.findall(text) if not re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE)]


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in relative_links(page):
        path_part, _, anchor = target.partition("#")
        resolved = (page.parent / path_part).resolve() if path_part else page
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target}: no heading with that anchor in {resolved.name}")
    return broken


@pytest.mark.parametrize("page", [README, *DOC_PAGES, *OTHER_PAGES], ids=lambda page: str(page.relative_to(ROOT)))
def test_every_relative_link_reaches_a_file_and_heading_that_exist(page):
    assert broken_links(page) == []


def test_the_link_check_sees_a_missing_file_and_a_missing_heading(tmp_path):
    headings = "# Title\n\n## A section: with `code`, (and) punctuation\n\n## Twice\n## Twice\n"
    (tmp_path / "other.md").write_text(headings)
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](other.md#a-section-with-code-and-punctuation) [ok](other.md#twice-1) [self](#here)\n"
        "# Here\n[gone](missing.md) [wrong](other.md#no-such-heading) [web](https://example.com/x)\n"
        "```\n[in code](missing-too.md)\n# not a heading\n```\n[no](#not-a-heading)\n"
    )
    assert broken_links(page) == [
        "missing.md: no such file",
        "other.md#no-such-heading: no heading with that anchor in other.md",
        "#not-a-heading: no heading with that anchor in page.md",
    ]


def test_readme_is_a_ten_minute_read():
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines < MAX_README_LINES, f"README.md has {lines} lines: move detail to a docs/ page and link it"


def test_readme_links_every_docs_page():
    linked = {(README.parent / target.partition("#")[0]).resolve() for target in relative_links(README)}
    assert [page.name for page in DOC_PAGES if page.resolve() not in linked] == []


# ------------------------------------------------------------------------------ the settings table


def settings_table() -> dict[str, str]:
    """README's Settings table: variable -> its default cell."""
    section = README.read_text(encoding="utf-8").split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(FRUITS_[A-Z0-9_]+)` \| ([^|]*) \|", section, re.MULTILINE)
    return {name: default.strip() for name, default in rows}


def settings_fields() -> dict[str, str]:
    """fruits/settings.py: environment variable -> the Settings field it fills."""
    source = Path(settings.__file__).read_text(encoding="utf-8")
    reads = r"^    (\w+): [^\n]*?= field\(\s*default_factory=lambda: (?:\w+\()?_env\w*\(\"(FRUITS_[A-Z0-9_]+)\""
    pairs = re.findall(reads, source, re.MULTILINE)
    fields = {name: field for field, name in pairs}
    fields[settings.WHEELHOUSE_SETTING] = "emr_wheelhouse"  # the two paths read by a function of their own
    fields[settings.JARS_CACHE_SETTING] = "spark_jars_cache"
    return fields


def test_the_settings_parsers_find_what_they_should():
    fields = settings_fields()
    assert fields["FRUITS_COMPUTE"] == "compute" and fields["FRUITS_EMR_ALLOWED_REGIONS"] == "emr_allowed_regions"
    assert len(fields) == len(settings.Settings.__dataclass_fields__)
    assert settings_table()["FRUITS_BUCKET"] == "`fruits`"


def test_readme_settings_table_names_every_setting_with_its_default(monkeypatch):
    for name in [name for name in os.environ if name.startswith("FRUITS_")]:
        monkeypatch.delenv(name)
    defaults = settings.Settings()
    table = settings_table()
    assert sorted(set(settings_fields()) - set(table)) == []
    for name, field in settings_fields().items():
        value = getattr(defaults, field)
        if isinstance(value, bool):
            expected = f"`{str(value).lower()}`"
        elif isinstance(value, (str, int, float)):
            expected = f"`{value}`"
        elif value is None or value == ():
            expected = "none"
        else:
            continue  # paths and lists: described in words
        assert expected in table[name], f"{name}: README says {table[name]!r}, the code's default is {expected}"


def test_every_setting_in_the_readme_is_read_by_the_code():
    code = "\n".join(
        path.read_text(encoding="utf-8")
        for folder in ("fruits", "fruits_dev", "spark_jobs", "dags")
        for path in (ROOT / folder).rglob("*.py")
    )
    assert [name for name in settings_table() if f'"{name}"' not in code] == []
