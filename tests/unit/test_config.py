"""The lab file: loading good labs, and one exact line for each kind of mistake."""

from __future__ import annotations

import re
import textwrap
import typing
from pathlib import Path

import pytest

from vmlab import config, config_schema
from vmlab.config import Lab, Safety, TestFormat, load_lab
from vmlab.config_toml import KeyIndex, KeyPath, dotted
from vmlab.errors import ConfigError, UsageError
from vmlab.machine.spec import Accel, Share

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data" / "labs"


def write_lab(directory: Path, text: str, files: tuple[str, ...] = ()) -> Path:
    """Write `text` (dedented, first newline dropped) as vmlab.toml plus empty `files`
    (names ending in / are directories)."""
    for name in files:
        path = directory / name
        if name.endswith("/"):
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("")
    lab = directory / "vmlab.toml"
    lab.write_text(textwrap.dedent(text).removeprefix("\n"))
    return lab


def error_of(directory: Path, text: str, files: tuple[str, ...] = ()) -> str:
    """The ConfigError message loading this lab gives, without the file's path."""
    lab = write_lab(directory, text, files)
    with pytest.raises(ConfigError) as caught:
        load_lab(lab)
    message = str(caught.value)
    assert message.startswith(f"{lab}:"), message
    assert "\n" not in message
    return "vmlab.toml:" + message.removeprefix(f"{lab}:")


# ------------------------------------------------------------------ good labs


def docs_example(directory: Path) -> Path:
    """The complete example of docs/lab-file.md, with the files it names."""
    doc = (REPO / "docs" / "lab-file.md").read_text()
    section = doc.split("## A complete example", 1)[1]
    match = re.search(r"```toml\n(.*?)```", section, re.DOTALL)
    assert match is not None
    return write_lab(
        directory,
        match.group(1),
        (
            "module/",
            "tests/fs/test_crud.py",
            "tests/fs/test_remount.py",
            "tests/perf/test_throughput.py",
        ),
    )


def test_the_documented_example_loads_as_documented(tmp_path: Path) -> None:
    lab = load_lab(docs_example(tmp_path))

    assert lab.name == "tinyfs"
    assert lab.path == tmp_path / "vmlab.toml"
    assert lab.root == tmp_path
    assert list(lab.machines) == ["dev", "fs", "bench"]
    dev = lab.machines["dev"]
    assert dev.spec.memory_mib == 1024
    assert dev.spec.cpus == 2
    assert dev.spec.name == "dev"
    assert dev.spec.kernel is None
    assert dev.spec.shares == (Share(tmp_path / "module", Path("/src/tinyfs"), writable=True),)
    assert dev.spec.append == ("loglevel=7",)
    assert dev.spec.env == (("TINYFS_SRC", "/src/tinyfs"),)
    assert dev.setup == ()
    fs = lab.machines["fs"]
    assert fs.spec.shares == (Share(tmp_path / "module", Path("/src/tinyfs"), writable=False),)
    assert fs.setup[0] == "insmod /src/tinyfs/tinyfs.ko"
    assert len(fs.setup) == 3
    bench = lab.machines["bench"]
    assert bench.spec.memory_mib == 2048
    assert bench.spec.accel is Accel.AUTO
    assert bench.modules_load == ("loop", "ext4")

    assert [s.name for s in lab.suites] == ["kernel_module", "filesystem", "performance"]
    assert [s.domain for s in lab.suites] == ["kernel_module", "filesystem", "performance"]
    assert [s.machine for s in lab.suites] == ["dev", "fs", "bench"]
    tests = {t.test_id: t for t in lab.tests}
    assert list(tests) == [
        "kernel_module/build",
        "kernel_module/load-unload",
        "kernel_module/clean-log",
        "kernel_module/unload-while-mounted",
        "kernel_module/failslab",
        "filesystem/crud",
        "filesystem/remount",
        "filesystem/concurrent-writers",
        "performance/throughput",
        "performance/metadata-ops",
    ]
    build = tests["kernel_module/build"]
    assert build.timeout_s == 300.0
    assert build.provides == frozenset({"tinyfs.built"})
    assert build.format is TestFormat.EXIT
    assert build.cwd == tmp_path
    assert build.machine == "dev"
    assert build.where == f"{tmp_path / 'vmlab.toml'}:43"
    assert tests["kernel_module/load-unload"].format is TestFormat.TAP
    assert tests["kernel_module/load-unload"].timeout_s == 120.0  # lab.defaults
    assert tests["kernel_module/clean-log"].safety is Safety.MONITORED
    assert tests["kernel_module/unload-while-mounted"].safety is Safety.RISKY
    failslab = tests["kernel_module/failslab"]
    assert (failslab.safety, failslab.level, failslab.format) == (
        Safety.DANGEROUS,
        3,
        TestFormat.KTAP,
    )
    crud = tests["filesystem/crud"]
    assert crud.pytest == tmp_path / "tests" / "fs" / "test_crud.py"
    assert crud.run is None
    assert crud.format is TestFormat.PYTEST
    assert crud.requires == frozenset({"tinyfs.built"})  # from the suite
    assert crud.env == (("MNT", "/mnt/tinyfs"),)
    assert crud.level == 1
    assert tests["filesystem/remount"].level == 2
    assert tests["filesystem/concurrent-writers"].timeout_s == 300.0
    assert tests["performance/throughput"].timeout_s == 600.0  # the suite's
    assert tests["performance/throughput"].level == 2
    assert tests["performance/metadata-ops"].format is TestFormat.JUNIT


