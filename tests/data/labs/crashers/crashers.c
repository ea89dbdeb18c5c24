// SPDX-License-Identifier: GPL-2.0
/*
 * crashers: kernel bugs on demand, for vmlab's crash, hang and leak detection.
 *
 * Loading the module does nothing harmful. Each file under
 * /sys/kernel/debug/crashers/ fires one bug when a number is written to it:
 *
 *   warn        WARN_ON() in crashers_warn(); the kernel carries on (taint W)
 *   bug         BUG() in crashers_bug(); an oops ("kernel BUG at")
 *   null        a read through a NULL pointer in crashers_null(); an oops
 *   softlockup  spin in crashers_spin() with preemption off for N seconds
 *               (default 60): a soft lockup once N > 2 * watchdog_thresh
 *   hung        sleep uninterruptibly in crashers_hang() for N seconds
 *               (default 120): a hung task once N > hung_task_timeout_secs
 *   leak        kmalloc N KiB (default 4096) in 1 KiB pieces in crashers_leak()
 *               and forget them: unreclaimable slab grows for good
 *
 * For warn, bug and null any number but 0 fires; for the others, "1" means the
 * default amount. Each bug lives in its own non-inlined function, called so that
 * it is not a tail call, so that it is the guilty frame of its report.
 */
#include <linux/completion.h>
#include <linux/debugfs.h>
#include <linux/jiffies.h>
#include <linux/kernel.h>
#include <linux/module.h>
#include <linux/preempt.h>
#include <linux/slab.h>
#include <linux/uaccess.h>

#define CRASHERS_MAX_SECONDS 600
#define CRASHERS_MAX_LEAK_KIB (256 * 1024)

static struct dentry *crashers_dir;
static int *volatile crashers_nullp;	/* stays NULL; volatile: a real load */
static void *volatile crashers_sink;	/* keeps the leak's stores observable */
static DECLARE_COMPLETION(crashers_never);	/* nobody completes it */

static noinline int crashers_warn(void)
{
	return WARN_ON(crashers_nullp == NULL);
}

static noinline void crashers_bug(void)
{
	if (crashers_nullp == NULL)
		BUG();
}

static noinline int crashers_null(void)
{
	return *crashers_nullp;
}

static noinline unsigned long crashers_spin(unsigned int seconds)
{
	unsigned long end = jiffies + seconds * HZ;
	unsigned long loops = 0;

	preempt_disable();
	while (time_before(jiffies, end)) {
		cpu_relax();
		loops++;
	}
	preempt_enable();
	return loops;
}

static noinline void crashers_hang(unsigned int seconds)
{
	/* TASK_UNINTERRUPTIBLE: the task shows as D to the hung-task detector. */
	unsigned long left = wait_for_completion_timeout(&crashers_never, seconds * HZ);

	/* Not a tail call: this frame stays on the stack while it waits. */
	pr_info("crashers: hung: woke up, %lu jiffies early\n", left);
}

static noinline unsigned int crashers_leak(unsigned int kib)
{
	unsigned int i;
	char *p;

	for (i = 0; i < kib; i++) {
		p = kmalloc(1024, GFP_KERNEL);
		if (!p)
			break;
		memset(p, 0x6b, 1024);
		crashers_sink = p;	/* and then forgotten */
	}
	return i;
}

static ssize_t warn_write(struct file *file, const char __user *buf, size_t count,
			  loff_t *ppos)
{
	unsigned int n;
	int err = kstrtouint_from_user(buf, count, 0, &n);

	if (err)
		return err;
	if (n)
		pr_info("crashers: warn: warned=%d\n", crashers_warn());
	return count;
}

static ssize_t bug_write(struct file *file, const char __user *buf, size_t count,
			 loff_t *ppos)
{
	unsigned int n;
	int err = kstrtouint_from_user(buf, count, 0, &n);

	if (err)
		return err;
	if (n) {
		crashers_bug();
		pr_err("crashers: bug: survived BUG()\n");
	}
	return count;
}

