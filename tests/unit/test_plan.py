"""The plan: selection, -k, capability order, safety partitioning, balancing."""

from __future__ import annotations

import re
import textwrap
from dataclasses import replace
from ipaddress import IPv4Address
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from vmlab.config import Lab, MachineConfig, Safety, SuiteSpec, TestSpec, load_lab
from vmlab.errors import ConfigError, UsageError
from vmlab.machine.spec import MachineSpec, NicSpec
from vmlab.plan import DANGEROUS_REASON, Job, JobKind, Plan, keyword_matcher, make_plan

REPO = Path(__file__).resolve().parents[2]


def spec(test_id: str, **fields: Any) -> TestSpec:
    suite, name = test_id.split("/")
    fields.setdefault("run", "true")
    for key in ("requires", "provides"):
        if key in fields:
            fields[key] = frozenset(fields[key])
    return TestSpec(suite=suite, name=name, machine=f"m-{suite}", **fields)


def lab_of(*tests: TestSpec) -> Lab:
    suites: dict[str, list[TestSpec]] = {}
    for test in tests:
        suites.setdefault(test.suite, []).append(test)
    machines = {
        f"m-{name}": MachineConfig(f"m-{name}", MachineSpec(name=f"m-{name}")) for name in suites
    }
    return Lab(
        path=Path("/lab/vmlab.toml"),
        name="lab",
        machines=MappingProxyType(machines),
        suites=tuple(SuiteSpec(name, f"m-{name}", tuple(ts)) for name, ts in suites.items()),
    )


def plan(lab: Lab, **options: Any) -> Plan:
    options.setdefault("level", 3)
    options.setdefault("allow_dangerous", False)
    options.setdefault("jobs", 1)
    options.setdefault("past_durations", {})
    return make_plan(lab, **options)


def layout(result: Plan) -> list[tuple[str, list[str], list[str]]]:
    """Each job as (id, its test ids, the jobs it waits for), in plan order."""
    return [(job.id, [t.test_id for t in job.tests], sorted(job.depends_on)) for job in result.jobs]


def ids(result: Plan) -> list[str]:
    return sorted(t.test_id for t in result.tests)


# ------------------------------------------------------------------- selection

LEVELS = lab_of(
    spec("kmod/load"),
    spec("kmod/stress", level=3),
    spec("fs/crud"),
    spec("fs/remount", level=2),
    spec("perf/tput", level=2),
)


def test_level_selects_that_level_and_below() -> None:
    assert ids(plan(LEVELS, level=1)) == ["fs/crud", "kmod/load"]
    assert ids(plan(LEVELS, level=2)) == ["fs/crud", "fs/remount", "kmod/load", "perf/tput"]
    assert len(plan(LEVELS, level=3).tests) == 5
    assert len(plan(LEVELS, level=9).tests) == 5


def test_named_suites() -> None:
    assert ids(plan(LEVELS, suites=["fs", "perf"])) == ["fs/crud", "fs/remount", "perf/tput"]
    with pytest.raises(UsageError) as caught:
        plan(LEVELS, suites=["fs", "filesystem"])
    assert str(caught.value) == "--suite filesystem: no such suite (known: kmod, fs, perf)"


def test_keyword_selects_by_test_id() -> None:
    assert ids(plan(LEVELS, keyword="fs/")) == ["fs/crud", "fs/remount"]
    assert ids(plan(LEVELS, keyword="s and not fs")) == ["kmod/stress"]
    assert ids(plan(LEVELS, keyword="load or CRUD", level=1)) == ["fs/crud", "kmod/load"]
    assert ids(plan(LEVELS, keyword="  ")) == ids(plan(LEVELS))


def test_bad_options() -> None:
    with pytest.raises(UsageError, match=r"--jobs 0: at least 1"):
        plan(LEVELS, jobs=0)
    with pytest.raises(UsageError, match=r"--level 0: levels start at 1"):
        plan(LEVELS, level=0)


@pytest.mark.parametrize(
    ("expression", "matching"),
    [
        ("fs", {"fs/crud", "fs/remount"}),
        ("not fs", {"kmod/load", "kmod/stress", "perf/tput"}),
        ("fs and not crud", {"fs/remount"}),
        ("kmod or perf and tput", {"kmod/load", "kmod/stress", "perf/tput"}),
        ("(kmod or perf) and t", {"kmod/stress", "perf/tput"}),
        ("not (kmod or perf) and t", {"fs/remount"}),
        ("not not load", {"kmod/load"}),
        ("LOAD", {"kmod/load"}),
        ("fs and (crud or (remount and not x))", {"fs/crud", "fs/remount"}),
        ("fs or kmod and stress", {"fs/crud", "fs/remount", "kmod/stress"}),  # and first
    ],
)
def test_keyword_expressions(expression: str, matching: set[str]) -> None:
    test_ids = ["kmod/load", "kmod/stress", "fs/crud", "fs/remount", "perf/tput"]
    matches = keyword_matcher(expression)
    assert {test_id for test_id in test_ids if matches(test_id)} == matching