def test_a_minimal_lab_gets_a_default_machine(tmp_path: Path) -> None:
    (tmp_path / "proj").mkdir()
    write_lab(
        tmp_path / "proj",
        """
        [[suite.smoke.test]]
        name = "uname"
        run = "uname -r"
        """,
    )
    lab = load_lab(tmp_path / "proj")  # a directory means its vmlab.toml
    assert lab.name == "proj"
    assert list(lab.machines) == [config.DEFAULT_MACHINE]
    spec = lab.machines["default"].spec
    assert (spec.memory_mib, spec.cpus, spec.accel, spec.shares) == (512, 1, Accel.AUTO, ())
    (test,) = lab.tests
    assert test.test_id == "smoke/uname"
    assert (test.domain, test.machine, test.level, test.safety) == (
        "smoke",
        "default",
        1,
        Safety.SAFE,
    )
    assert test.timeout_s == config.DEFAULT_TIMEOUT_S
    assert len(lab.sha256) == 64


def test_values_in_all_their_spellings(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "kernels").mkdir()
    (tmp_path / "kernels" / "bzImage").write_bytes(b"")
    write_lab(
        tmp_path,
        """
        [lab.defaults]
        machine = "a"
        safety = "monitored"
        timeout = 90

        [machine.a]
        kernel = "kernels/bzImage"
        memory = 256
        append = "console=ttyS0 quiet"
        setup = "echo hi"
        accel = "tcg"
        boot_timeout = "1m30s"
        shares = [
            "data",
            "data:/mnt/d",
            "data:rw",
            "data:/mnt/w:rw",
            { host = "data", guest = "/mnt/t", rw = true },
        ]

        [machine.b]

        [suite.s]
        timeout = "500ms"
        env = { A = "1", B = "2" }
        cwd = "data"

        [[suite.s.test]]
        name = "x"
        run = "true"
        env = { B = "3" }

        [[suite.s.test]]
        name = "y.2_z-w"
        run = "true"
        timeout = "1h"
        safety = "safe"
        cwd = "."
        """,
    )
    lab = load_lab(tmp_path / "vmlab.toml")
    a = lab.machines["a"].spec
    assert a.kernel == tmp_path / "kernels" / "bzImage"
    assert a.memory_mib == 256
    assert a.append == ("console=ttyS0 quiet",)
    assert lab.machines["a"].setup == ("echo hi",)
    assert a.accel is Accel.TCG
    assert a.boot_timeout == 90.0
    data = tmp_path / "data"
    assert a.shares == (
        Share(data, data, writable=False),
        Share(data, Path("/mnt/d"), writable=False),
        Share(data, data, writable=True),
        Share(data, Path("/mnt/w"), writable=True),
        Share(data, Path("/mnt/t"), writable=True),
    )
    x, y = lab.tests
    assert x.machine == "a"  # lab.defaults.machine
    assert x.safety is Safety.MONITORED
    assert x.timeout_s == 0.5
    assert x.env == (("A", "1"), ("B", "3"))
    assert x.cwd == data
    assert y.timeout_s == 3600.0
    assert y.safety is Safety.SAFE
    assert y.cwd == tmp_path


