// SPDX-License-Identifier: GPL-2.0
/*
 * tinyfs: a tiny in-memory filesystem, the example module of a vmlab lab.
 *
 * Regular files and directories live in a tree of tinyfs_node, owned by the
 * module rather than by a superblock: that tree is the "disk".  A mount builds
 * VFS inodes from it on lookup, and evicting an inode writes its attributes
 * back, so the contents survive umount and mount, and vanish with rmmod.
 * There is one superblock at a time (get_tree_single): mounting twice shows
 * the same files, and every node has at most one VFS inode.
 *
 * Locking: a directory's children, and their names, change only under the
 * directory inode's i_rwsem held for writing (the VFS holds it for create,
 * mkdir, unlink, rmdir and rename), and are read under it held for reading
 * (lookup, readdir).  A file's data is guarded by its inode's i_rwsem.
 *
 * Counters in /sys/module/tinyfs/parameters let tests look for leaks.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/fs.h>
#include <linux/fs_context.h>
#include <linux/module.h>
#include <linux/mm.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/uio.h>

#define TINYFS_MAGIC	0x54494e59	/* "TINY" */

struct tinyfs_node {
	struct list_head sibling;	/* in parent's children, sorted by ino */
	struct list_head children;
	const char *name;
	unsigned long ino;
	bool unlinked;
	umode_t mode;
	kuid_t uid;
	kgid_t gid;
	unsigned int nlink;
	struct timespec64 atime, mtime, ctime;
	loff_t size;			/* bytes of data */
	size_t cap;			/* bytes allocated at data */
	char *data;
};

static struct tinyfs_node *tinyfs_root;
static atomic_long_t tinyfs_next_ino = ATOMIC_LONG_INIT(0);

static unsigned int max_file_mb = 128;
module_param(max_file_mb, uint, 0444);
MODULE_PARM_DESC(max_file_mb, "Largest file, in MiB");

/* Read-only counters: nodes in the tree, data bytes, VFS inodes, superblocks. */
static atomic_long_t nodes, data_bytes, vfs_inodes, superblocks;

static int tinyfs_get_counter(char *buf, const struct kernel_param *kp)
{
	return sysfs_emit(buf, "%ld\n", atomic_long_read(kp->arg));
}

static const struct kernel_param_ops tinyfs_counter_ops = {
	.get = tinyfs_get_counter,
};

module_param_cb(nodes, &tinyfs_counter_ops, &nodes, 0444);
module_param_cb(data_bytes, &tinyfs_counter_ops, &data_bytes, 0444);
module_param_cb(vfs_inodes, &tinyfs_counter_ops, &vfs_inodes, 0444);
module_param_cb(superblocks, &tinyfs_counter_ops, &superblocks, 0444);

static const struct inode_operations tinyfs_dir_iops, tinyfs_file_iops;
static const struct file_operations tinyfs_dir_fops, tinyfs_file_fops;

static struct tinyfs_node *tinyfs_new_node(const struct qstr *name, umode_t mode)
{
	struct tinyfs_node *node = kzalloc(sizeof(*node), GFP_KERNEL);

	if (!node)
		return NULL;
	node->name = kmemdup_nul(name->name, name->len, GFP_KERNEL);
	if (!node->name) {
		kfree(node);
		return NULL;
	}
	INIT_LIST_HEAD(&node->sibling);
	INIT_LIST_HEAD(&node->children);
	node->ino = atomic_long_inc_return(&tinyfs_next_ino);
	node->mode = mode;
	node->nlink = S_ISDIR(mode) ? 2 : 1;
	ktime_get_real_ts64(&node->mtime);
	node->atime = node->ctime = node->mtime;
	atomic_long_inc(&nodes);
	return node;
}

static void tinyfs_free_node(struct tinyfs_node *node)
{
	atomic_long_sub(node->cap, &data_bytes);
	kvfree(node->data);
	kfree(node->name);
	kfree(node);
	atomic_long_dec(&nodes);
}

/* Frees a whole tree without recursion: a leaf at a time. */
static void tinyfs_free_tree(struct tinyfs_node *root)
{
	struct tinyfs_node *node = root;

	while (node != root || !list_empty(&root->children)) {
		if (!list_empty(&node->children)) {
			node = list_first_entry(&node->children,
						struct tinyfs_node, sibling);
			continue;
		}
		list_del(&node->sibling);
		tinyfs_free_node(node);
		node = root;
	}
	tinyfs_free_node(root);
}

/* Makes room for @size bytes of data; the caller holds the inode lock. */
static int tinyfs_reserve(struct tinyfs_node *node, loff_t size)
{
	size_t cap;
	char *data;

	if (size <= node->cap)
		return 0;
	cap = max_t(size_t, size, 2 * node->cap);
	cap = min_t(size_t, PAGE_ALIGN(cap), (size_t)max_file_mb << 20);
	data = kvrealloc(node->data, node->cap, cap, GFP_KERNEL);
	if (!data)
		return -ENOSPC;
	atomic_long_add(cap - node->cap, &data_bytes);
	node->data = data;
	node->cap = cap;
	return 0;
}

