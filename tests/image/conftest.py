"""Fixtures of the image tests: the standard test image, built once per session.

Every test here builds or boots real things: each carries the `vm` marker and a
`timeout` marker (checked at collection, as under tests/vm/).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from vmlab.machine.image_build import BuiltImage

from .images import ensure_test_image

_HERE = Path(__file__).resolve().parent

BUILD_TIMEOUT_S = 1800  # a cold build under TCG-loaded CI: a few minutes; this is a hang


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    problems = []
    for item in items:
        if _HERE not in Path(str(item.path)).resolve().parents:
            continue
        if item.get_closest_marker("vm") is None:
            problems.append(f"{item.nodeid}: a test under tests/image/ needs @pytest.mark.vm")
        if item.get_closest_marker("timeout") is None:
            problems.append(f"{item.nodeid}: a test under tests/image/ needs a timeout marker")
    if problems:
        raise pytest.UsageError("\n".join(problems))


@pytest.fixture(scope="session")
def built_image() -> BuiltImage:
    """TEST_IMAGE_SPEC, built into the real cache (instant once it is there)."""
    return ensure_test_image()