def test_a_fixture_lab_from_the_data_directory() -> None:
    lab = load_lab(DATA / "two-suites")
    assert [t.test_id for t in lab.tests] == ["build/make", "check/ok", "check/tap"]
    assert lab.suite("check").requires == frozenset({"built"})
    assert lab.suite("check").where.endswith("vmlab.toml:13")


# ----------------------------------------------------------- malformed input


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            """
            [machine.db]
            cpus = 2
            memory = 1G
            """,
            "vmlab.toml:3: machine.db.memory: invalid TOML: expected newline or end of document "
            'after a statement (one key per line; quote strings: key = "text")',
        ),
        (
            """
            [machine.db]
            accel = kvm
            """,
            "vmlab.toml:2: machine.db.accel: invalid TOML: invalid value "
            '(quote strings: key = "text")',
        ),
        (
            """
            [machine.db]
            cpus = 2
            cpus = 3

            [suite.x]
            """,
            "vmlab.toml:3: machine.db.cpus: invalid TOML: cannot overwrite a value "
            "(a key is set twice)",
        ),
        (
            """
            [machine.db]
            setup = "echo
            """,
            "vmlab.toml:2: machine.db.setup: invalid TOML: illegal character '\\n' "
            "(a quote is not closed)",
        ),
        (
            """
            [machine.db]
            [machine.db]
            """,
            "vmlab.toml:2: machine.db: invalid TOML: cannot declare ('machine', 'db') twice "
            "(a table is declared twice)",
        ),
    ],
)
def test_malformed_toml(tmp_path: Path, text: str, expected: str) -> None:
    assert error_of(tmp_path, text) == expected


def test_text_that_is_not_utf8(tmp_path: Path) -> None:
    lab = tmp_path / "vmlab.toml"
    lab.write_bytes(b"[lab]\nname = 'x'\ndescription = '\xff'\n")
    with pytest.raises(ConfigError, match=r"vmlab.toml:3: not UTF-8 text"):
        load_lab(lab)


def test_a_missing_lab_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such lab file") as caught:
        load_lab(tmp_path)
    assert not isinstance(caught.value, ConfigError) or "vmlab.toml" in str(caught.value)
    assert caught.value.exit_code == 2


# ---------------------------------------------------------------- unknown keys


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            """
            # the issue's example, on line 7
            [lab]
            name = "x"

            [machine.db]
            memory = "1G"
            memroy = "2G"
            """,
            "vmlab.toml:7: machine.db.memroy: unknown key (did you mean 'memory'?)",
        ),
        (
            """
            [machines.db]
            memory = "1G"
            """,
            "vmlab.toml:1: machines: unknown key (did you mean 'machine'?)",
        ),
        (
            """
            [lab.defaults]
            timout = 3
            """,
            "vmlab.toml:2: lab.defaults.timout: unknown key (did you mean 'timeout'?)",
        ),
        (
            """
            [machine.db]
            shares = [
                "/tmp",
                { host = "/tmp", gust = "/x" },
            ]
            """,
            "vmlab.toml:4: machine.db.shares[1].gust: unknown key (did you mean 'guest'?)",
        ),
        (
            """
            [suite.fs]
            [[suite.fs.test]]
            name = "a"
            run = "true"

            [[suite.fs.test]]
            name = "b"
            run = "true"
            timeuot = "5s"
            """,
            "vmlab.toml:9: suite.fs.test[1].timeuot: unknown key (did you mean 'timeout'?)",
        ),
        (
            """
            [suite.fs]
            zzz = 1
            """,
            "vmlab.toml:2: suite.fs.zzz: unknown key (known keys: description, domain, machine, "
            "level, cwd, timeout, safety, requires, provides, env, test, module_cycles)",
        ),
        (
            """
            [machine.db]
            image = "debain"
            """,
            "vmlab.toml:2: machine.db.image: no image named 'debain' (declare [image.debain])",
        ),
    ],
)
def test_unknown_keys(tmp_path: Path, text: str, expected: str) -> None:
    assert error_of(tmp_path, text) == expected