@pytest.mark.parametrize(
    ("expression", "problem"),
    [
        ("", "empty expression"),
        ("a and", "it ends where a word should follow"),
        ("(a or b", "missing ')'"),
        ("a b", "unexpected 'b' (join words with and, or, not)"),
        ("a )", "unexpected ')' (join words with and, or, not)"),
        ("and a", "unexpected 'and' where a word should be"),
        ("not or", "unexpected 'or' where a word should be"),
        ("()", "unexpected ')' where a word should be"),
    ],
)
def test_bad_keyword_expressions(expression: str, problem: str) -> None:
    with pytest.raises(UsageError) as caught:
        keyword_matcher(expression)
    assert str(caught.value) == f"-k {expression!r}: {problem}"


def test_keyword_is_not_python() -> None:
    with pytest.raises(UsageError, match="unexpected '\\('"):
        keyword_matcher("__import__('os').system('false')")
    matches = keyword_matcher("os.system and 1+1")
    assert matches("x/os.system-1+1")
    assert not matches("x/os")


# ------------------------------------------------------------- capability order

CHAIN = lab_of(
    spec("build/make", provides={"built"}, timeout_s=50),
    spec("kmod/load", requires={"built"}, provides={"loaded"}, timeout_s=10),
    spec("kmod/lint", timeout_s=10),
    spec("fs/crud", requires={"loaded"}, timeout_s=30, level=2),
    spec("perf/tput", requires={"built"}, timeout_s=40),
)


def test_jobs_wait_for_the_jobs_that_provide_what_they_need() -> None:
    result = plan(CHAIN, jobs=2)
    assert layout(result) == [
        ("build#1", ["build/make"], []),
        ("kmod#1", ["kmod/lint"], []),
        ("kmod#2", ["kmod/load"], ["build#1"]),
        ("perf#1", ["perf/tput"], ["build#1"]),
        ("fs#1", ["fs/crud"], ["kmod#2"]),
    ]
    assert result.estimate_s == 90


def test_a_job_others_wait_for_is_continued_only_with_one_worker() -> None:
    lab = lab_of(
        spec("kmod/build", provides={"built"}),
        spec("kmod/load", requires={"built"}),
        spec("perf/tput", requires={"built"}),
    )
    assert layout(plan(lab, jobs=2)) == [
        ("kmod#1", ["kmod/build"], []),
        ("kmod#2", ["kmod/load"], ["kmod#1"]),
        ("perf#1", ["perf/tput"], ["kmod#1"]),
    ]
    assert layout(plan(lab, jobs=1)) == [
        ("kmod#1", ["kmod/build", "kmod/load"], []),
        ("perf#1", ["perf/tput"], ["kmod#1"]),
    ]


def test_a_suite_continues_its_job_when_nobody_else_waits_for_it() -> None:
    lab = lab_of(
        spec("kmod/build", provides={"built"}),
        spec("kmod/load", requires={"built"}),
        spec("kmod/unload", requires={"built"}),
        spec("other/x"),
    )
    assert layout(plan(lab, jobs=2))[0] == (
        "kmod#1",
        ["kmod/build", "kmod/load", "kmod/unload"],
        [],
    )


def test_selected_tests_bring_their_providers() -> None:
    result = plan(CHAIN, keyword="crud", level=2)
    assert ids(result) == ["build/make", "fs/crud", "kmod/load"]
    # fs/crud is level 2, but a level 1 selection of its provider does not pull it in
    assert ids(plan(CHAIN, keyword="load", level=1)) == ["build/make", "kmod/load"]


def test_tests_in_one_job_run_after_what_they_need() -> None:
    lab = lab_of(
        spec("s/last", requires={"b"}),
        spec("s/middle", requires={"a"}, provides={"b"}),
        spec("s/first", provides={"a"}),
    )
    assert layout(plan(lab)) == [("s#1", ["s/first", "s/middle", "s/last"], [])]


def test_a_cycle_in_a_hand_made_lab_is_a_config_error() -> None:
    lab = lab_of(
        spec("a/x", requires={"q"}, provides={"p"}),
        spec("b/y", requires={"p"}, provides={"q"}),
    )
    with pytest.raises(
        ConfigError, match=r"capability cycle: (a/x -> b/y -> a/x|b/y -> a/x -> b/y)"
    ):
        plan(lab)


