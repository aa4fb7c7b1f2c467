/* SPDX-License-Identifier: MIT */
/*
 * dm_state.c - the process's dmirror state: one uhmm context, the simdevs
 * of device numbers 0 and 1, the handles; fork; and the helpers the
 * requests share (VMA queries, registering memory with uhmm on the fly,
 * fault-safe access to process memory, scratch buffers).
 *
 * Locks (ranks as in dmirror_internal.h):
 *   g_lock      the context pointer, g_pid, the handle count; with the
 *               device's use_lock held for writing, the device's handle.
 *               Held across uhmm_ctx_create/destroy, uhmm_simdev_create
 *               only (no callback of ours takes it).
 *   g_reg_lock  serialises dm_manage_range (uhmm_register under it; it
 *               sleeps in uhmm, never in our callbacks).
 *   d->use_lock (per device number) is taken by dm_cmd.c, not here.
 *   bounce_lock the scratch-buffer arena; leaf.
 *   h_lock      the list of live handles; leaf.  Held across fork (so the
 *               child's copy of the list is whole).
 * Fork: the child handler re-initialises them all (the child has one
 * thread) and forgets the parent's context: a fork child gets its own on
 * its first open.  Handles inherited from the parent stay as they were
 * (their memory is a copy nobody else uses), and stay in the child's list
 * of handles, so they answer -EINVAL (not ours), never -EBADF.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>

#include "compat/dmirror_internal.h"

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t g_reg_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t bounce_lock; /* leaf: the scratch-buffer arena (below) */
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static uhmm_ctx *g_ctx;    /* NULL until the first open of this process */
static pid_t g_pid;        /* the process g_ctx belongs to */
static int g_nhandles;     /* open handles of g_ctx */
static struct dm_dev g_dev[DM_NDEV];
/* Every handle opened and not closed (in a fork child, the parent's too):
 * a pointer is looked up here before it is used as a handle. */
static pthread_mutex_t h_lock = PTHREAD_MUTEX_INITIALIZER;
static uhmm_dmirror *g_handles;
/* Set while this thread is inside uhmm_mprotect(): its own mprotect(2)
 * comes back through the shim and must go straight to the kernel.
 * Initial-exec, as the other thread-locals the library reads where a
 * signal handler may be running (mprotect(2) is async-signal-safe, so an
 * application's SIGSEGV handler may call it through the shim): no call
 * to __tls_get_addr in a preloaded library (simdev's compute.c says what
 * that cost once). */
static __thread int t_in_mprotect __attribute__((tls_model("initial-exec")));
/* The context whose mirrors hear of the program's own munmap, mremap,
 * mmap(MAP_FIXED) and madvise (dm_change, called by preload.c's
 * wrappers).  Read without a lock: those wrappers also run for uhmm's own
 * calls, under any lock of uhmm's or ours (g_lock included, held across
 * uhmm_ctx_create).  Set once the context exists, cleared before it is
 * destroyed and in a fork child. */
static _Atomic(uhmm_ctx *) g_change_ctx;
/* Set while this thread is in dm_change: a change made by a callback of
 * the change (none today) goes straight to the kernel. */
static __thread int t_in_change __attribute__((tls_model("initial-exec")));

static void devs_init(void)
{
	for (int i = 0; i < DM_NDEV; i++) {
		pthread_rwlock_init(&g_dev[i].use_lock, NULL);
		g_dev[i].dev = NULL;
		g_dev[i].num = i;
	}
}

/* The list of handles is copied whole into a fork child. */
static void atfork_prepare(void)
{
	pthread_mutex_lock(&h_lock);
}

static void atfork_parent(void)
{
	pthread_mutex_unlock(&h_lock);
}

/* In the fork child: one thread; the parent's context is not ours.  The
 * parent's handles stay listed: they answer -EINVAL (dm_handle_check). */
static void atfork_child(void)
{
	pthread_mutex_init(&g_lock, NULL);
	pthread_mutex_init(&g_reg_lock, NULL);
	pthread_mutex_init(&bounce_lock, NULL);
	pthread_mutex_init(&h_lock, NULL);
	g_ctx = NULL;
	atomic_store(&g_change_ctx, NULL);
	g_nhandles = 0;
	devs_init();
}