# ----------------------------------------------------------------- wrong types


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            """
            [machine.db]
            cpus = "2"
            """,
            "vmlab.toml:2: machine.db.cpus: expected an integer, got string '2'",
        ),
        (
            """
            [machine.db]
            cpus = 0
            """,
            "vmlab.toml:2: machine.db.cpus: 0 is too small (at least 1)",
        ),
        (
            """
            [machine.db]
            memory = "1X"
            """,
            "vmlab.toml:2: machine.db.memory: '1X' is not a size (try 512M or 2G)",
        ),
        (
            """
            [machine.db]
            memory = true
            """,
            "vmlab.toml:2: machine.db.memory: expected a size like 512M or 2G, got boolean true",
        ),
        (
            """
            [machine.db]
            accel = "fast"
            """,
            "vmlab.toml:2: machine.db.accel: 'fast' is not one of: auto, kvm, tcg",
        ),
        (
            """
            [machine.db]
            env = { PORT = 8080 }
            """,
            "vmlab.toml:2: machine.db.env.PORT: expected a string, got integer 8080 "
            '(quote it: "8080")',
        ),
        (
            """
            [machine.db]
            setup = [
                "echo one",
                3,
            ]
            """,
            'vmlab.toml:4: machine.db.setup[1]: expected a string, got integer 3 (quote it: "3")',
        ),
        (
            """
            [machine.db]
            shares = ["a:b:c:rw"]
            """,
            "vmlab.toml:2: machine.db.shares[0]: 'a:b:c:rw' is not a share (write "
            "'HOST[:GUEST][:rw]', or a table {host = ..., guest = ...} for paths with ':')",
        ),
        (
            """
            [machine.db]
            shares = [{ guest = "/x" }]
            """,
            "vmlab.toml:2: machine.db.shares[0].host: missing (this key is required)",
        ),
        (
            """
            [suite.fs]
            level = 4
            [[suite.fs.test]]
            name = "a"
            run = "true"
            """,
            "vmlab.toml:2: suite.fs.level: 4 is not a level (1 smoke, 2 integration, 3 stress)",
        ),
        (
            """
            [suite.fs]
            requires = "x"
            """,
            "vmlab.toml:2: suite.fs.requires: expected an array, got string 'x' (write [\"x\"])",
        ),
        (
            """
            [suite.fs.test.a]
            run = "true"
            """,
            "vmlab.toml:1: suite.fs.test: expected an array, got a table "
            "(write each test as a [[suite.NAME.test]] table)",
        ),
        (
            """
            [suite.fs]

            [[suite.fs.test]]
            name = "a"
            run = "true"
            safety = "yolo"
            format = "xml"
            """,
            "vmlab.toml:6: suite.fs.test[0].safety: 'yolo' is not one of: safe, monitored, "
            "risky, dangerous",
        ),
        (
            """
            [[suite.fs.test]]
            name = "a"
            run = "true"
            timeout = "5x"
            """,
            "vmlab.toml:4: suite.fs.test[0].timeout: '5x' is not a duration (try 90s, 5m or 1h)",
        ),
        (
            """
            [[suite.fs.test]]
            name = "a"
            run = "true"
            timeout = 0
            """,
            "vmlab.toml:4: suite.fs.test[0].timeout: 0 is not a positive duration "
            "(try 90s, 5m or 1h)",
        ),
        (
            """
            [[suite.fs.test]]
            name = "a"
            run = "true"

            [[suite.fs.test]]
            run = "true"
            """,
            "vmlab.toml:5: suite.fs.test[1].name: missing (this key is required)",
        ),
    ],
)
def test_wrong_types_and_values(tmp_path: Path, text: str, expected: str) -> None:
    assert error_of(tmp_path, text) == expected


def test_the_first_mistake_in_the_file_is_reported_and_all_are_in_details(
    tmp_path: Path,
) -> None:
    text = """
        [suite.fs]
        level = 9
        [[suite.fs.test]]
        name = "a"
        run = "true"

        [machine.db]
        cpus = "2"
        """
    assert error_of(tmp_path, text) == (
        "vmlab.toml:2: suite.fs.level: 9 is not a level (1 smoke, 2 integration, 3 stress)"
    )
    with pytest.raises(ConfigError) as caught:
        load_lab(tmp_path)
    assert caught.value.details == (
        f"{caught.value.message}\n"
        f"{tmp_path / 'vmlab.toml'}:8: machine.db.cpus: expected an integer, got string '2'"
    )