static int tinyfs_truncate(struct tinyfs_node *node, loff_t size)
{
	int err;

	if (size == 0) {
		atomic_long_sub(node->cap, &data_bytes);
		kvfree(node->data);
		node->data = NULL;
		node->cap = 0;
	} else if (size > node->size) {
		err = tinyfs_reserve(node, size);
		if (err)
			return err;
		memset(node->data + node->size, 0, size - node->size);
	}
	node->size = size;
	return 0;
}

static struct inode *tinyfs_iget(struct super_block *sb,
				 struct tinyfs_node *node)
{
	struct inode *inode = iget_locked(sb, node->ino);

	if (!inode)
		return ERR_PTR(-ENOMEM);
	if (!(inode->i_state & I_NEW))
		return inode;
	inode->i_private = node;
	inode->i_mode = node->mode;
	inode->i_uid = node->uid;
	inode->i_gid = node->gid;
	set_nlink(inode, node->nlink);
	i_size_write(inode, node->size);
	inode->i_atime = node->atime;
	inode->i_mtime = node->mtime;
	inode->i_ctime = node->ctime;
	if (S_ISDIR(node->mode)) {
		inode->i_op = &tinyfs_dir_iops;
		inode->i_fop = &tinyfs_dir_fops;
	} else {
		inode->i_op = &tinyfs_file_iops;
		inode->i_fop = &tinyfs_file_fops;
	}
	atomic_long_inc(&vfs_inodes);
	unlock_new_inode(inode);
	return inode;
}

static void tinyfs_evict_inode(struct inode *inode)
{
	struct tinyfs_node *node = inode->i_private;

	truncate_inode_pages_final(&inode->i_data);
	clear_inode(inode);
	if (node->unlinked) {
		tinyfs_free_node(node);
	} else {
		node->mode = inode->i_mode;
		node->uid = inode->i_uid;
		node->gid = inode->i_gid;
		node->nlink = inode->i_nlink;
		node->atime = inode->i_atime;
		node->mtime = inode->i_mtime;
		node->ctime = inode->i_ctime;
	}
	atomic_long_dec(&vfs_inodes);
}

static struct tinyfs_node *tinyfs_find(struct tinyfs_node *dir,
				       const struct qstr *name)
{
	struct tinyfs_node *child;

	list_for_each_entry(child, &dir->children, sibling)
		if (strlen(child->name) == name->len &&
		    !memcmp(child->name, name->name, name->len))
			return child;
	return NULL;
}

static struct dentry *tinyfs_lookup(struct inode *dir, struct dentry *dentry,
				    unsigned int flags)
{
	struct tinyfs_node *node;
	struct inode *inode = NULL;

	if (dentry->d_name.len > NAME_MAX)
		return ERR_PTR(-ENAMETOOLONG);
	node = tinyfs_find(dir->i_private, &dentry->d_name);
	if (node)
		inode = tinyfs_iget(dir->i_sb, node);
	return d_splice_alias(inode, dentry);
}

static int tinyfs_make(struct user_namespace *ns, struct inode *dir,
		       struct dentry *dentry, umode_t mode)
{
	struct tinyfs_node *parent = dir->i_private;
	struct tinyfs_node *node = tinyfs_new_node(&dentry->d_name, mode);
	struct inode *inode;

	if (!node)
		return -ENOMEM;
	inode = tinyfs_iget(dir->i_sb, node);
	if (IS_ERR(inode)) {
		tinyfs_free_node(node);
		return PTR_ERR(inode);
	}
	inode_init_owner(ns, inode, dir, mode);
	node->mode = inode->i_mode;
	node->uid = inode->i_uid;
	node->gid = inode->i_gid;
	list_add_tail(&node->sibling, &parent->children); /* largest ino */
	if (S_ISDIR(mode))
		inc_nlink(dir);
	dir->i_mtime = dir->i_ctime = current_time(dir);
	d_instantiate(dentry, inode);
	return 0;
}

static int tinyfs_create(struct user_namespace *ns, struct inode *dir,
			 struct dentry *dentry, umode_t mode, bool excl)
{
	return tinyfs_make(ns, dir, dentry, S_IFREG | (mode & ~S_IFMT));
}

static int tinyfs_mkdir(struct user_namespace *ns, struct inode *dir,
			struct dentry *dentry, umode_t mode)
{
	return tinyfs_make(ns, dir, dentry, S_IFDIR | (mode & ~S_IFMT));
}

