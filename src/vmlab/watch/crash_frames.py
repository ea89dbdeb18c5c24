"""Stack frames of kernel crash reports, and which of them is to blame.

A report names a bug after its *guilty frame*: the first function on the stack that
is not part of the machinery that noticed and printed the bug. Like syzkaller's
pkg/report, we skip

* the reporting machinery: ``dump_stack``, ``__warn``, ``report_bug``, the trap and
  oops handlers, ``panic``, the sanitizers' runtimes (``kasan_*``, ``__asan_*``,
  ``kmsan_*``, ``kcsan_*``, ``__ubsan_*``, ``__sanitizer_*``), lockdep;
* locking primitives and their slow paths (spinlocks, mutexes, rwsems, the queued
  and paravirt lock code), because the bug is in whoever took the lock;
* allocators (``kmalloc``, ``kmem_cache_alloc``, slab internals, ``vmalloc``, page
  allocation, ``kfree``), common helpers (``memcpy``, ``strlen``, ``copy_to_user``,
  ``printk``, ``sprintf``), retpoline/return thunks;
* entry code and dispatchers at the bottom of stacks (``do_syscall_64``,
  ``entry_SYSCALL_64*``, IRQ/softirq entry, ``kthread``, ``worker_thread``), and the
  idle loop.

Frames printed with ``?`` are unreliable leftovers on the stack and never guilty.
Names lose compiler suffixes (``.cold``, ``.isra.0``, ``.constprop.0``, ``.part.N``,
``.llvm.N``) and the ``+0x12/0x40 [module]`` tail.

Each report type can add its own skips (a hung task is never guilty in
``schedule``; a leak is never guilty in an allocator); see ``crash_patterns``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

# One stack frame line, as printed by the x86 unwinder, kmemleak (with the
# ``[<address>]`` column) or a symbolizer (``func file.c:12 [inline]``).
_FRAME_RE = re.compile(
    r"^\s+(?P<q1>\?\s+)?(?:\[<?(?:0x)?[0-9a-f]+>?\]\s+)?(?P<q2>\?\s+)?(?:\d+:)?"
    r"(?P<func>[A-Za-z_$][\w.$]*)"
    r"(?:\+0x[0-9a-f]+/0x[0-9a-f]+(?:\s+\[(?P<module>[\w-]+)\])?|\s+\S+:\d+(?::\d+)?\s+\[inline\])"
)

# The instruction pointer line of a register dump. ``0033`` (user mode) is ignored
# by the caller; old kernels print the address in brackets before the symbol.
_RIP_RE = re.compile(
    r"^(?:RIP|EIP|NIP|IP|pc)\s*:\s*(?:(?P<cs>[0-9a-f]{4}):)?(?:\[<[0-9a-f]+>\]\s*){0,2}"
    r"(?P<func>[A-Za-z_$][\w.$]*)\+0x[0-9a-f]+/0x[0-9a-f]+"
)

# Compiler-generated clones and split parts keep the name of their function.
_SUFFIX_RE = re.compile(r"(?:\.(?:cold|isra|constprop|part|llvm|lto_priv|localalias)(?:\.\d+)?)+$")

# Functions that are never to blame (anchored full matches, see module docstring).
_GENERIC = (
    # reporting and trap machinery
    r"_*dump_stack(?:_lvl)?|show_stack|show_regs|show_trace_log_lvl|show_stack_log_lvl",
    r"_*warn(?:_slowpath\w*|_printk|_alloc)?|report_bug|handle_bug|fixup_bug|__report_bug",
    r"exc_\w+|asm_exc_\w+|do_error_trap|do_trap|do_int3\w*|math_error|die|_+die\w*|die_body",
    r"oops_\w+|page_fault_oops|kernelmode_fixup_or_oops|_*bad_area\w*|no_context",
    r"do_user_addr_fault|do_kern_addr_fault|spurious_kernel_fault|handle_page_fault",
    r"_*panic|vpanic|nmi_\w+|_*nmi_\w*|_*schedule_bug|print_report|print_address_description\w*",
    r"watchdog_timer_fn|watchdog_overflow_callback|watchdog_hardlockup\w*|perf_event_nmi_handler",
    r"_*perf_event_overflow|handle_pmi_common|\w+_pmu_handle_irq|print_(?:lock|usage_bug)\w*",
    r"print_(?:circular|deadlock|bad_irq_dependency)\w*|print_cpu_stall\w*|print_other_cpu_stall",
    r"_*might_(?:sleep|resched|fault)\w*|_*cant_(?:sleep|migrate)|bad_page|dump_page",
    r"_*debug_object\w*|debug_object\w*|debug_check_\w+|debug_print_object",
    r"_*refcount_\w+|refcount_\w+|_*check_object_size|check_heap_object|usercopy_\w+",
    r"_*list_(?:add|del)\w*|_*list_\w+_valid\w*|stack_trace_\w+|arch_stack_walk",
    # sanitizers
    r"_*kasan_\w+|kasan_\w+|_*asan_\w+|_*hwasan_\w+|check_memory_region\w*",
    r"check_region_inline|_*kmsan_\w+|kmsan_\w+|_*msan_\w+|_*kcsan_\w+|kcsan_\w+",
    r"_*tsan_\w+|_*ubsan_\w+|ubsan_\w+|_*sanitizer_\w*|_*kfence_\w+|kfence_\w+",
    r"_*stack_chk_fail\w*|_*fortify_\w+|fortify_\w+",
    # lockdep and locking primitives
    r"_*lockdep_\w+|lockdep_\w+|_*lock_acquire\w*|lock_release|lock_acquired|lock_contended",
    r"_*_raw_\w+|_raw_\w+|do_raw_\w+|_*(?:spin|read|write)_(?:lock|unlock|trylock)\w*",
    r"queued_\w+_lock\w*|native_queued_spin_lock_slowpath|_*pv_queued_\w+|pv_\w+_lock\w*",
    r"_*mutex_(?:lock|unlock|trylock)\w*|mutex_\w+|_*rt_mutex\w*|ww_mutex_\w+|_*ww_mutex\w*",
    r"_*down(?:_read|_write)?(?:_interruptible|_killable|_timeout|_trylock|_nested|_common)?",
    r"_*down(?:_read|_write)?_slowpath|_*up(?:_read|_write)?|_*rwsem_\w+|rwsem_\w+",
    r"percpu_(?:down|up)_\w+|_*percpu_(?:down|up)_\w+|osq_(?:lock|unlock)|_*lock_sock\w*",
    # allocators and freeing
    r"_*kmalloc\w*|kmalloc\w*|_*kmem_cache_\w+|kmem_cache_\w+|_*do_kmalloc\w*",
    r"_*kzalloc\w*|kcalloc\w*|kzalloc\w*|krealloc\w*|_*kvmalloc\w*|kvmalloc\w*|kvzalloc\w*",
    r"_*vmalloc\w*|vzalloc\w*|_*alloc_pages\w*|alloc_pages\w*|_*get_free_pages\w*",
    r"_*slab_\w+|slab_\w+|_*slab_alloc\w*|new_slab|allocate_slab|_*kfree\w*|kfree\w*",
    r"kvfree\w*|_*vfree\w*|free_pages\w*|_*free_pages\w*|_*kmemleak_\w+|kmemleak_\w+",
    r"_*kstrn?dup\w*|kstrn?dup\w*|kmemdup\w*|_*kmemdup\w*|kasprintf|kvasprintf",
    # common helpers
    r"_*mem(?:cpy|set|move|cmp|chr|scan)\w*",
    r"_*str(?:n|l|s)?(?:cpy|cat|len|cmp|chr|rchr|str|dup|casecmp)\w*",
    r"_*copy_(?:to|from)_user\w*|_copy_\w+|copy_user_\w+|rep_movs_\w+|_*(?:get|put)_user\w*",
    r"_*v?s?n?printf\w*|_*v?scnprintf|_*printk\w*|vprintk\w*|printk\w*|string|pointer",
    r"_*x86_indirect_thunk\w*|_*x86_return_thunk|srso_\w+|_*fentry__",
    # entry code, dispatchers at the bottom of stacks, idle
    r"do_syscall_\w+|_*do_fast_syscall\w*|do_int80_syscall_32|x64_sys_call|entry_\w+",
    r"ret_from_fork\w*|kthread|worker_thread|process_one_work|smpboot_thread_fn",
    r"asm_sysvec_\w+|_*sysvec_\w+|sysvec_\w+|asm_common_interrupt|common_interrupt",
    r"_*irq_exit\w*|irq_exit\w*|_*do_softirq\w*|do_softirq\w*|handle_softirqs|run_ksoftirqd",
    r"_*softirqentry_text_start|_*irqentry_\w+|irqentry_\w+",
    r"native_safe_halt|default_idle\w*|arch_cpu_idle\w*|cpuidle_\w+|do_idle|cpu_startup_entry",
    r"acpi_idle_\w+|mwait_idle\w*|intel_idle\w*|poll_idle|start_secondary|secondary_startup_64\w*",
)
_GENERIC_RE = re.compile("(?:" + "|".join(_GENERIC) + r")$")


@dataclass(frozen=True)
class Frame:
    """One frame of a stack trace (or the function of a ``RIP:`` line)."""

    func: str  # normalised: no offset, no module, no compiler suffix
    module: str | None  # the ``[module]`` tag, if any
    questionable: bool  # printed with ``?``: an unreliable leftover on the stack
    line: int  # 1-based line number in the log
    in_irq: bool = False  # inside an <IRQ>/<NMI>/<SOFTIRQ> section of the trace


def normalize_func(name: str) -> str:
    """``foo.isra.0+0x1/0x2 [mod]`` -> ``foo``."""
    name = name.split("+", 1)[0].strip()
    return _SUFFIX_RE.sub("", name)


def parse_frame(text: str, line: int, *, in_irq: bool = False) -> Frame | None:
    """Parse one stack frame line (already stripped of log prefixes)."""
    m = _FRAME_RE.match(text)
    if m is None:
        return None
    return Frame(
        func=normalize_func(m["func"]),
        module=m["module"],
        questionable=bool(m["q1"] or m["q2"]),
        line=line,
        in_irq=in_irq,
    )


def parse_rip(text: str, line: int) -> Frame | None:
    """The function of a kernel-mode ``RIP: 0010:func+0x../0x..`` line, else None."""
    m = _RIP_RE.match(text)
    if m is None or (m["cs"] is not None and m["cs"] != "0010"):
        return None
    return Frame(func=normalize_func(m["func"]), module=None, questionable=False, line=line)


def is_generic(func: str, extra_skip: re.Pattern[str] | None = None) -> bool:
    """True when ``func`` (normalised) is machinery that is never to blame."""
    if _GENERIC_RE.match(func):
        return True
    return extra_skip is not None and extra_skip.search(func) is not None


def guilty(frames: Iterable[Frame], extra_skip: re.Pattern[str] | None = None) -> Frame | None:
    """The first reliable, non-generic frame."""
    for frame in frames:
        if not frame.questionable and not is_generic(frame.func, extra_skip):
            return frame
    return None