def test_a_requirement_nobody_provides_in_a_hand_made_lab() -> None:
    with pytest.raises(ConfigError, match="test y requires 'p', which nothing provides"):
        plan(lab_of(spec("b/y", requires={"p"})))


def test_every_job_waits_only_for_earlier_jobs_and_every_provider_is_covered() -> None:
    lab = lab_of(
        spec("a/1", provides={"x"}, timeout_s=5),
        spec("a/2", requires={"y"}, timeout_s=50),
        spec("a/3", timeout_s=70),
        spec("b/1", requires={"x"}, provides={"y"}, timeout_s=20),
        spec("b/2", requires={"x"}, timeout_s=60),
        spec("c/1", requires={"y"}, provides={"z"}, timeout_s=30),
        spec("c/2", requires={"z"}, timeout_s=10),
    )
    for workers in (1, 2, 3, 8):
        result = plan(lab, jobs=workers)
        job_of = {t.test_id: job for job in result.jobs for t in job.tests}
        position = {job.id: i for i, job in enumerate(result.jobs)}
        for job in result.jobs:
            assert all(position[parent] < position[job.id] for parent in job.depends_on)
        for test in lab.tests:
            job = job_of[test.test_id]
            for other in lab.tests:
                if test.requires & other.provides:
                    provider_job = job_of[other.test_id]
                    if provider_job is job:
                        assert job.tests.index(other) < job.tests.index(test)
                    else:
                        assert provider_job.id in _ancestors(result, job)


def _ancestors(result: Plan, job: Job) -> set[str]:
    by_id = {j.id: j for j in result.jobs}
    seen: set[str] = set()
    todo = list(job.depends_on)
    while todo:
        job_id = todo.pop()
        if job_id not in seen:
            seen.add(job_id)
            todo.extend(by_id[job_id].depends_on)
    return seen


# ----------------------------------------------------------------------- safety

SAFETY = lab_of(
    spec("s/risky1", safety=Safety.RISKY),
    spec("s/safe1"),
    spec("s/danger", safety=Safety.DANGEROUS, provides={"broken"}),
    spec("s/monitored", safety=Safety.MONITORED),
    spec("s/risky2", safety=Safety.RISKY),
    spec("t/after", requires={"broken"}),
    spec("t/fine"),
)


def test_shared_tests_first_then_risky_ones_each_followed_by_a_fresh_vm() -> None:
    result = plan(SAFETY)
    session = result.jobs[0]
    assert session.kind is JobKind.SESSION
    assert [t.name for t in session.tests] == ["safe1", "monitored", "risky1", "risky2"]
    assert session.fresh_vm_after == frozenset({"s/risky1", "s/risky2"})
    assert session.machine_name == "m-s"
    assert session.spec == MachineSpec(name="m-s")


def test_dangerous_tests_are_skipped_unless_allowed_and_so_are_their_dependents() -> None:
    result = plan(SAFETY)
    assert [(s.test.test_id, s.reason) for s in result.skipped] == [
        ("s/danger", DANGEROUS_REASON),
        ("t/after", "needs 'broken' from skipped s/danger"),
    ]
    assert DANGEROUS_REASON == "dangerous: pass --allow-dangerous"
    assert "s/danger" not in ids(result)
    assert ids(result) == ["s/monitored", "s/risky1", "s/risky2", "s/safe1", "t/fine"]
    test, reason = result.skipped[0]  # a (test, reason) pair
    assert (test.name, reason) == ("danger", DANGEROUS_REASON)


def test_allowed_dangerous_tests_run_alone_in_a_fresh_vm() -> None:
    result = plan(SAFETY, allow_dangerous=True)
    assert result.skipped == ()
    (alone,) = [job for job in result.jobs if job.kind is JobKind.ALONE]
    assert [t.test_id for t in alone.tests] == ["s/danger"]
    assert alone.fresh_vm_after == frozenset({"s/danger"})
    after = next(job for job in result.jobs if any(t.name == "after" for t in job.tests))
    assert after.depends_on == frozenset({alone.id})
    assert all(
        t.safety is not Safety.DANGEROUS for j in result.jobs if j is not alone for t in j.tests
    )


# -------------------------------------------------------------------- balancing


