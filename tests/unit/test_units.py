"""Sizes as users type them (`--memory 512M`, `memory = "2G"`)."""

from __future__ import annotations

import pytest

from vmlab.errors import ExitCode, UsageError
from vmlab.units import format_mib, parse_size_mib


@pytest.mark.parametrize(
    ("text", "mib"),
    [
        ("512M", 512),
        ("2G", 2048),
        ("512", 512),  # a bare number means MiB, as with QEMU's -m
        ("1.5G", 1536),
        ("1T", 1 << 20),
        ("1048576K", 1024),
        ("1024k", 1),
        ("512MiB", 512),
        ("2gb", 2048),
        ("2g", 2048),
        (" 2G ", 2048),
        ("0.5G", 512),
        (256, 256),
    ],
)
def test_sizes(text: str | int, mib: int) -> None:
    assert parse_size_mib(text) == mib


@pytest.mark.parametrize("text", ["1X", "", "G", "M512", "-1", "2 G B", "1e3", "0x10", "512MM"])
def test_not_a_size(text: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_size_mib(text, what="--memory")
    assert info.value.message == f"--memory: {text!r} is not a size (try 512M or 2G)"
    assert info.value.exit_code == ExitCode.USAGE


@pytest.mark.parametrize("text", ["0", "0M", "1k", "0.5M", "1536K", 0])
def test_not_a_whole_positive_number_of_mib(text: str | int) -> None:
    with pytest.raises(UsageError, match="whole number of MiB") as info:
        parse_size_mib(text, what="machine.db.memory")
    assert info.value.message.startswith("machine.db.memory: ")


def test_messages_are_one_line() -> None:
    with pytest.raises(UsageError) as info:
        parse_size_mib("1\nX")
    assert "\n" not in info.value.message.replace(repr("1\nX"), "")


@pytest.mark.parametrize(("mib", "text"), [(2048, "2G"), (1536, "1536M"), (512, "512M"), (1, "1M")])
def test_format_mib_round_trips(mib: int, text: str) -> None:
    assert format_mib(mib) == text
    assert parse_size_mib(format_mib(mib)) == mib
