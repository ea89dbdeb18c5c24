// Deliberately crashes the kernel in one of several ways, chosen by `what=`.
// Used only to record real console logs for vmlab's crash-parser fixtures.
#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/delay.h>
#include <linux/spinlock.h>
#include <linux/mutex.h>
#include <linux/list.h>
#include <linux/refcount.h>
#include <linux/rcupdate.h>
#include <linux/jiffies.h>
#include <linux/slab.h>
#include <linux/string.h>

static char *what = "warn";
module_param(what, charp, 0444);
static int seconds = 10;
module_param(seconds, int, 0444);

static DEFINE_SPINLOCK(cm_lock);
static DEFINE_MUTEX(cm_mutex);
static int *volatile cm_nullp;
static volatile int cm_zero;
static unsigned long volatile cm_bad = 0xdead000000000100UL;
static unsigned long volatile cm_user = 0x41414000UL;

static noinline void cm_warn_path(void) { WARN_ON(cm_zero == 0); }
static noinline void cm_bug_path(void) { BUG_ON(cm_zero == 0); }
static noinline int cm_null_deref(void) { return *cm_nullp; }
static noinline long cm_gpf_read(void) { return *(long *)cm_bad; }
static noinline long cm_user_read(void) { return *(long *)cm_user; }
static noinline int cm_divide(int x) { return x / cm_zero; }
static noinline void cm_bad_insn(void) { asm volatile("ud2"); }
static noinline void cm_sleep_locked(void)
{
	spin_lock(&cm_lock);
	msleep(20);
	spin_unlock(&cm_lock);
}
static noinline void cm_spin_nopreempt(void)
{
	unsigned long end = jiffies + seconds * HZ;

	preempt_disable();
	while (time_before(jiffies, end))
		cpu_relax();
	preempt_enable();
}
static noinline void cm_spin_rcu(void)
{
	unsigned long end = jiffies + seconds * HZ;

	rcu_read_lock();
	preempt_disable();
	while (time_before(jiffies, end))
		cpu_relax();
	preempt_enable();
	rcu_read_unlock();
}
static noinline void cm_lock_twice(void)
{
	mutex_lock(&cm_mutex);
	mutex_lock(&cm_mutex);
}
static noinline void cm_list_twice(void)
{
	static LIST_HEAD(head);
	static struct list_head node;

	list_add(&node, &head);
	list_add(&node, &head);
}
static noinline void cm_refcount_zero(void)
{
	static refcount_t ref = REFCOUNT_INIT(0);

	refcount_inc(&ref);
}

static noinline void cm_double_free(void)
{
	char *p = kmalloc(64, GFP_KERNEL);

	kfree(p);
	kfree(p);
}
static noinline void cm_fill(char *p, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		((volatile char *)p)[i] = 0x41;
}
static noinline void cm_redzone(void)
{
	char *p = kmalloc(64, GFP_KERNEL);

	cm_fill(p, 64 + 8);
	kfree(p);
}
static noinline void cm_smash(void)
{
	char buf[16];

	cm_fill(buf, sizeof(buf) + 48);
	pr_info("crashmod: %c\n", buf[0]);
}

static int __init crashmod_init(void)
{
	pr_info("crashmod: what=%s\n", what);
	if (!strcmp(what, "warn"))
		cm_warn_path();
	else if (!strcmp(what, "bug"))
		cm_bug_path();
	else if (!strcmp(what, "null"))
		pr_info("crashmod: %d\n", cm_null_deref());
	else if (!strcmp(what, "gpf"))
		pr_info("crashmod: %ld\n", cm_gpf_read());
	else if (!strcmp(what, "pagefault"))
		pr_info("crashmod: %ld\n", cm_user_read());
	else if (!strcmp(what, "divide"))
		pr_info("crashmod: %d\n", cm_divide(7));
	else if (!strcmp(what, "ud2"))
		cm_bad_insn();
	else if (!strcmp(what, "atomic"))
		cm_sleep_locked();
	else if (!strcmp(what, "softlockup"))
		cm_spin_nopreempt();
	else if (!strcmp(what, "rcu"))
		cm_spin_rcu();
	else if (!strcmp(what, "hung"))
		cm_lock_twice();
	else if (!strcmp(what, "list"))
		cm_list_twice();
	else if (!strcmp(what, "refcount"))
		cm_refcount_zero();
	else if (!strcmp(what, "doublefree"))
		cm_double_free();
	else if (!strcmp(what, "redzone"))
		cm_redzone();
	else if (!strcmp(what, "smash"))
		cm_smash();
	pr_info("crashmod: survived %s\n", what);
	return 0;
}

static void __exit crashmod_exit(void) { }

module_init(crashmod_init);
module_exit(crashmod_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("deliberate crashes for crash-parser fixtures");