def test_a_suite_is_split_longest_first_over_the_workers() -> None:
    lab = lab_of(*(spec(f"s/t{n}") for n in range(1, 7)))
    # dealt 40 30 20 10 5 5: t3 t2 t1 to one VM, t5 t6 t4 to the other; each runs in
    # the lab's order. Taken in the lab's order instead, the piles would be 65 and 45.
    past = {"s/t1": 5, "s/t2": 10, "s/t3": 40, "s/t4": 5, "s/t5": 30, "s/t6": 20}
    two = plan(lab, jobs=2, past_durations=past)
    assert layout(two) == [
        ("s#1", ["s/t1", "s/t2", "s/t3"], []),
        ("s#2", ["s/t4", "s/t5", "s/t6"], []),
    ]
    assert [job.estimate_s for job in two.jobs] == [55, 55]
    assert two.estimate_s == 55
    assert two.workers == 2
    one = plan(lab, jobs=1, past_durations=past)
    assert layout(one) == [("s#1", [f"s/t{n}" for n in range(1, 7)], [])]
    assert one.estimate_s == 110


def test_a_machine_on_a_network_is_never_split_over_workers() -> None:
    lab = lab_of(*(spec(f"s/t{n}") for n in range(1, 7)))
    nic = NicSpec(
        network="lan", mac="02:00:00:00:00:01", address=IPv4Address("10.9.0.10"), prefix=24
    )
    machine = lab.machines["m-s"]
    networked = replace(
        lab,
        machines=MappingProxyType(
            {"m-s": replace(machine, spec=replace(machine.spec, nics=(nic,)))}
        ),
    )
    past = {f"s/t{n}": 10.0 for n in range(1, 7)}
    assert [job.id for job in plan(lab, jobs=2, past_durations=past).jobs] == ["s#1", "s#2"]
    assert layout(plan(networked, jobs=2, past_durations=past)) == [
        ("s#1", [f"s/t{n}" for n in range(1, 7)], []),
    ]


def test_unknown_tests_are_estimated_at_their_timeout() -> None:
    lab = lab_of(spec("s/new", timeout_s=100), spec("s/a"), spec("s/b"))
    result = plan(lab, jobs=2, past_durations={"s/a": 30, "s/b": 20})
    assert layout(result) == [("s#1", ["s/new"], []), ("s#2", ["s/a", "s/b"], [])]
    assert result.estimate_s == 100


def test_small_suites_are_not_split_and_the_longest_job_starts_first() -> None:
    lab = lab_of(
        spec("short/a"),
        spec("long/a"),
        spec("long/b"),
        spec("mid/a"),
    )
    past = {"short/a": 10, "long/a": 25, "long/b": 25, "mid/a": 40}
    result = plan(lab, jobs=2, past_durations=past)
    assert layout(result) == [
        ("long#1", ["long/a", "long/b"], []),
        ("mid#1", ["mid/a"], []),
        ("short#1", ["short/a"], []),
    ]
    assert result.estimate_s == 50


def test_jobs_that_unlock_others_start_first() -> None:
    lab = lab_of(
        spec("big/a", timeout_s=100),
        spec("base/a", provides={"p"}, timeout_s=10),
        spec("dep/a", requires={"p"}, timeout_s=100),
    )
    result = plan(lab, jobs=1)
    assert [job.id for job in result.jobs] == ["base#1", "big#1", "dep#1"]
    assert result.estimate_s == 210
    assert plan(lab, jobs=2).estimate_s == 110


def test_an_empty_selection() -> None:
    result = plan(LEVELS, keyword="nothing-matches")
    assert (result.jobs, result.skipped, result.estimate_s) == ((), (), 0.0)


# ------------------------------------------------------------------ the docs


def test_the_documented_example_plans_as_the_docs_say(tmp_path: Path) -> None:
    doc = (REPO / "docs" / "lab-file.md").read_text()
    match = re.search(r"```toml\n(.*?)```", doc.split("## A complete example", 1)[1], re.DOTALL)
    assert match is not None
    (tmp_path / "vmlab.toml").write_text(textwrap.dedent(match.group(1)))
    for name in (
        "tests/fs/test_crud.py",
        "tests/fs/test_remount.py",
        "tests/perf/test_throughput.py",
    ):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    (tmp_path / "module").mkdir()
    lab = load_lab(tmp_path)

    result = plan(lab, level=1, jobs=2)
    assert layout(result) == [
        ("kernel_module#1", ["kernel_module/build"], []),
        (
            "kernel_module#2",
            [
                "kernel_module/load-unload",
                "kernel_module/clean-log",
                "kernel_module/unload-while-mounted",
            ],
            ["kernel_module#1"],
        ),
        ("filesystem#1", ["filesystem/crud"], ["kernel_module#1"]),
    ]
    assert result.jobs[1].fresh_vm_after == frozenset({"kernel_module/unload-while-mounted"})
    assert result.jobs[2].machine_name == "fs"

    level3 = plan(lab, level=3, jobs=2)
    assert [(s.test.test_id, s.reason) for s in level3.skipped] == [
        ("kernel_module/failslab", "dangerous: pass --allow-dangerous")
    ]