# ---------------------------------------------------- meaning: machines, files


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            """
            [machine.db]
            [machine.web]

            [suite.fs]
            machine = "dbb"
            [[suite.fs.test]]
            name = "a"
            run = "true"
            """,
            "vmlab.toml:5: suite.fs.machine: no machine named 'dbb' (did you mean 'db'?)",
        ),
        (
            """
            [machine.db]
            [machine.web]

            [suite.fs]
            [[suite.fs.test]]
            name = "a"
            run = "true"
            """,
            "vmlab.toml:4: suite.fs: no machine (set machine = one of: db, web)",
        ),
        (
            """
            [lab.defaults]
            machine = "zz"
            [machine.db]
            """,
            "vmlab.toml:2: lab.defaults.machine: no machine named 'zz' (known: db)",
        ),
        (
            """
            [suite.fs]
            description = "nothing yet"
            """,
            "vmlab.toml:1: suite.fs: no tests (add a [[suite.fs.test]] table)",
        ),
        (
            """
            [[suite."my suite".test]]
            name = "a"
            run = "true"
            """,
            "vmlab.toml:1: suite.\"my suite\": 'my suite' is not a valid suite name "
            "(use letters, digits, _ - .)",
        ),
        (
            """
            [[suite.fs.test]]
            name = "a/b"
            run = "true"
            """,
            "vmlab.toml:2: suite.fs.test[0].name: 'a/b' is not a valid test name "
            "(use letters, digits, _ - .)",
        ),
        (
            """
            [[suite.fs.test]]
            name = "a"
            run = "true"

            [[suite.fs.test]]
            name = "a"
            run = "false"
            """,
            "vmlab.toml:6: suite.fs.test[1].name: duplicate test name 'a' (also on line 2)",
        ),
        (
            """
            [[suite.fs.test]]
            name = "a"
            run = "true"
            pytest = "tests/test_a.py"
            """,
            "vmlab.toml:4: suite.fs.test[0].pytest: a test has run or pytest, not both",
        ),
        (
            """
            [[suite.fs.test]]
            name = "a"
            description = "forgot what to run"
            """,
            'vmlab.toml:1: suite.fs.test[0]: no run or pytest (run = "./check.sh" or '
            'pytest = "tests/test_x.py")',
        ),
        (
            """
            [[suite.fs.test]]
            name = "a"
            run = "  "
            """,
            "vmlab.toml:3: suite.fs.test[0].run: empty command",
        ),
        (
            """
            [machine.db]
            env = { "MY-VAR" = "1" }
            """,
            "vmlab.toml:2: machine.db.env.MY-VAR: 'MY-VAR' is not an environment variable name",
        ),
        (
            """
            [machine.db]
            modules_load = ["loop", "ext4 debug=1"]
            """,
            "vmlab.toml:2: machine.db.modules_load[1]: 'ext4 debug=1' is not a module name",
        ),
    ],
)
def test_meaning(tmp_path: Path, text: str, expected: str) -> None:
    assert error_of(tmp_path, text) == expected


def test_missing_paths_name_the_resolved_path(tmp_path: Path) -> None:
    text = """
        [machine.db]
        shares = ["here", "gone:/mnt"]

        [[suite.fs.test]]
        name = "a"
        pytest = "tests/test_a.py"
        """
    assert error_of(tmp_path, text, ("here/",)) == (
        f"vmlab.toml:2: machine.db.shares[1]: no such directory: {tmp_path / 'gone'} "
        "(relative to the lab file's directory)"
    )
    (tmp_path / "gone").mkdir()
    assert error_of(tmp_path, text) == (
        f"vmlab.toml:6: suite.fs.test[0].pytest: no such file: "
        f"{tmp_path / 'tests' / 'test_a.py'} (relative to the lab file's directory)"
    )
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_a.py").write_text("")
    assert load_lab(tmp_path / "vmlab.toml").tests[0].pytest == tmp_path / "tests/test_a.py"


def test_missing_kernel_and_bad_guest_path(tmp_path: Path) -> None:
    assert (
        error_of(
            tmp_path,
            """
        [machine.db]
        kernel = "/nonexistent/vmlinuz"
        """,
        )
        == "vmlab.toml:2: machine.db.kernel: no such file: /nonexistent/vmlinuz"
    )
    assert (
        error_of(
            tmp_path,
            """
        [machine.db]
        shares = [{ host = ".", guest = "relative" }]
        """,
        )
        == "vmlab.toml:2: machine.db.shares[0]: guest path 'relative' is not absolute "
        "(try /mnt/...)"
    )