static void state_init(void)
{
	devs_init();
	pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

/* Under h_lock: is @h in the list? */
static bool handle_listed(const uhmm_dmirror *h)
{
	for (const uhmm_dmirror *x = g_handles; x; x = x->next)
		if (x == h)
			return true;
	return false;
}

int dm_handle_check(const uhmm_dmirror *h)
{
	if (!h)
		return -EBADF;
	pthread_mutex_lock(&h_lock);
	/* Not dereferenced unless listed: a closed handle is freed memory. */
	int err = !handle_listed(h) ? -EBADF
		  /* The kernel's handle keeps the opener's mm; ours cannot
		   * reach it. */
		  : h->pid == getpid() ? 0 : -EINVAL;
	pthread_mutex_unlock(&h_lock);
	return err;
}

/* The simdev of device number @num. */
static int dev_create(uhmm_ctx *ctx, int num, uhmm_device **out)
{
	struct uhmm_simdev_opts o;
	char name[32];
	uhmm_simdev_opts_init(&o);
	snprintf(name, sizeof(name), "hmm_dmirror%d", num);
	o.name = name;
	/* The kernel driver's devices grow by 256 MiB chunks; 256 MiB each
	 * is plenty for its tests.  UHMM_DMIRROR_MEM_MB overrides. */
	o.mem_bytes = 256ull << 20;
	const char *env = getenv("UHMM_DMIRROR_MEM_MB");
	if (env && atoll(env) > 0)
		o.mem_bytes = (((uint64_t)atoll(env) + 1) / 2 * 2) << 20;
	/* The device only copies: keep its compute side small. */
	o.compute_units = 1;
	o.lanes_per_cu = 1;
	/* 2 and 3: the kernel's device-coherent devices. */
	o.coherent = num >= DM_NPRIVATE;
	return uhmm_simdev_create(ctx, &o, out);
}

int dm_dev_release_locked(struct dm_dev *d)
{
	/* Detaching brings every page of the device home (revoking what it
	 * holds exclusively); each mirror hears it through its notifier. */
	int err = uhmm_device_detach(d->dev);
	if (err)
		return err;
	pthread_mutex_lock(&g_lock);
	d->dev = NULL;
	err = dev_create(g_ctx, d->num, &d->dev);
	if (err)
		d->dev = NULL;
	pthread_mutex_unlock(&g_lock);
	return err;
}

/* The context and device of @devnum, created on first use. */
static int state_get(int devnum, uhmm_ctx **ctx, struct dm_dev **d)
{
	pthread_once(&g_once, state_init);
	struct dm_dev *dd = &g_dev[devnum];
	/* use_lock (rank 1) before g_lock (rank 3): dd->dev changes only
	 * under both. */
	pthread_rwlock_wrlock(&dd->use_lock);
	pthread_mutex_lock(&g_lock);
	int err = 0;
	if (!g_ctx) {
		err = uhmm_ctx_create(NULL, &g_ctx);
		if (err) {
			g_ctx = NULL;
			goto out;
		}
		g_pid = getpid();
		atomic_store(&g_change_ctx, g_ctx);
		/* Reserve the scratch arena now, before the program punches
		 * the holes it will ask the device about. */
		dm_bounce_free(dm_bounce_alloc(1), 1);
	}
	if (!dd->dev) {
		err = dev_create(g_ctx, devnum, &dd->dev);
		if (err) {
			dd->dev = NULL;
			goto out;
		}
	}
	g_nhandles++;
	*ctx = g_ctx;
	*d = dd;
out:
	pthread_mutex_unlock(&g_lock);
	pthread_rwlock_unlock(&dd->use_lock);
	return err;
}

UHMM_API int uhmm_dmirror_open(int devnum, uhmm_dmirror **out)
{
	if (!out || devnum < 0 || devnum >= DM_NDEV)
		return -EINVAL;
	uhmm_dmirror *h = uhmm__umem_calloc(1, sizeof(*h));
	if (!h)
		return -ENOMEM;
	int err = dm_pt_init(&h->pt);
	if (err)
		goto fail_free;
	err = state_get(devnum, &h->ctx, &h->d);
	if (err)
		goto fail_pt;
	h->pid = getpid();
	pthread_mutex_init(&h->pt_lock, NULL);
	err = uhmm_notifier_insert(h->ctx, DM_VA_START, DM_VA_END - DM_VA_START,
				   dm_invalidate, h, &h->n);
	if (err) {
		pthread_mutex_destroy(&h->pt_lock);
		pthread_mutex_lock(&g_lock);
		g_nhandles--;
		pthread_mutex_unlock(&g_lock);
		goto fail_pt;
	}
	pthread_mutex_lock(&h_lock);
	h->next = g_handles;
	g_handles = h;
	pthread_mutex_unlock(&h_lock);
	*out = h;
	return 0;
fail_pt:
	dm_pt_destroy(&h->pt);
fail_free:
	uhmm__umem_free(h);
	return err;
}

UHMM_API int uhmm_dmirror_close(uhmm_dmirror *h)
{
	if (!h)
		return -EBADF;
	/* Checked and unlisted at once: of two closes, one does it. */
	pthread_mutex_lock(&h_lock);
	uhmm_dmirror **pp = &g_handles;
	while (*pp && *pp != h)
		pp = &(*pp)->next;
	int err = !*pp ? -EBADF : 0;
	bool parents = *pp && h->pid != getpid();
	if (*pp && !parents)
		*pp = h->next;
	pthread_mutex_unlock(&h_lock);
	if (err)
		return err;
	if (parents)
		return 0; /* the parent's: leave its (copied) state alone */
	uhmm_notifier_remove(h->n); /* waits for a callback of ours running */
	dm_pt_destroy(&h->pt);
	pthread_mutex_destroy(&h->pt_lock);
	pthread_mutex_lock(&g_lock);
	g_nhandles--;
	pthread_mutex_unlock(&g_lock);
	uhmm__umem_free(h);
	return 0;
}

UHMM_API int uhmm_dmirror_shutdown(void)
{
	pthread_once(&g_once, state_init);
	pthread_mutex_lock(&g_lock);
	int err = 0;
	if (g_nhandles) {
		err = -EBUSY;
	} else if (g_ctx && g_pid == getpid()) {
		atomic_store(&g_change_ctx, NULL);
		err = uhmm_ctx_destroy(g_ctx); /* detaches the simdevs too */
		g_ctx = NULL;
		for (int i = 0; i < DM_NDEV; i++)
			g_dev[i].dev = NULL;
	}
	pthread_mutex_unlock(&g_lock);
	return err;
}

UHMM_API int uhmm_dmirror_mprotect(void *addr, size_t len, int prot)
{
	uhmm_ctx *ctx = NULL;
	uintptr_t a = (uintptr_t)addr;
	size_t rlen = (len + DM_PAGE_SIZE - 1) & ~(DM_PAGE_SIZE - 1);
	/* What mprotect(2) accepts and uhmm_mprotect() does not (an empty or
	 * unaligned length), or refuses (an unaligned address), goes to the
	 * kernel as it is. */
	bool plain = !len || (a & (DM_PAGE_SIZE - 1)) || rlen < len || a + rlen < a;
	if (!t_in_mprotect && !plain) {
		pthread_once(&g_once, state_init);
		pthread_mutex_lock(&g_lock);
		if (g_ctx && g_pid == getpid() && g_nhandles)
			ctx = g_ctx;
		pthread_mutex_unlock(&g_lock);
	}
	if (!ctx)
		return dm_real_mprotect(addr, len, prot) ? -errno : 0;
	/* uhmm_mprotect() invalidates the mirrors, then calls mprotect(2),
	 * which comes back here with t_in_mprotect set. */
	t_in_mprotect = 1;
	int err = uhmm_mprotect(ctx, addr, rlen, prot);
	t_in_mprotect = 0;
	return err;
}

/* ---- changes the program makes itself ---- */

struct change_call {
	uhmm_change_fn fn;
	void *arg;
	bool called;
};

static int change_run(void *arg)
{
	struct change_call *c = arg;
	c->called = true;
	return c->fn(c->arg);
}

int dm_change(uintptr_t start, size_t len, enum uhmm_inv_reason reason, uintptr_t new_start,
	      uhmm_change_fn fn, void *arg)
{
	uhmm_ctx *ctx = atomic_load_explicit(&g_change_ctx, memory_order_acquire);
	/* Nothing to tell (no device open yet), a change the kernel will
	 * refuse anyway (unaligned, wrapping), uhmm's own memory (its
	 * reservations: never mirrored, and changed under uhmm's locks). */
	if (!ctx || t_in_change || !len || ((start | len) & (DM_PAGE_SIZE - 1)) ||
	    start + len < start || uhmm__umem_owns(start, len))
		return fn(arg);
	struct change_call c = { fn, arg, false };
	t_in_change = 1;
	int r = uhmm_change_mapping(ctx, start, len, reason, new_start, change_run, &c);
	t_in_change = 0;
	/* The context went away meanwhile (a shutdown, a fork child): the
	 * change is the program's all the same. */
	return c.called ? r : fn(arg);
}

/* ---- VMAs ---- */

#ifndef PROCMAP_QUERY
struct procmap_query {
	uint64_t size, query_flags, query_addr, vma_start, vma_end, vma_flags;
	uint64_t vma_page_size, vma_offset, inode;
	uint32_t dev_major, dev_minor, vma_name_size, build_id_size;
	uint64_t vma_name_addr, build_id_addr;
};
#define PROCMAP_QUERY _IOWR('f', 17, struct procmap_query)
#define PROCMAP_QUERY_VMA_READABLE 0x01
#define PROCMAP_QUERY_VMA_WRITABLE 0x02
#define PROCMAP_QUERY_VMA_SHARED 0x08
#define PROCMAP_QUERY_COVERING_OR_NEXT_VMA 0x10
#endif

static int vma_query(int fd, uintptr_t addr, struct dm_vma *v)
{
	char name[64] = "";
	struct procmap_query q = {
		.size = sizeof(q), .query_addr = addr,
		.query_flags = PROCMAP_QUERY_COVERING_OR_NEXT_VMA,
		.vma_name_size = sizeof(name), .vma_name_addr = (uintptr_t)name,
	};
	if (ioctl(fd, PROCMAP_QUERY, &q) < 0)
		return errno == ENOENT ? 0 : -errno;
	v->start = q.vma_start;
	v->end = q.vma_end;
	v->r = q.vma_flags & PROCMAP_QUERY_VMA_READABLE;
	v->w = q.vma_flags & PROCMAP_QUERY_VMA_WRITABLE;
	v->shared = q.vma_flags & PROCMAP_QUERY_VMA_SHARED;
	v->anon = q.inode == 0 && q.dev_major == 0 && q.dev_minor == 0;
	v->stack = strcmp(name, "[stack]") == 0;
	return 1;
}

/* Older kernels: parse /proc/self/maps. */
static int vma_parse(uintptr_t addr, struct dm_vma *v)
{
	/* Not stdio: its buffers come from malloc (util/umem.h). */
	struct uhmm_lines f;
	int err = uhmm__lines_open(&f, "/proc/self/maps");
	if (err)
		return err;
	char line[512];
	int found = 0;
	while (!found && uhmm__lines_next(&f, line, sizeof(line))) {
		unsigned long lo, hi, ino;
		unsigned maj, min;
		char perms[8];
		int pos = 0;
		if (sscanf(line, "%lx-%lx %7s %*x %x:%x %lu %n", &lo, &hi, perms, &maj, &min,
			   &ino, &pos) < 6 || hi <= addr)
			continue;
		v->start = lo;
		v->end = hi;
		v->r = perms[0] == 'r';
		v->w = perms[1] == 'w';
		v->shared = perms[3] == 's';
		v->anon = ino == 0 && maj == 0 && min == 0;
		v->stack = strncmp(line + pos, "[stack]", 7) == 0;
		found = 1;
	}
	uhmm__lines_close(&f);
	return found;
}

int dm_vma_find(uintptr_t addr, struct dm_vma *v)
{
	/* Opened per call: /proc/self resolves at open, and a fork child
	 * must see its own maps. */
	int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int r = vma_query(fd, addr, v);
	close(fd);
	if (r == -ENOTTY || r == -EINVAL)
		r = vma_parse(addr, v);
	return r;
}

/* Register the unmanaged pages of [start, end) (inside one suitable VMA). */
static void manage_piece(uhmm_ctx *ctx, uintptr_t start, uintptr_t end)
{
	struct uhmm_page_info pi;
	uintptr_t a = start;
	while (a < end) {
		int r = uhmm_page_query(ctx, (void *)a, &pi);
		if (r == 0) { /* managed already */
			a += DM_PAGE_SIZE;
			continue;
		}
		if (r != -EFAULT)
			return;
		uintptr_t run = a;
		do
			a += DM_PAGE_SIZE;
		while (a < end && uhmm_page_query(ctx, (void *)a, &pi) == -EFAULT);
		/* -EEXIST (a racing registration) or -EOPNOTSUPP leave the
		 * pages unmanaged: the caller reports them. */
		(void)uhmm_register(ctx, (void *)run, a - run);
	}
}

void dm_manage_range(uhmm_ctx *ctx, uintptr_t start, uintptr_t end)
{
	pthread_mutex_lock(&g_reg_lock);
	struct dm_vma v;
	/* Up to the first hole or unsuitable area only: the request fails
	 * there (as the kernel's, which stops at the first page it cannot
	 * take), so what lies beyond must not become managed.  (A range with
	 * a huge npages would otherwise register every private mapping above
	 * it: the heap, thread stacks, our own scratch arena.) */
	for (uintptr_t a = start; a < end && dm_vma_find(a, &v) == 1 && v.start <= a;
	     a = v.end) {
		/* What uhmm_register() accepts: private anonymous memory the
		 * CPU may read (read-only memory too: it migrates, as the
		 * kernel's).  Not the main stack (it grows and the kernel
		 * guards it; a device buffer does not live there). */
		if (!v.r || v.shared || v.stack)
			break;
		uintptr_t e = v.end < end ? v.end : end;
		if (!v.anon) {
			/* A private file mapping: userfaultfd cannot register
			 * it, so it is adopted (UHMM_REGISTER_ADOPT_FILE:
			 * anonymous memory in place, same contents); the
			 * caller picks which of its pages the kernel would
			 * move (dm_file_pages).  -EOPNOTSUPP or -ENOMEM leave
			 * it a file mapping, unmanaged: the caller reports its
			 * pages. */
			(void)uhmm_register_flags(ctx, (void *)a, e - a, UHMM_REGISTER_ADOPT_FILE);
			continue;
		}
		manage_piece(ctx, a, e);
	}
	pthread_mutex_unlock(&g_reg_lock);
}

void dm_file_pages(uintptr_t start, size_t n, uint8_t *out)
{
	memset(out, 0, n);
	struct dm_vma v;
	if (dm_vma_find(start, &v) != 1 || v.start > start || v.shared || v.anon || !v.r)
		return;
	/* Until the area's end: past it the caller's next chunk asks again. */
	size_t m = n;
	if (start + m * DM_PAGE_SIZE > v.end)
		m = (v.end - start) / DM_PAGE_SIZE;
	uint64_t pm[DM_CHUNK_PAGES];
	int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	bool ok = fd >= 0 && m <= DM_CHUNK_PAGES &&
		  pread(fd, pm, m * 8, (off_t)(start / DM_PAGE_SIZE * 8)) == (ssize_t)(m * 8);
	if (fd >= 0)
		close(fd);
	for (size_t i = 0; i < m; i++)
		/* Present and not a file page (bit 61): copied on write,
		 * anonymous.  Without pagemap, every page stays. */
		out[i] = !ok || !((pm[i] >> 63) & 1) || ((pm[i] >> 61) & 1);
}

/* ---- process memory, the kernel's way ---- */

int dm_mem_read(void *dst, uintptr_t src, size_t len)
{
	struct iovec l = { dst, len }, r = { (void *)src, len };
	ssize_t n = process_vm_readv(getpid(), &l, 1, &r, 1, 0);
	return n == (ssize_t)len ? 0 : -EFAULT;
}

int dm_mem_write(uintptr_t dst, const void *src, size_t len)
{
	struct iovec l = { (void *)src, len }, r = { (void *)dst, len };
	ssize_t n = process_vm_writev(getpid(), &l, 1, &r, 1, 0);
	return n == (ssize_t)len ? 0 : -EFAULT;
}

/*
 * Scratch buffers come from an arena reserved once (1 GiB of address space,
 * MAP_NORESERVE: memory only where touched), never from a fresh mmap per
 * request: a fresh mmap lands in the highest free gap, and that is often a
 * hole the program has just punched (munmap, mremap away), which would
 * then stop being a hole for the device (the kernel driver never maps
 * anything in the process).  First fit over 64 KiB units; buffers larger
 * than 2 MiB give their memory back on free.  Requests larger than the
 * arena get a mapping of their own (umem, util/umem.h, as the arena).
 */
#define ARENA_SIZE ((size_t)1 << 30)
#define ARENA_UNIT ((size_t)64 << 10)
#define ARENA_UNITS (ARENA_SIZE / ARENA_UNIT)
static pthread_mutex_t bounce_lock = PTHREAD_MUTEX_INITIALIZER; /* leaf */
static char *arena;                                   /* under bounce_lock */
static uint64_t arena_used[ARENA_UNITS / 64];         /* under bounce_lock */

static bool unit_used(size_t u)
{
	return arena_used[u / 64] >> (u % 64) & 1;
}

static void units_mark(size_t u, size_t n, bool used)
{
	for (size_t i = u; i < u + n; i++) {
		if (used)
			arena_used[i / 64] |= 1ull << (i % 64);
		else
			arena_used[i / 64] &= ~(1ull << (i % 64));
	}
}

void *dm_bounce_alloc(size_t len)
{
	size_t n = (len + ARENA_UNIT - 1) / ARENA_UNIT;
	if (!n)
		n = 1;
	void *p = NULL;
	pthread_mutex_lock(&bounce_lock);
	if (!arena) {
		/* In uhmm's own address space (util/umem.h). */
		arena = uhmm__umem_map(ARENA_SIZE, 0, UMEM_NORESERVE);
	}
	for (size_t u = 0; arena && n <= ARENA_UNITS && u + n <= ARENA_UNITS;) {
		size_t k = 0;
		while (k < n && !unit_used(u + k))
			k++;
		if (k == n) {
			units_mark(u, n, true);
			p = arena + u * ARENA_UNIT;
			break;
		}
		u += k + 1;
	}
	pthread_mutex_unlock(&bounce_lock);
	if (p)
		return p;
	return uhmm__umem_map(n * ARENA_UNIT, 0, UMEM_NORESERVE);
}

void dm_bounce_free(void *p, size_t len)
{
	size_t n = (len + ARENA_UNIT - 1) / ARENA_UNIT;
	if (!n)
		n = 1;
	if (!p)
		return;
	char *c = p;
	if (!arena || c < arena || c >= arena + ARENA_SIZE) {
		uhmm__umem_unmap(p, n * ARENA_UNIT);
		return;
	}
	if (n * ARENA_UNIT > UHMM_HUGE_SIZE)
		(void)dm_real_madvise(p, n * ARENA_UNIT, MADV_DONTNEED);
	pthread_mutex_lock(&bounce_lock);
	units_mark((size_t)(c - arena) / ARENA_UNIT, n, false);
	pthread_mutex_unlock(&bounce_lock);
}

/* ---- mmap of the device ---- */

UHMM_API int uhmm_dmirror_map(uhmm_dmirror *h, void *addr, size_t len, int prot,
			      int flags, void **out)
{
	int err = dm_handle_check(h);
	if (err)
		return err;
	int type = flags & MAP_TYPE;
	if (!out || !len || (type != MAP_SHARED && type != MAP_PRIVATE))
		return -EINVAL;
	size_t size = (len + DM_PAGE_SIZE - 1) & ~(DM_PAGE_SIZE - 1);
	/* Fresh zeroed pages for each mapping (the kernel inserts newly
	 * allocated pages): a memfd of our own, dropped once mapped.  A
	 * private mapping of it maps page-cache pages read-only until the
	 * CPU writes them, as the kernel's vm_insert_page'd pages are. */
	int fd = memfd_create("hmm_dmirror_map", MFD_CLOEXEC);
	if (fd < 0)
		return -errno;
	void *p = MAP_FAILED;
	if (ftruncate(fd, (off_t)size) == 0)
		p = dm_real_mmap(addr, len, prot, flags & ~MAP_ANONYMOUS, fd, 0);
	err = p == MAP_FAILED ? -errno : 0;
	close(fd);
	if (err)
		return err;
	if (prot & PROT_READ) {
		int adv = (type == MAP_SHARED && (prot & PROT_WRITE)) ? MADV_POPULATE_WRITE
								      : MADV_POPULATE_READ;
		(void)madvise(p, size, adv); /* present, as the kernel's */
	}
	*out = p;
	return 0;
}