static ssize_t null_write(struct file *file, const char __user *buf, size_t count,
			  loff_t *ppos)
{
	unsigned int n;
	int err = kstrtouint_from_user(buf, count, 0, &n);

	if (err)
		return err;
	if (n)
		pr_err("crashers: null: survived, read %d\n", crashers_null());
	return count;
}

static ssize_t softlockup_write(struct file *file, const char __user *buf, size_t count,
				loff_t *ppos)
{
	unsigned int n;
	int err = kstrtouint_from_user(buf, count, 0, &n);

	if (err)
		return err;
	if (n == 1)
		n = 60;
	n = min_t(unsigned int, n, CRASHERS_MAX_SECONDS);
	if (n) {
		pr_info("crashers: softlockup: spinning for %u s with preemption off\n", n);
		pr_info("crashers: softlockup: done after %lu loops\n", crashers_spin(n));
	}
	return count;
}

static ssize_t hung_write(struct file *file, const char __user *buf, size_t count,
			  loff_t *ppos)
{
	unsigned int n;
	int err = kstrtouint_from_user(buf, count, 0, &n);

	if (err)
		return err;
	if (n == 1)
		n = 120;
	n = min_t(unsigned int, n, CRASHERS_MAX_SECONDS);
	if (n) {
		pr_info("crashers: hung: sleeping uninterruptibly for %u s\n", n);
		crashers_hang(n);
	}
	return count;
}

static ssize_t leak_write(struct file *file, const char __user *buf, size_t count,
			  loff_t *ppos)
{
	unsigned int n;
	int err = kstrtouint_from_user(buf, count, 0, &n);

	if (err)
		return err;
	if (n == 1)
		n = 4096;
	n = min_t(unsigned int, n, CRASHERS_MAX_LEAK_KIB);
	if (n)
		pr_info("crashers: leak: leaked %u KiB\n", crashers_leak(n));
	return count;
}

#define CRASHERS_FOPS(name)					\
static const struct file_operations name##_fops = {		\
	.owner = THIS_MODULE,					\
	.write = name##_write,					\
	.llseek = noop_llseek,					\
}

CRASHERS_FOPS(warn);
CRASHERS_FOPS(bug);
CRASHERS_FOPS(null);
CRASHERS_FOPS(softlockup);
CRASHERS_FOPS(hung);
CRASHERS_FOPS(leak);

/*
 * leak_on_load_kib=N: leak N KiB (in 1 KiB pieces) on every load, never freed
 * at unload: what vmlab's module load/unload cycle check must catch.
 */
static int leak_on_load_kib;
module_param(leak_on_load_kib, int, 0444);
MODULE_PARM_DESC(leak_on_load_kib, "KiB leaked on every load (for the cycle check)");

static noinline void crashers_leak_on_load(int kib)
{
	int i;

	for (i = 0; i < kib; i++) {
		void *piece = kmalloc(1024, GFP_KERNEL);

		if (!piece)
			break;
		memset(piece, 0x5a, 1024);
	}
}

static int __init crashers_init(void)
{
	if (leak_on_load_kib > 0)
		crashers_leak_on_load(min(leak_on_load_kib, 65536));
	crashers_dir = debugfs_create_dir("crashers", NULL);
	if (IS_ERR(crashers_dir))
		return PTR_ERR(crashers_dir);
	debugfs_create_file("warn", 0200, crashers_dir, NULL, &warn_fops);
	debugfs_create_file("bug", 0200, crashers_dir, NULL, &bug_fops);
	debugfs_create_file("null", 0200, crashers_dir, NULL, &null_fops);
	debugfs_create_file("softlockup", 0200, crashers_dir, NULL, &softlockup_fops);
	debugfs_create_file("hung", 0200, crashers_dir, NULL, &hung_fops);
	debugfs_create_file("leak", 0200, crashers_dir, NULL, &leak_fops);
	pr_info("crashers: ready: /sys/kernel/debug/crashers/\n");
	return 0;
}

static void __exit crashers_exit(void)
{
	debugfs_remove_recursive(crashers_dir);
}

module_init(crashers_init);
module_exit(crashers_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("Kernel bugs on demand, for testing vmlab");