def test_format_goes_with_run_only(tmp_path: Path) -> None:
    assert error_of(
        tmp_path,
        """
        [[suite.fs.test]]
        name = "a"
        pytest = "t.py"
        format = "tap"
        """,
        ("t.py",),
    ) == (
        "vmlab.toml:4: suite.fs.test[0].format: format is for run tests "
        "(pytest reports its own results)"
    )


# ------------------------------------------------------------------ capabilities


def test_a_capability_nobody_provides(tmp_path: Path) -> None:
    assert error_of(
        tmp_path,
        """
        [[suite.build.test]]
        name = "make"
        run = "make"
        provides = ["module.built"]

        [suite.fs]
        requires = ["module.biult"]

        [[suite.fs.test]]
        name = "a"
        run = "true"
        """,
    ) == (
        "vmlab.toml:7: suite.fs.requires[0]: nothing provides 'module.biult', which suite fs "
        "needs (did you mean 'module.built'?)"
    )
    assert error_of(
        tmp_path,
        """
        [[suite.fs.test]]
        name = "a"
        run = "true"

        [[suite.fs.test]]
        name = "b"
        run = "true"
        requires = [
            "zzz",
        ]
        """,
    ) == (
        "vmlab.toml:9: suite.fs.test[1].requires[0]: nothing provides 'zzz', which fs/b needs "
        "(add provides = ['zzz'] to the test or suite that sets it up)"
    )


def test_a_capability_cycle_prints_the_cycle(tmp_path: Path) -> None:
    assert error_of(
        tmp_path,
        """
        [[suite.a.test]]
        name = "x"
        run = "true"
        requires = ["from-b"]
        provides = ["from-a"]

        [[suite.b.test]]
        name = "y"
        run = "true"
        requires = ["from-a"]
        provides = ["from-b"]
        """,
    ) == (
        "vmlab.toml:4: suite.a.test[0].requires[0]: capability cycle: a/x -> b/y -> a/x "
        "(each needs a capability that the next one provides)"
    )


def test_a_three_step_cycle_through_a_suite_requirement(tmp_path: Path) -> None:
    message = error_of(
        tmp_path,
        """
        [suite.a]
        requires = ["c"]
        [[suite.a.test]]
        name = "x"
        run = "true"
        provides = ["a"]

        [[suite.b.test]]
        name = "y"
        run = "true"
        requires = ["a"]
        provides = ["b"]

        [[suite.c.test]]
        name = "z"
        run = "true"
        requires = ["b"]
        provides = ["c"]
        """,
    )
    assert message == (
        "vmlab.toml:2: suite.a.requires[0]: capability cycle: a/x -> c/z -> b/y -> a/x "
        "(each needs a capability that the next one provides)"
    )


def test_requiring_what_your_own_suite_provides_is_a_cycle(tmp_path: Path) -> None:
    assert error_of(
        tmp_path,
        """
        [suite.a]
        provides = ["ready"]

        [[suite.a.test]]
        name = "x"
        run = "true"

        [[suite.a.test]]
        name = "y"
        run = "true"
        requires = ["ready"]
        """,
    ) == (
        "vmlab.toml:11: suite.a.test[1].requires[0]: capability cycle: a/y -> a/y "
        "(a test cannot require what it or its suite provides)"
    )


def test_dependency_graph_and_cycles_on_specs() -> None:
    a = config.TestSpec("s", "a", run="true", provides=frozenset({"p"}))
    b = config.TestSpec("s", "b", run="true", provides=frozenset({"p"}))
    c = config.TestSpec("t", "c", run="true", requires=frozenset({"p"}))
    graph = config.dependency_graph([a, b, c])
    assert graph == {"s/a": frozenset(), "s/b": frozenset(), "t/c": frozenset({"s/a", "s/b"})}
    assert config.capability_cycle(graph) is None
    assert config.capability_cycle({"x": {"y"}, "y": {"x"}}) in (["x", "y", "x"], ["y", "x", "y"])
    with pytest.raises(ConfigError, match=r"suite\.t: test c requires 'q', which nothing provides"):
        config.dependency_graph([config.TestSpec("t", "c", run="true", requires=frozenset("q"))])


# ------------------------------------------------------------ resolved specs


def test_test_spec_invariants() -> None:
    spec = config.TestSpec("s", "p", pytest=Path("/x/test_p.py"))
    assert spec.format is TestFormat.PYTEST
    assert spec.domain == "s"
    with pytest.raises(ValueError, match="exactly one of run and pytest"):
        config.TestSpec("s", "none")
    with pytest.raises(ValueError, match="exactly one of run and pytest"):
        config.TestSpec("s", "both", run="true", pytest=Path("/x"))
    with pytest.raises(ValueError, match="format pytest"):
        config.TestSpec("s", "r", run="true", format=TestFormat.PYTEST)


