"""The table of kernel crash reports vmlab recognises (house rule 7).

Each entry says how a report starts, how it is titled and where its guilty frame
comes from. Titles follow syzkaller's conventions (``KASAN: slab-use-after-free Read
in foo``, ``WARNING in bar``, ``kernel BUG in baz`` ...), so they read the same as on
syzbot and can be searched for there.

Title templates use ``{field}`` for named groups of the ``start`` regex, of the
``extra`` regex (searched in the rest of the report) and ``{frame}`` (the guilty
frame); a ``[...]`` segment is dropped when a field inside it is missing. A missing
field outside ``[...]`` renders as ``?`` and makes the report *corrupted*.

Every entry has a fixture ``tests/data/crashes/<name>.log`` (+ ``.json``).
Order matters: the first entry whose ``start`` matches a line wins.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass


class Kind(enum.StrEnum):
    """What kind of problem a crash report is about."""

    KASAN = "KASAN"  # KernelAddressSanitizer: out-of-bounds, use-after-free, double-free
    KFENCE = "KFENCE"  # sampling memory-safety detector (production kernels)
    KMSAN = "KMSAN"  # use of uninitialised memory
    KCSAN = "KCSAN"  # data race
    UBSAN = "UBSAN"  # undefined behaviour (array index out of bounds, shifts ...)
    SLUB = "SLUB"  # slub_debug consistency checks: double free, overwritten redzone
    WARNING = "WARNING"  # WARN_ON() and friends
    BUG = "BUG"  # BUG()/BUG_ON(), list corruption, bad page state, other "BUG:" lines
    PAGE_FAULT = "PAGE_FAULT"  # bad kernel memory access: page fault, NULL dereference
    GPF = "GPF"  # general protection fault (non-canonical address ...)
    TRAP = "TRAP"  # other CPU exceptions in the kernel: divide error, invalid opcode
    PANIC = "PANIC"  # "Kernel panic - not syncing" that is not the tail of another report
    HUNG_TASK = "HUNG_TASK"  # a task blocked in D state for too long (or cannot die)
    RCU_STALL = "RCU_STALL"  # a CPU or task held up an RCU grace period
    SOFT_LOCKUP = "SOFT_LOCKUP"  # a CPU ran kernel code without scheduling for too long
    HARD_LOCKUP = "HARD_LOCKUP"  # a CPU ran with interrupts off for too long
    WORKQUEUE_LOCKUP = "WORKQUEUE_LOCKUP"  # a worker pool made no progress
    LOCKDEP = "LOCKDEP"  # lock validator: deadlocks, bad unlocks, suspicious RCU usage
    ATOMIC_SLEEP = "ATOMIC_SLEEP"  # sleeping or scheduling in atomic context
    MEMORY_LEAK = "MEMORY_LEAK"  # kmemleak: an unreferenced object


class FrameSource(enum.Enum):
    """Where a pattern looks for its guilty frame (tried in the listed order)."""

    HEADER = "header"  # ``func`` (or ``func_alt``) group of the first line (WARNING ... at)
    AT = "at"  # the ``at: func`` line after ``at_marker`` (lockdep)
    RIP = "rip"  # a kernel-mode ``RIP: 0010:func+0x..`` line
    TRACE = "trace"  # the first stack trace of the report (``Call Trace:``, ``backtrace:``)


# The kinds that mean the kernel stopped making progress rather than crashed.
HANG_KINDS = frozenset(
    {Kind.SOFT_LOCKUP, Kind.HARD_LOCKUP, Kind.HUNG_TASK, Kind.RCU_STALL, Kind.WORKQUEUE_LOCKUP}
)


def _re(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


# A function as printed with %pS: name, offset/size, module.
_OFFSET = r"(?:\+0x[0-9a-f]+/0x[0-9a-f]+)"
_FUNC = r"(?P<func>[A-Za-z_$][\w.$]*)" + _OFFSET + r"?(?: \[[\w-]+\])?"
_SEP_END = _re(r"^={20,}$")  # closing rule of sanitizer reports
_PANIC_END = _re(r"^---\[ end Kernel panic")
_RIP_TRACE = (FrameSource.RIP, FrameSource.TRACE)
_TRACE = (FrameSource.TRACE,)

# Extra skips per report type (searched, not anchored, unless the regex anchors).
_SLEEP_SKIP = _re(
    r"^(?:_*schedule\w*|preempt_schedule\w*|io_schedule\w*|msleep\w*|usleep\w*|ssleep|fsleep"
    r"|_*cond_resched\w*|cond_resched\w*|_*wait_for_\w+|do_wait_for_common|wait_for_\w+"
    r"|_*wait_event\w*|_*might_\w+|_*synchronize_\w+|synchronize_\w+|flush_\w+|_*flush_\w+"
    r"|kthread_stop|_*mutex_\w+|mutex_\w+|_*down\w*|down\w*)$"
)
_HUNG_SKIP = _re(
    r"sched|_lock|_slowlock|^_*down|completion|^kthread|wait|synchronize|context_switch"
    r"|__switch_to|cancel_delayed_work"
)
_STALL_SKIP = _re(
    r"^(?:_*rcu_\w+|rcu_\w+|_*hrtimer_\w+|hrtimer_\w+|_*tick_\w+|tick_\w+|_*update_process_times"
    r"|update_process_times|\w*apic_timer_interrupt|_*run_hrtimer|scheduler_tick|_*sched_tick"
    r"|account_process_tick|_*handle_irq_event\w*|handle_\w+_irq|_*irq_work\w*|irq_work_\w+"
    r"|watchdog\w*|_*cpu_relax|cpu_relax|delay_\w+|_*delay|_*const_udelay|_*udelay|__ndelay)$"
)
_LEAK_SKIP = _re(
    r"kmemleak|kmalloc|kcalloc|kzalloc|vmalloc|vzalloc|kvmalloc|mmap|kmem|slab|alloc"
    r"|create_object|idr_get|list_lru_init|kasprintf|kvasprintf|pcpu_create|strdup|strndup|memdup"
)
_SLUB_SKIP = _re(
    r"^(?:free_\w*debug\w*|\w*_debug_processing|check_\w+|on_freelist|object_err|\w*slab_err"
    r"|validate_slab\w*|restore_bytes|_*slab_free\w*|do_slab_free|free_to_partial_list"
    r"|\w*consistency_checks|print_trailer|set_track\w*|_*free_slab)$"
)
_LOCKDEP_BODY = _re(
    r"^(?:-> #\d+|Chain exists of:|other info that might help|the existing dependency chain"
    r"|stack backtrace:|\d+ locks? held by|no locks held by|but task is already holding"
    r"|which lock already depends|and this task is already holding|which would create a new"
    r"|but this lock|this conflicting lock|but there are no more locks|lock\(|\[\s*\d+\]"
    r"|\S+ \(.*\)\{[-+.?]+\}-\{\d:\d\}|[0-9a-f]+ \(.*\)\{|\*\*\*|Possible unsafe locking"
    r"|irq event stamp|hardirqs last|softirqs last|IN-\S+ at:|INITIAL \S+ at:|\{\S+\} state was"
    r"|inconsistent \{|\S+/\d+ \[HC\d|rcu_scheduler_active|\S+:\d+ suspicious|\S+ is trying to"
    r"|\[<[0-9a-f]+>\])"
)


@dataclass(frozen=True)
class CrashPattern:
    """One kind of kernel crash report: how it starts, ends and is titled."""

    name: str  # unique; also the name of its fixture under tests/data/crashes/
    kind: Kind
    start: re.Pattern[str]  # matches the report's first line (log prefixes stripped)
    title: str  # template, see the module docstring
    frames: tuple[FrameSource, ...] = _RIP_TRACE  # where the guilty frame comes from
    skip: re.Pattern[str] | None = None  # frames generic for this report type only
    extra: re.Pattern[str] | None = None  # more title fields, searched in the report
    at_marker: re.Pattern[str] | None = None  # for FrameSource.AT
    end: re.Pattern[str] | None = None  # own closing line (inclusive); all lines until it
    continues: re.Pattern[str] | None = None  # report starts that continue this one
    body: re.Pattern[str] | None = None  # more lines that belong to the report
    follow_up: bool = False  # may be the tail of another report (panics)
    corrupted: bool = False  # seen on its own, the real report's start was lost
    stack: bool = True  # the report carries a stack trace
    any_source: bool = False  # may start on lines without a kernel log prefix
    task_frames_only: bool = False  # ignore frames inside <IRQ>/<NMI> (stall detectors)


PATTERNS: tuple[CrashPattern, ...] = (
    # KASAN (mm/kasan/report.c): header names the access, next line Read/Write size.
    CrashPattern(
        name="kasan",
        kind=Kind.KASAN,
        start=_re(r"^BUG: KASAN: (?P<bug>[\w-]+(?: or [\w-]+)?) in " + _FUNC),
        title="KASAN: {bug}[ {op}] in {frame}",
        frames=(FrameSource.HEADER, FrameSource.TRACE),
        extra=_re(r"^(?P<op>Read|Write) of size \d+"),
        end=_SEP_END,
    ),
    # KFENCE (mm/kfence/report.c): "BUG: KFENCE: use-after-free read in f".
    CrashPattern(
        name="kfence",
        kind=Kind.KFENCE,
        start=_re(r"^BUG: KFENCE: (?P<bug>[\w-]+(?: (?:read|write))?) in " + _FUNC),
        title="KFENCE: {bug} in {frame}",
        frames=(FrameSource.HEADER, FrameSource.TRACE),
        end=_SEP_END,
    ),
    # KMSAN (mm/kmsan/report.c): "BUG: KMSAN: uninit-value in f", stack follows at once.
    CrashPattern(
        name="kmsan",
        kind=Kind.KMSAN,
        start=_re(r"^BUG: KMSAN: (?P<bug>[\w-]+) in " + _FUNC),
        title="KMSAN: {bug} in {frame}",
        frames=(FrameSource.HEADER, FrameSource.TRACE),
        end=_SEP_END,
    ),
    # KCSAN (kernel/kcsan/report.c): both racing functions are in the header, sorted.
    CrashPattern(
        name="kcsan",
        kind=Kind.KCSAN,
        start=_re(
            r"^BUG: KCSAN: (?P<bug>[\w-]+) in (?P<func>[A-Za-z_$][\w.$]*)" + _OFFSET + "?"
            r"(?: / (?P<func2>[A-Za-z_$][\w.$]*)" + _OFFSET + "?)?"
        ),
        title="KCSAN: {bug} in {func}[ / {func2}]",
        frames=(FrameSource.HEADER, FrameSource.TRACE),
        end=_SEP_END,
    ),
    # UBSAN (lib/ubsan.c): header has the source position; blame the first caller.
    CrashPattern(
        name="ubsan",
        kind=Kind.UBSAN,
        start=_re(r"^UBSAN: (?P<bug>[\w-]+) in (?P<src>\S+)"),
        title="UBSAN: {bug} in {frame}",
        frames=_TRACE,
        end=_SEP_END,
        continues=_re(r"^(?:Oops: )?invalid opcode:"),
    ),
    # slub_debug (mm/slub.c): "BUG kmalloc-64 (Tainted: ...): Object already free".
    CrashPattern(
        name="slub",
        kind=Kind.SLUB,
        start=_re(
            r"^BUG (?P<cache>\S+) \((?:Not tainted|Tainted:[^)]*)\): (?P<problem>[A-Za-z][\w ]*\w)"
        ),
        title="SLUB: {problem} in {frame}",
        frames=_TRACE,
        skip=_SLUB_SKIP,
        body=_re(
            r"^(?:FIX |INFO: |Slab |Object |Redzone |Padding |Allocated in |Freed in |-{10,})"
        ),
    ),
    # x86 page fault on a NULL (first page) address (arch/x86/mm/fault.c).
    CrashPattern(
        name="null_deref",
        kind=Kind.PAGE_FAULT,
        start=_re(r"^BUG: (?:unable to handle )?kernel NULL pointer dereference"),
        title="BUG: kernel NULL pointer dereference in {frame}",
    ),
    # x86 page fault on any other bad kernel address.
    CrashPattern(
        name="page_fault",
        kind=Kind.PAGE_FAULT,
        start=_re(r"^BUG: unable to handle (?:page fault for address|kernel paging request)"),
        title="BUG: unable to handle page fault in {frame}",
    ),
    # Soft lockup watchdog (kernel/watchdog.c), printed from the timer interrupt.
    CrashPattern(
        name="soft_lockup",
        kind=Kind.SOFT_LOCKUP,
        start=_re(r"^(?:watchdog: )?BUG: soft lockup - CPU#\d+ stuck for \d+s!"),
        title="BUG: soft lockup in {frame}",
        skip=_STALL_SKIP,
        task_frames_only=True,
    ),
    # Hard lockup watchdog (kernel/watchdog_hld.c), printed from the perf NMI.
    CrashPattern(
        name="hard_lockup",
        kind=Kind.HARD_LOCKUP,
        start=_re(r"^(?:watchdog: )?Watchdog detected hard LOCKUP on cpu \d+"),
        title="BUG: hard lockup in {frame}",
        skip=_STALL_SKIP,
        task_frames_only=True,
    ),
    # Scheduler called with preemption disabled (kernel/sched/core.c).
    CrashPattern(
        name="scheduling_while_atomic",
        kind=Kind.ATOMIC_SLEEP,
        start=_re(r"^BUG: scheduling while atomic: "),
        title="BUG: scheduling while atomic in {frame}",
        frames=_TRACE,
        skip=_SLEEP_SKIP,
    ),
    # might_sleep() in atomic context (CONFIG_DEBUG_ATOMIC_SLEEP).
    CrashPattern(
        name="sleeping_in_atomic",
        kind=Kind.ATOMIC_SLEEP,
        start=_re(r"^BUG: sleeping function called from invalid context at (?P<src>\S+)"),
        title="BUG: sleeping function called from invalid context in {frame}",
        frames=_TRACE,
        skip=_SLEEP_SKIP,
    ),
    # smp_processor_id()/__this_cpu_*() in preemptible code (CONFIG_DEBUG_PREEMPT).
    CrashPattern(
        name="preemptible_cpu_use",
        kind=Kind.BUG,
        start=_re(r"^BUG: using (?P<what>smp_processor_id|__this_cpu_\w+)\(\) in preemptible"),
        title="BUG: using {what}() in preemptible code in {frame}",
        frames=_TRACE,
        skip=_re(
            r"^(?:check_preemption_disabled|debug_smp_processor_id|_*this_cpu_preempt_check)$"
        ),
    ),
    # Hung task detector (kernel/hung_task.c); blame the first non-waiting frame.
    CrashPattern(
        name="hung_task",
        kind=Kind.HUNG_TASK,
        start=_re(r"^INFO: task .+:\d+ blocked for more than \d+ seconds\."),
        title="INFO: task hung in {frame}",
        frames=_TRACE,
        skip=_HUNG_SKIP,
    ),
    # A killed task stuck on its way out (hung-task variant in some trees).
    CrashPattern(
        name="task_cant_die",
        kind=Kind.HUNG_TASK,
        start=_re(r"^INFO: task .+:\d+ can't die for more than \d+ seconds\."),
        title="INFO: task can't die in {frame}",
        frames=_TRACE,
        skip=_HUNG_SKIP,
    ),
    # RCU CPU stall warning (kernel/rcu/tree_stall.h), self-detected or by another CPU.
    CrashPattern(
        name="rcu_stall",
        kind=Kind.RCU_STALL,
        start=_re(
            r"^(?:rcu: )?INFO: rcu_(?:preempt|sched|bh|tasks\w*) (?:self-)?detected(?: expedited)?"
            r" stalls?"
        ),
        title="INFO: rcu detected stall in {frame}",
        skip=_STALL_SKIP,
        task_frames_only=True,
    ),
    # Workqueue watchdog (kernel/workqueue.c): no stack, one title for all.
    CrashPattern(
        name="workqueue_lockup",
        kind=Kind.WORKQUEUE_LOCKUP,
        start=_re(r"^BUG: workqueue lockup - pool"),
        title="BUG: workqueue lockup",
        frames=(),
        stack=False,
        body=_re(
            r"^(?:Showing busy workqueues|workqueue \S+: flags=|pool \d+:|Showing backtraces"
            r"|Sending NMI|NMI backtrace|CPU: \d+ PID)"
        ),
    ),
    # Page allocator sanity checks (mm/page_alloc.c, mm/memory.c); one title each.
    CrashPattern(
        name="bad_page",
        kind=Kind.BUG,
        start=_re(r"^BUG: Bad page (?P<what>state|map) in process "),
        title="BUG: Bad page {what}",
        frames=_TRACE,
        skip=_re(
            r"^(?:_*free_\w+|free_\w+|bad_page\w*|_*folio_\w+|_*page_\w+|_*put_page\w*|release_pages)$"
        ),
        body=_re(
            r"^(?:page:|head:|flags:|page_type:|raw:|page dumped because|page_owner|addr:|file:)"
        ),
    ),
    # Spinlock debugging (kernel/locking/spinlock_debug.c).
    CrashPattern(
        name="spinlock_bug",
        kind=Kind.BUG,
        start=_re(
            r"^BUG: spinlock (?P<what>lockup suspected|already unlocked|recursion|bad magic"
            r"|wrong owner|wrong CPU) on CPU#\d+"
        ),
        title="BUG: spinlock {what} in {frame}",
        frames=_TRACE,
        skip=_re(r"spin_"),
    ),
    # FORTIFY_SOURCE (lib/string_helpers.c): an overflowing mem*()/str*() call, then a
    # BUG (or, since 6.2, a WARNING) in fortify_panic/__fortify_report.
    CrashPattern(
        name="fortify",
        kind=Kind.BUG,
        start=_re(
            r"^(?:detected buffer (?:overflow|over-read) in \w+"
            r"|\w+: detected buffer (?:overflow|over-read))"
        ),
        title="fortify: detected buffer overflow in {frame}",
        continues=_re(
            r"^(?:kernel BUG at lib/string(?:_helpers)?\.c"
            r"|WARNING: CPU: \d+ PID: \d+ at lib/string(?:_helpers)?\.c|(?:Oops: )?invalid opcode:)"
        ),
    ),
    # list_debug (lib/list_debug.c): a message, then BUG (or WARNING) in __list_*_valid.
    CrashPattern(
        name="list_corruption",
        kind=Kind.BUG,
        start=_re(
            r"^(?:list_(?:add|del) corruption|list_add double add|kernel BUG at lib/list_debug\.c)"
        ),
        title="BUG: corrupted list in {frame}",
        continues=_re(
            r"^(?:kernel BUG at lib/list_debug\.c|WARNING: CPU: \d+ PID: \d+ at lib/list_debug\.c"
            r"|(?:Oops: )?invalid opcode:)"
        ),
    ),
    # BUG()/BUG_ON(): "kernel BUG at fs/foo.c:12!" then the invalid opcode oops.
    CrashPattern(
        name="kernel_bug",
        kind=Kind.BUG,
        start=_re(r"^kernel BUG at (?P<src>[^!\s]+)"),
        title="kernel BUG in {frame}",
        continues=_re(r"^(?:Oops: )?invalid opcode:"),
    ),
    # General protection fault (arch/x86/kernel/traps.c), often a poisoned pointer.
    CrashPattern(
        name="gpf",
        kind=Kind.GPF,
        start=_re(r"^(?:Oops: )?general protection fault\b.*: [0-9a-f]{4} \[#\d+\]"),
        title="general protection fault in {frame}",
    ),
    # Integer division by zero or overflow in the kernel (#DE).
    CrashPattern(
        name="divide_error",
        kind=Kind.TRAP,
        start=_re(r"^(?:Oops: )?divide error: [0-9a-f]{4}"),
        title="divide error in {frame}",
    ),
    # Undefined instruction (#UD) that is not a BUG()/WARN() site.
    CrashPattern(
        name="invalid_opcode",
        kind=Kind.TRAP,
        start=_re(r"^(?:Oops: )?invalid opcode: [0-9a-f]{4}"),
        title="invalid opcode in {frame}",
    ),
    # Stack protector canary mismatch: the panic names the function itself.
    CrashPattern(
        name="stack_protector",
        kind=Kind.PANIC,
        start=_re(
            r"^Kernel panic - not syncing: stack-protector: Kernel stack is corrupted in: "
            r"(?:[0-9a-f]{8,}|" + _FUNC + ")"
        ),
        title="kernel panic: stack is corrupted in {frame}",
        frames=(FrameSource.HEADER, FrameSource.TRACE),
        end=_PANIC_END,
    ),
    # init died (kernel/exit.c); often the tail of an oops in init itself.
    CrashPattern(
        name="panic_kill_init",
        kind=Kind.PANIC,
        start=_re(r"^Kernel panic - not syncing: Attempted to kill init!"),
        title="kernel panic: Attempted to kill init!",
        frames=_TRACE,
        end=_PANIC_END,
        follow_up=True,
    ),
    # Panics that only ever follow another report; alone, that report's start was lost.
    CrashPattern(
        name="panic_follow_up",
        kind=Kind.PANIC,
        start=_re(
            r"^Kernel panic - not syncing: (?P<msg>Fatal exception(?: in interrupt)?"
            r"|(?:\S+: )?panic_on_warn set|hung_task: blocked tasks|softlockup: hung tasks"
            r"|Hard LOCKUP|RCU Stall)"
        ),
        title="kernel panic: {msg}",
        frames=(),
        end=_PANIC_END,
        follow_up=True,
        corrupted=True,
    ),
    # Any other panic(): the message is the title (sysrq crash, no root fs, OOM ...).
    CrashPattern(
        name="panic",
        kind=Kind.PANIC,
        start=_re(r"^Kernel panic - not syncing: (?P<msg>.*\S)"),
        title="kernel panic: {msg}",
        frames=_TRACE,
        end=_PANIC_END,
        follow_up=True,
    ),
    # lockdep: AB-BA deadlock; blame the acquisition that closes the cycle.
    CrashPattern(
        name="lockdep_circular",
        kind=Kind.LOCKDEP,
        start=_re(r"^WARNING: possible circular locking dependency detected"),
        title="possible deadlock in {frame}",
        frames=(FrameSource.AT, FrameSource.TRACE),
        at_marker=_re(r"is trying to acquire lock:"),
        body=_LOCKDEP_BODY,
    ),
    # lockdep: taking a lock the task already holds.
    CrashPattern(
        name="lockdep_recursive",
        kind=Kind.LOCKDEP,
        start=_re(r"^WARNING: possible recursive locking detected"),
        title="possible deadlock in {frame}",
        frames=(FrameSource.AT, FrameSource.TRACE),
        at_marker=_re(r"is trying to acquire lock:"),
        body=_LOCKDEP_BODY,
    ),
    # lockdep: a lock used both in and outside interrupt context without protection.
    CrashPattern(
        name="lockdep_inconsistent",
        kind=Kind.LOCKDEP,
        start=_re(r"^WARNING: inconsistent lock state"),
        title="inconsistent lock state in {frame}",
        frames=(FrameSource.AT, FrameSource.TRACE),
        at_marker=_re(r"\btakes:"),
        body=_LOCKDEP_BODY,
    ),
    # lockdep: releasing a lock that is not held.
    CrashPattern(
        name="lockdep_bad_unlock",
        kind=Kind.LOCKDEP,
        start=_re(r"^WARNING: bad unlock balance detected!"),
        title="WARNING: bad unlock balance in {frame}",
        frames=(FrameSource.AT, FrameSource.TRACE),
        at_marker=_re(r"is trying to release lock"),
        body=_LOCKDEP_BODY,
    ),
    # lockdep: rcu_dereference() and friends outside the matching read-side section.
    CrashPattern(
        name="suspicious_rcu",
        kind=Kind.LOCKDEP,
        start=_re(r"^WARNING: suspicious RCU usage"),
        title="WARNING: suspicious RCU usage in {frame}",
        frames=_TRACE,
        skip=_re(r"rcu|lockdep"),
        body=_LOCKDEP_BODY,
    ),
    # lockdep: a lock whose key was never registered (uninitialised lock).
    CrashPattern(
        name="lockdep_nonstatic_key",
        kind=Kind.LOCKDEP,
        start=_re(r"^INFO: trying to register non-static key"),
        title="INFO: trying to register non-static key in {frame}",
        frames=_TRACE,
        skip=_re(r"^(?:register_lock_class|_*lock_acquire\w*|lock_acquire\w*|_*lock_\w+)$"),
        body=_re(r"^(?:The code is fine|you didn't initialize|turning off the locking)"),
    ),
    # refcount_t saturation/underflow warnings all come from lib/refcount.c.
    CrashPattern(
        name="refcount_warning",
        kind=Kind.WARNING,
        start=_re(r"^WARNING: CPU: \d+ PID: \d+ at lib/refcount\.c:\d+ "),
        title="WARNING: refcount bug in {frame}",
        skip=_re(r"refcount"),
    ),
    # WARN_ON() and friends (kernel/panic.c __warn); old kernels print "at f.c:1 func()".
    CrashPattern(
        name="warning",
        kind=Kind.WARNING,
        start=_re(
            r"^WARNING: (?:CPU: \d+ PID: \d+ at (?P<src>\S+) " + _FUNC + r"|at (?P<src2>\S+) "
            r"(?P<func_alt>[A-Za-z_$][\w.$]*)\(\))"
        ),
        title="WARNING in {frame}",
        frames=(FrameSource.HEADER, FrameSource.RIP, FrameSource.TRACE),
    ),
    # kmemleak (mm/kmemleak.c), on the console (kmemleak.verbose=1) or a dump of
    # /sys/kernel/debug/kmemleak; blame the first non-allocator frame.
    CrashPattern(
        name="memory_leak",
        kind=Kind.MEMORY_LEAK,
        start=_re(r"^unreferenced object 0x[0-9a-f]+ \(size \d+\):"),
        title="BUG: memory leak[ in {frame}]",
        frames=_TRACE,
        skip=_LEAK_SKIP,
        body=_re(r"^(?:hex dump|backtrace)"),
        any_source=True,
    ),
    # Any other "BUG: something" line, titled by its leading words (up to the first
    # word with a digit or a ``key:value``); a stack trace may follow or not.
    CrashPattern(
        name="bug_other",
        kind=Kind.BUG,
        start=_re(r"^BUG: (?P<what>[A-Za-z_][\w-]*(?: (?![\w-]*(?:\d|:\S))[A-Za-z_][\w-]*)*)"),
        title="BUG: {what}[ in {frame}]",
        stack=False,
    ),
)