/* Takes @inode's node out of its directory; it is freed on eviction. */
static void tinyfs_remove(struct inode *dir, struct inode *inode)
{
	struct tinyfs_node *node = inode->i_private;

	list_del_init(&node->sibling);
	node->unlinked = true;
	if (S_ISDIR(inode->i_mode)) {
		clear_nlink(inode);
		drop_nlink(dir);
	} else {
		drop_nlink(inode);
	}
	dir->i_mtime = dir->i_ctime = inode->i_ctime = current_time(dir);
}

static int tinyfs_unlink(struct inode *dir, struct dentry *dentry)
{
	tinyfs_remove(dir, d_inode(dentry));
	return 0;
}

static int tinyfs_rmdir(struct inode *dir, struct dentry *dentry)
{
	struct tinyfs_node *node = d_inode(dentry)->i_private;

	if (!list_empty(&node->children))
		return -ENOTEMPTY;
	tinyfs_remove(dir, d_inode(dentry));
	return 0;
}

static int tinyfs_rename(struct user_namespace *ns, struct inode *old_dir,
			 struct dentry *old_dentry, struct inode *new_dir,
			 struct dentry *new_dentry, unsigned int flags)
{
	struct inode *inode = d_inode(old_dentry), *target = d_inode(new_dentry);
	struct tinyfs_node *node = inode->i_private, *parent = new_dir->i_private;
	struct tinyfs_node *pos;
	const char *name;

	if (flags & ~RENAME_NOREPLACE)
		return -EINVAL;
	if (target && S_ISDIR(target->i_mode) &&
	    !list_empty(&((struct tinyfs_node *)target->i_private)->children))
		return -ENOTEMPTY;
	name = kmemdup_nul(new_dentry->d_name.name, new_dentry->d_name.len,
			   GFP_KERNEL);
	if (!name)
		return -ENOMEM;
	if (target)
		tinyfs_remove(new_dir, target);
	kfree(node->name);
	node->name = name;
	if (old_dir != new_dir) {
		/* keep the new directory sorted by ino, for readdir */
		list_del(&node->sibling);
		list_for_each_entry(pos, &parent->children, sibling)
			if (pos->ino > node->ino)
				break;
		list_add_tail(&node->sibling, &pos->sibling);
		if (S_ISDIR(inode->i_mode)) {
			drop_nlink(old_dir);
			inc_nlink(new_dir);
		}
	}
	old_dir->i_mtime = old_dir->i_ctime = current_time(old_dir);
	new_dir->i_mtime = new_dir->i_ctime = old_dir->i_mtime;
	inode->i_ctime = old_dir->i_mtime;
	return 0;
}

static int tinyfs_setattr(struct user_namespace *ns, struct dentry *dentry,
			  struct iattr *attr)
{
	struct inode *inode = d_inode(dentry);
	int err = setattr_prepare(ns, dentry, attr);

	if (err)
		return err;
	if ((attr->ia_valid & ATTR_SIZE) && attr->ia_size != inode->i_size) {
		err = tinyfs_truncate(inode->i_private, attr->ia_size);
		if (err)
			return err;
		i_size_write(inode, attr->ia_size);
		inode->i_mtime = inode->i_ctime = current_time(inode);
	}
	setattr_copy(ns, inode, attr);
	return 0;
}

/* Positions past the dots are inode numbers: stable under changes. */
static int tinyfs_readdir(struct file *file, struct dir_context *ctx)
{
	struct tinyfs_node *dir = file_inode(file)->i_private, *child;

	if (!dir_emit_dots(file, ctx))
		return 0;
	list_for_each_entry(child, &dir->children, sibling) {
		if (child->ino < ctx->pos)
			continue;
		ctx->pos = child->ino;
		if (!dir_emit(ctx, child->name, strlen(child->name),
			      child->ino, S_DT(child->mode)))
			return 0;
		ctx->pos = child->ino + 1;
	}
	return 0;
}

static ssize_t tinyfs_read_iter(struct kiocb *iocb, struct iov_iter *to)
{
	struct inode *inode = file_inode(iocb->ki_filp);
	struct tinyfs_node *node = inode->i_private;
	size_t want = 0, count = 0;

	inode_lock_shared(inode);
	if (iocb->ki_pos < node->size) {
		want = min_t(loff_t, iov_iter_count(to),
			     node->size - iocb->ki_pos);
		count = copy_to_iter(node->data + iocb->ki_pos, want, to);
	}
	inode_unlock_shared(inode);
	if (want && !count)
		return -EFAULT;
	iocb->ki_pos += count;
	file_accessed(iocb->ki_filp);
	return count;
}

