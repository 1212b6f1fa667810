"""The test suite's own layout: one axis (the tier folders), no test file name twice, and
every tier a registered marker that tests/conftest.py sets from the folder."""

from __future__ import annotations

import collections
import re
import tomllib

from tests.conftest import TESTS, TIERS, tier_of


def test_no_test_file_name_appears_twice() -> None:
    """Two test files of one name, in two folders, are two places for one subject (and a
    ``-k``/``--deselect`` by file name that means one of them hits both)."""
    names = collections.Counter(path.name for path in TESTS.rglob("test_*.py"))
    twice = sorted(name for name, n in names.items() if n > 1)
    assert not twice, f"test file names used more than once under tests/: {twice}"


def test_every_test_file_is_filed_under_a_tier() -> None:
    outside = sorted(
        str(path.relative_to(TESTS)) for path in TESTS.rglob("test_*.py") if tier_of(path) is None
    )
    assert not outside, f"test files outside {', '.join(TIERS)}: {outside}"


def test_every_tier_is_a_registered_marker() -> None:
    """``--strict-markers`` fails a run on a marker pyproject.toml does not register."""
    pyproject = tomllib.loads((TESTS.parent / "pyproject.toml").read_text())
    registered = {m.split(":")[0] for m in pyproject["tool"]["pytest"]["ini_options"]["markers"]}
    assert set(TIERS) <= registered, sorted(set(TIERS) - registered)
    assert sorted(p.name for p in TESTS.iterdir() if p.is_dir() and p.name in TIERS) == sorted(
        TIERS
    )


def test_the_documented_marker_expressions_use_registered_markers() -> None:
    """The fast run and the others CONTRIBUTING.md shows select by markers that exist (an
    unknown name in ``-m`` selects nothing, silently)."""
    pyproject = tomllib.loads((TESTS.parent / "pyproject.toml").read_text())
    registered = {m.split(":")[0] for m in pyproject["tool"]["pytest"]["ini_options"]["markers"]}
    contributing = (TESTS.parent / "CONTRIBUTING.md").read_text()
    expressions = re.findall(r'python -m pytest -m "([^"]+)"', contributing)
    assert expressions, "CONTRIBUTING.md shows no marker expression"
    for expression in expressions:
        names = set(re.findall(r"\w+", expression)) - {"and", "or", "not"}
        assert names <= registered, (expression, sorted(names - registered))
