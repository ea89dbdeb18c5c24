"""`[service.NAME]` in the lab file: the documented example, resolution, one exact
line for each kind of mistake, and services' capabilities in the plan."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from vmlab.config import load_lab
from vmlab.plan import make_plan
from vmlab.service_spec import (
    DEFAULT_READY_TIMEOUT_S,
    DEFAULT_STOP_TIMEOUT_S,
    CmdReady,
    LogReady,
    TcpReady,
    needed_services,
)

from .test_config import REPO, error_of, write_lab

SUITE = """
[suite.s]
[[suite.s.test]]
name = "t"
run = "true"
"""


def test_the_documented_example_loads(tmp_path: Path) -> None:
    doc = (REPO / "docs" / "lab-file.md").read_text()
    section = doc.split("### `[service.NAME]`", 1)[1].split("\n### ", 1)[0]
    match = re.search(r"```toml\n(.*?)```", section, re.DOTALL)
    assert match is not None
    lab = load_lab(write_lab(tmp_path, match.group(1), ("fixtures/", "tests/test_fetch.py")))

    assert [s.name for s in lab.services] == ["fixtures", "mirror", "db"]
    fixtures, mirror, db = lab.services
    assert fixtures.argv == ("python3", "-m", "http.server", "8000", "--bind", "127.0.0.1")
    assert fixtures.cwd == tmp_path / "fixtures"
    assert fixtures.cwd_given
    assert fixtures.ready == TcpReady(8000, "127.0.0.1")
    assert fixtures.provides == frozenset({"fixtures.http"})
    assert (fixtures.ready_timeout_s, fixtures.stop_timeout_s) == (30.0, 10.0)
    assert fixtures.where == f"{tmp_path / 'vmlab.toml'}:1"
    assert mirror.argv == (
        "/bin/sh",
        "-c",
        "./tools/mirror --upstream http://127.0.0.1:8000 --port 8001",
    )
    assert mirror.cwd == tmp_path
    assert not mirror.cwd_given
    assert mirror.env == (("MIRROR_CACHE", "/tmp/mirror-cache"),)
    assert mirror.ready == LogReady("listening on .*:8001")
    assert (mirror.ready_timeout_s, mirror.stop_timeout_s) == (60.0, 5.0)
    assert mirror.requires == frozenset({"fixtures.http"})
    assert (db.container, db.argv) == ("docker.io/library/postgres:16", ())
    assert db.ready == CmdReady("pg_isready -h 127.0.0.1 -p 5432")

    # As the doc says: --suite client needs fixtures and mirror, not db; the test
    # requires a service's capability and waits for no other test.
    plan = make_plan(
        lab, level=1, suites=("client",), allow_dangerous=False, jobs=1, past_durations={}
    )
    assert [job.depends_on for job in plan.jobs] == [frozenset()]
    required = {cap for test in plan.tests for cap in test.requires}
    assert [s.name for s in needed_services(lab.services, required)] == ["fixtures", "mirror"]


def test_defaults_and_both_command_forms(tmp_path: Path) -> None:
    lab = load_lab(
        write_lab(
            tmp_path,
            """
            [service.plain]
            command = "exec ./server"

            [service.argv]
            command = ["./server", "--port", "80"]
            ready = { tcp = 80, host = "::1" }
            """,
        )
    )
    plain, argv = lab.services
    assert plain.argv == ("/bin/sh", "-c", "exec ./server")
    assert plain.ready is None
    assert plain.ready_timeout_s == DEFAULT_READY_TIMEOUT_S
    assert plain.stop_timeout_s == DEFAULT_STOP_TIMEOUT_S
    assert (plain.requires, plain.provides, plain.container) == (frozenset(), frozenset(), None)
    assert argv.argv == ("./server", "--port", "80")
    assert argv.ready == TcpReady(80, "::1")


def test_a_capability_from_both_a_service_and_a_test(tmp_path: Path) -> None:
    """The test that provides it still goes first; the service is up anyway."""
    lab = load_lab(
        write_lab(
            tmp_path,
            """
            [service.srv]
            command = "true"
            provides = ["data"]

            [suite.a]
            [[suite.a.test]]
            name = "make"
            run = "true"
            provides = ["data"]
            [[suite.a.test]]
            name = "use"
            run = "true"
            requires = ["data"]
            """,
        )
    )
    plan = make_plan(lab, level=1, allow_dangerous=False, jobs=1, past_durations={})
    assert [t.test_id for t in plan.tests] == ["a/make", "a/use"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            """
            [service.web]
            command = "serve"
            ready = { tcp = 70000 }
            """,
            "vmlab.toml:3: service.web.ready.tcp: 70000 is not a TCP port (1 to 65535)",
        ),
        (
            """
            [service.web]
            command = "serve"
            ready = { tcp = "8080" }
            """,
            "vmlab.toml:3: service.web.ready.tcp: expected an integer, got string '8080'",
        ),
        (
            """
            [service.web]
            command = "serve"
            ready = { log = "listening (on" }
            """,
            "vmlab.toml:3: service.web.ready.log: 'listening (on' is not a regular "
            "expression: missing ), unterminated subpattern",
        ),
        (
            """
            [service.web]
            command = "serve"

            [service.web.ready]
            tcp = 8080
            log = "up"
            """,
            "vmlab.toml:6: service.web.ready.log: one check only, not tcp and log",
        ),
        (
            """
            [service.web]
            command = "serve"
            ready = {}
            """,
            'vmlab.toml:3: service.web.ready: no check (write { tcp = PORT }, { log = "REGEX" } '
            'or { cmd = "..." })',
        ),
        (
            """
            [service.web]
            command = "serve"
            ready = { log = "up", host = "10.0.0.1" }
            """,
            "vmlab.toml:3: service.web.ready.host: host goes with tcp "
            "({ tcp = PORT, host = ADDRESS })",
        ),
        (
            """
            [service.web]
            command = "serve"
            ready = { port = 80 }
            """,
            "vmlab.toml:3: service.web.ready.port: unknown key (known keys: tcp, host, log, cmd)",
        ),
        (
            """
            [service.web]
            description = "no command"
            """,
            'vmlab.toml:1: service.web: no command (command = "./server --port 8080", '
            'or container = "IMAGE")',
        ),
        (
            """
            [service.web]
            command = 8080
            """,
            "vmlab.toml:2: service.web.command: expected a string or an array of strings, "
            "got integer 8080",
        ),
        (
            """
            [service.web]
            command = ["serve", 80]
            """,
            "vmlab.toml:2: service.web.command: expected an array of strings, got integer 80 in it",
        ),
        (
            """
            [service.web]
            command = "  "
            """,
            "vmlab.toml:2: service.web.command: empty command",
        ),
        (
            """
            [service.web]
            command = "serve"
            ready_timeout = "soon"
            """,
            "vmlab.toml:3: service.web.ready_timeout: 'soon' is not a duration (try 90s, 5m or 1h)",
        ),
        (
            """
            [service.web]
            command = "serve"
            cwd = "nowhere"
            """,
            "vmlab.toml:3: service.web.cwd: no such directory: {tmp}/nowhere "
            "(relative to the lab file's directory)",
        ),
        (
            """
            [service.web]
            command = "serve"
            env = { "bad-name" = "x" }
            """,
            "vmlab.toml:3: service.web.env.bad-name: 'bad-name' is not an environment "
            "variable name",
        ),
        (
            """
            [service.web]
            command = "serve"
            requires = ["db.redy"]

            [service.db]
            command = "serve"
            provides = ["db.ready"]
            """,
            "vmlab.toml:3: service.web.requires[0]: nothing provides 'db.redy', which "
            "service web needs (did you mean 'db.ready'?)",
        ),
        (
            """
            [service.web]
            command = "serve"
            requires = ["tinyfs.built"]

            [suite.s]
            [[suite.s.test]]
            name = "build"
            run = "true"
            provides = ["tinyfs.built"]
            """,
            "vmlab.toml:3: service.web.requires[0]: 'tinyfs.built' is provided by a test, "
            "and services start before any test (only another service can provide what a "
            "service requires)",
        ),
        (
            """
            [service.web]
            command = "serve"
            provides = ["web up"]
            """,
            "vmlab.toml:3: service.web.provides[0]: 'web up' is not a capability name "
            "(like 'tinyfs.loaded')",
        ),
        (
            """
            [service.a]
            command = "serve"
            provides = ["a.up"]
            requires = ["b.up"]

            [service.b]
            command = "serve"
            provides = ["b.up"]
            requires = ["a.up"]
            """,
            "vmlab.toml:4: service.a.requires[0]: capability cycle: service.a -> service.b -> "
            "service.a (each needs a capability that the next one provides)",
        ),
        (
            """
            [service.a]
            command = "serve"
            provides = ["a.up"]
            requires = ["a.up"]
            """,
            "vmlab.toml:4: service.a.requires[0]: service a provides 'a.up' itself",
        ),
        (
            """
            [service."bad name"]
            command = "serve"
            """,
            "vmlab.toml:1: service.\"bad name\": 'bad name' is not a valid service name "
            "(use letters, digits, _ - .)",
        ),
        (
            """
            [service.db]
            container = ""
            """,
            "vmlab.toml:2: service.db.container: empty image name",
        ),
        (
            """
            [service.db]
            container = "postgres"
            comand = "x"
            """,
            "vmlab.toml:3: service.db.comand: unknown key (did you mean 'command'?)",
        ),
        (
            """
            [suite.s]
            [[suite.s.test]]
            name = "t"
            run = "true"
            requires = ["nfs.sever"]

            [service.nfs]
            command = "serve"
            provides = ["nfs.server"]
            """,
            "vmlab.toml:5: suite.s.test[0].requires[0]: nothing provides 'nfs.sever', which "
            "s/t needs (did you mean 'nfs.server'?)",
        ),
    ],
)
def test_mistakes(tmp_path: Path, text: str, expected: str) -> None:
    assert error_of(tmp_path, text) == expected.replace("{tmp}", str(tmp_path))