static ssize_t tinyfs_write_iter(struct kiocb *iocb, struct iov_iter *from)
{
	struct inode *inode = file_inode(iocb->ki_filp);
	struct tinyfs_node *node = inode->i_private;
	loff_t pos;
	ssize_t ret;

	inode_lock(inode);
	ret = generic_write_checks(iocb, from);
	if (ret <= 0)
		goto out;
	ret = file_remove_privs(iocb->ki_filp);
	if (ret)
		goto out;
	pos = iocb->ki_pos;
	ret = tinyfs_reserve(node, pos + iov_iter_count(from));
	if (ret)
		goto out;
	if (pos > node->size)
		memset(node->data + node->size, 0, pos - node->size);
	ret = copy_from_iter(node->data + pos, iov_iter_count(from), from);
	if (!ret) {
		ret = -EFAULT;
		goto out;
	}
	iocb->ki_pos = pos + ret;
	if (iocb->ki_pos > node->size) {
		node->size = iocb->ki_pos;
		i_size_write(inode, node->size);
	}
	inode->i_mtime = inode->i_ctime = current_time(inode);
out:
	inode_unlock(inode);
	return ret;
}

static const struct inode_operations tinyfs_dir_iops = {
	.lookup		= tinyfs_lookup,
	.create		= tinyfs_create,
	.mkdir		= tinyfs_mkdir,
	.unlink		= tinyfs_unlink,
	.rmdir		= tinyfs_rmdir,
	.rename		= tinyfs_rename,
	.setattr	= tinyfs_setattr,
};

static const struct inode_operations tinyfs_file_iops = {
	.setattr	= tinyfs_setattr,
};

static const struct file_operations tinyfs_dir_fops = {
	.llseek		= generic_file_llseek,
	.read		= generic_read_dir,
	.iterate_shared	= tinyfs_readdir,
	.fsync		= noop_fsync,
};

static const struct file_operations tinyfs_file_fops = {
	.llseek		= generic_file_llseek,
	.read_iter	= tinyfs_read_iter,
	.write_iter	= tinyfs_write_iter,
	.splice_read	= generic_file_splice_read,
	.splice_write	= iter_file_splice_write,
	.fsync		= noop_fsync,
};

static void tinyfs_put_super(struct super_block *sb)
{
	atomic_long_dec(&superblocks);
}

static const struct super_operations tinyfs_super_ops = {
	.statfs		= simple_statfs,
	.evict_inode	= tinyfs_evict_inode,
	.put_super	= tinyfs_put_super,
};

static int tinyfs_fill_super(struct super_block *sb, struct fs_context *fc)
{
	struct inode *root;

	sb->s_maxbytes = (loff_t)max_file_mb << 20;
	sb->s_blocksize = PAGE_SIZE;
	sb->s_blocksize_bits = PAGE_SHIFT;
	sb->s_magic = TINYFS_MAGIC;
	sb->s_op = &tinyfs_super_ops;
	sb->s_time_gran = 1;
	root = tinyfs_iget(sb, tinyfs_root);
	if (IS_ERR(root))
		return PTR_ERR(root);
	sb->s_root = d_make_root(root);
	if (!sb->s_root)
		return -ENOMEM;
	atomic_long_inc(&superblocks);
	return 0;
}

static int tinyfs_get_tree(struct fs_context *fc)
{
	return get_tree_single(fc, tinyfs_fill_super);
}

static const struct fs_context_operations tinyfs_context_ops = {
	.get_tree	= tinyfs_get_tree,
};

static int tinyfs_init_fs_context(struct fs_context *fc)
{
	fc->ops = &tinyfs_context_ops;
	return 0;
}

static struct file_system_type tinyfs_type = {
	.owner			= THIS_MODULE,
	.name			= "tinyfs",
	.init_fs_context	= tinyfs_init_fs_context,
	.kill_sb		= kill_anon_super,
};

static int __init tinyfs_init(void)
{
	static const struct qstr root_name = QSTR_INIT("/", 1);
	int err;

	tinyfs_root = tinyfs_new_node(&root_name, S_IFDIR | 0755);
	if (!tinyfs_root)
		return -ENOMEM;
	err = register_filesystem(&tinyfs_type);
	if (err)
		tinyfs_free_tree(tinyfs_root);
	return err;
}

static void __exit tinyfs_exit(void)
{
	unregister_filesystem(&tinyfs_type);
	tinyfs_free_tree(tinyfs_root);
	WARN(atomic_long_read(&nodes) || atomic_long_read(&data_bytes),
	     "tinyfs: %ld nodes and %ld data bytes left at exit\n",
	     atomic_long_read(&nodes), atomic_long_read(&data_bytes));
}

module_init(tinyfs_init);
module_exit(tinyfs_exit);
MODULE_ALIAS_FS("tinyfs");
MODULE_DESCRIPTION("A tiny in-memory filesystem whose files survive remounts");
MODULE_AUTHOR("vmlab example");
MODULE_LICENSE("GPL");
