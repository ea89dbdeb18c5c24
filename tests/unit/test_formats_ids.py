"""Test ids for parsed results, the format dispatcher and the small model helpers."""

from __future__ import annotations

import pytest

from vmlab.config_specs import TestFormat
from vmlab.results import formats
from vmlab.results.formats import (
    ParsedOutput,
    SubOutcome,
    SubResult,
    parse,
    sanitise_name,
)


def _parsed(*paths: tuple[str, ...]) -> ParsedOutput:
    results = tuple(SubResult(path=p, outcome=SubOutcome.PASSED) for p in paths)
    return ParsedOutput(results=results, planned=None, problems=())


@pytest.mark.parametrize(
    ("name", "part"),
    [
        ("load_unload", "load_unload"),
        ("load unload", "load_unload"),
        ("  tabs\tand  spaces ", "tabs_and_spaces"),
        ("TestMount/v4", "TestMount%2Fv4"),
        ("example.com/nfs", "example.com%2Fnfs"),
        ("issue #42", "issue_%2342"),
        ("100%", "100%25"),
        ("%2F", "%252F"),
        ("bell\x07", "bell%07"),
        ("", "_"),
        ("   ", "_"),
        (".", "%2E"),
        ("..", "%2E%2E"),
        ("test_write[4096]", "test_write[4096]"),
        ("size=64M,mode=0700", "size=64M,mode=0700"),
    ],
)
def test_sanitise_name(name: str, part: str) -> None:
    assert sanitise_name(name) == part


def test_ids_join_the_path_under_the_suite_test() -> None:
    parsed = _parsed(("tinyfs_cycles", "load unload"), ("tinyfs_cycles", "a/b"))
    assert [i for i, _ in formats.test_ids("kernel_module/kunit", parsed)] == [
        "kernel_module/kunit/tinyfs_cycles/load_unload",
        "kernel_module/kunit/tinyfs_cycles/a%2Fb",
    ]


def test_duplicates_are_numbered_in_output_order() -> None:
    parsed = _parsed(("a",), ("a",), ("b",), ("a",), ("a b",), ("a_b",))
    named = formats.test_ids("s/t", parsed)
    assert [i for i, _ in named] == ["s/t/a", "s/t/a#2", "s/t/b", "s/t/a#3", "s/t/a_b", "s/t/a_b#2"]
    assert [r for _, r in named] == list(parsed.results)


def test_a_name_that_looks_like_a_duplicate_does_not_collide() -> None:
    parsed = _parsed(("a",), ("a#2",), ("a",))
    assert [i for i, _ in formats.test_ids("s/t", parsed)] == ["s/t/a", "s/t/a%232", "s/t/a#2"]


def test_empty_path_is_the_suite_test_itself() -> None:
    assert [i for i, _ in formats.test_ids("s/t", _parsed(()))] == ["s/t"]


def test_exit_format_has_nothing_to_parse() -> None:
    with pytest.raises(ValueError, match="exit status is the result"):
        parse("anything", "exit")
    with pytest.raises(ValueError, match="exit status is the result"):
        parse("anything", TestFormat.EXIT)


def test_unknown_format() -> None:
    with pytest.raises(ValueError, match=r"unknown test output format 'xunit' \(try one of tap"):
        parse("", "xunit")


@pytest.mark.parametrize("fmt", [TestFormat.TAP, TestFormat.KTAP, TestFormat.JUNIT, "TAP"])
def test_format_names_from_the_lab_file_are_accepted(fmt: str) -> None:
    assert isinstance(parse("", fmt), ParsedOutput)


def test_outcome_ok() -> None:
    assert [o for o in SubOutcome if o.ok] == [
        SubOutcome.PASSED,
        SubOutcome.SKIPPED,
        SubOutcome.TODO_FAILED,
    ]


def test_parsed_output_ok() -> None:
    good = _parsed(("a",))
    assert good.ok
    assert not ParsedOutput(results=good.results, planned=1, problems=("no TAP plan",)).ok
    assert not ParsedOutput(results=good.results, planned=1, problems=(), bailed_out=True).ok
    failed = (SubResult(path=("a",), outcome=SubOutcome.FAILED),)
    assert not ParsedOutput(results=failed, planned=1, problems=()).ok


def test_parse_is_pure() -> None:
    text = "1..2\nok 1 - a\n# metric x=1\nnot ok 2 - b\n"
    assert parse(text, "tap") == parse(text, "tap")