def test_safety_order_and_sharing() -> None:
    assert sorted(Safety, key=lambda s: s.rank) == [
        Safety.SAFE,
        Safety.MONITORED,
        Safety.RISKY,
        Safety.DANGEROUS,
    ]
    assert [s.shares_vm for s in Safety] == [True, True, False, False]


def test_the_schema_accepts_exactly_the_enum_values() -> None:
    assert typing.get_args(config_schema.SafetyName) == tuple(Safety)
    formats = tuple(f for f in TestFormat if f is not TestFormat.PYTEST)
    assert typing.get_args(config_schema.FormatName) == formats
    assert typing.get_args(config_schema.AccelName) == tuple(Accel)


def test_lab_is_frozen(tmp_path: Path) -> None:
    write_lab(tmp_path, '[[suite.s.test]]\nname = "a"\nrun = "true"\n')
    lab: Lab = load_lab(tmp_path)
    with pytest.raises(AttributeError):
        lab.name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        lab.machines["x"] = lab.machines["default"]  # type: ignore[index]


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (90, 90.0),
        (1.5, 1.5),
        ("90s", 90.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("500ms", 0.5),
        ("45", 45.0),
        ("1m 30s", 90.0),
    ],
)
def test_durations(value: object, seconds: float) -> None:
    assert config_schema.parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["5x", "m", "", "1.2.3s", -1, 0, True, [1]])
def test_bad_durations(value: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        config_schema.parse_duration(value)


# ---------------------------------------------------------------- the locator


def test_key_index_finds_every_kind_of_key() -> None:
    text = textwrap.dedent(
        """\
        # comment [not.a.table]
        title = "x = 1"            # 2
        [ a . "b.c" ]              # 3
        d.e = 1                    # 4
        f = '''
        [fake]
        g = 2
        '''                        # 5-8
        h = \"\"\"
        still a string \\\"\"\" \"\"\"    # 9-10
        i = [                      # 11
          1,                       # 12
          { j = 2, k = [3,         # 13
            4] },                  # 14
        ]
        [[t]]                      # 16
        name = "one"               # 17
        [[t.sub]]                  # 18
        x = 1                      # 19
        [[t]]                      # 20
        'lit key' = 1979-05-27 07:32:00Z  # 21
        [t.inner]                  # 22
        y = {z = "}"}              # 23
        """
    )
    index = KeyIndex(text)
    expected: dict[KeyPath, int] = {
        ("title",): 2,
        ("a",): 3,
        ("a", "b.c"): 3,
        ("a", "b.c", "d"): 4,
        ("a", "b.c", "d", "e"): 4,
        ("a", "b.c", "f"): 5,
        ("a", "b.c", "h"): 9,
        ("a", "b.c", "i"): 11,
        ("a", "b.c", "i", 0): 12,
        ("a", "b.c", "i", 1): 13,
        ("a", "b.c", "i", 1, "k", 1): 14,
        ("t",): 16,
        ("t", 0): 16,
        ("t", 0, "name"): 17,
        ("t", 0, "sub", 0): 18,
        ("t", 0, "sub", 0, "x"): 19,
        ("t", 1): 20,
        ("t", 1, "lit key"): 21,
        ("t", 1, "inner"): 22,
        ("t", 1, "inner", "y", "z"): 23,
        ("fake",): 1,  # not a table: falls back to line 1
        ("t", 1, "missing", "deeper"): 20,  # falls back to the enclosing table
    }
    assert {path: index.line_of(path) for path in expected} == expected


def test_key_index_with_crlf_line_ends() -> None:
    index = KeyIndex('[a]\r\nb = 1\r\n\r\n[[c]]\r\nd = "x"\r\n')
    paths: list[KeyPath] = [("a", "b"), ("c", 0), ("c", 0, "d")]
    assert [index.line_of(path) for path in paths] == [2, 4, 5]


def test_dotted_paths() -> None:
    assert dotted(("suite", "fs", "test", 2, "run")) == "suite.fs.test[2].run"
    assert dotted(("machine", 'my "db"', "env")) == 'machine."my \\"db\\"".env'
