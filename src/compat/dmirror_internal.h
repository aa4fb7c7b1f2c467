/* SPDX-License-Identifier: MIT */
/*
 * dmirror_internal.h - what the files of src/compat/ share.
 *
 * Files:
 *   dm_pt.c      the device page table of one handle (a 3-level radix)
 *   dm_state.c   the process's state: context, devices, handles, fork;
 *                VMA queries; registering memory with uhmm on the fly
 *   dm_cmd.c     the requests (READ, WRITE, MIGRATE_*, SNAPSHOT, ...)
 *   preload.c    the LD_PRELOAD shim: open/close/dup/ioctl/mmap/mprotect
 *
 * Locks, in the order they are taken (higher rank inside lower):
 *   1  dev->use_lock   (rwlock) read by every request on the device; written
 *                      by RELEASE while it replaces the simdev, and by the
 *                      open that creates the simdev
 *   2  g_reg_lock      (mutex, dm_state.c) serialises registrations with
 *                      uhmm (uhmm_register sleeps under it)
 *   3  m->pt_lock      (mutex) a handle's device page table and flags; taken
 *                      by the invalidate callback, so nothing under it may
 *                      touch managed memory through the CPU or call uhmm (it
 *                      may run the device's copy engine and read reserve
 *                      slots)
 *   3  g_lock          (mutex, dm_state.c) the context pointer, the handle
 *                      count, and (with use_lock written) a device's simdev;
 *                      held across context/simdev create/destroy only
 *   4  tab_lock        (mutex, preload.c) descriptor bindings, handle refs
 *   4  h_lock          (mutex, dm_state.c) the list of live handles; leaf
 *   4  bounce_lock     (mutex, dm_state.c) the scratch-buffer arena
 * No callback of ours takes anything but pt_lock, and pt_lock holders wait
 * for nothing of uhmm's, so uhmm's threads never wait for us in a cycle.
 */
#ifndef UHMM_COMPAT_DMIRROR_INTERNAL_H
#define UHMM_COMPAT_DMIRROR_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <uhmm/dmirror.h>
#include <uhmm/mirror.h>
#include <uhmm/simdev.h>
#include <uhmm/uhmm.h>

#include "util/umem.h"

#define DM_PAGE_SHIFT 12
#define DM_PAGE_SIZE ((uintptr_t)1 << DM_PAGE_SHIFT)
#define DM_NDEV 4          /* /dev/hmm_dmirror0..3 */
#define DM_NPRIVATE 2      /* 0, 1: device-private; 2, 3: coherent */
#define DM_CHUNK_PAGES 512 /* pages per migration chunk and per range fault */

/* ---- dm_pt.c: a handle's device page table ---- */

/*
 * Maps a virtual page number to the uhmm_range_fault() entry the device
 * uses (UHMM_RE_* bits: VALID, WRITE, DEVICE + frame, EXCLUSIVE + slot
 * page).  0 means "no entry".  36-bit page numbers, 12 bits a level; leaves
 * are allocated on first store and freed with the table.  The caller
 * serialises (pt_lock).
 */
struct dm_pt {
	uint64_t ***top; /* [4096] -> [4096] -> leaf[4096] */
};

int dm_pt_init(struct dm_pt *pt);
void dm_pt_destroy(struct dm_pt *pt);
uint64_t dm_pt_get(const struct dm_pt *pt, uintptr_t va);
int dm_pt_set(struct dm_pt *pt, uintptr_t va, uint64_t e); /* -ENOMEM */
void dm_pt_clear(struct dm_pt *pt, uintptr_t start, uintptr_t end);

/* ---- dm_state.c: the process's state ---- */

/* One device number's device (0 and 1 only). */
struct dm_dev {
	pthread_rwlock_t use_lock; /* rank 1: see the top of this file */
	uhmm_device *dev;          /* the simdev; NULL until first open */
	int num;
};

/* A handle (the kernel's struct dmirror): one open file of a device. */
struct uhmm_dmirror {
	struct dm_dev *d;
	uhmm_ctx *ctx;
	pid_t pid;                 /* the process whose address space it mirrors */
	struct uhmm_notifier *n;   /* over the whole user address space */
	pthread_mutex_t pt_lock;   /* rank 3: guards pt (and flags) */
	struct dm_pt pt;
	uint64_t flags;            /* UHMM_DMIRROR_FLAG_* */
	int refs;                  /* preload: bindings + requests (tab_lock) */
	struct uhmm_dmirror *next; /* the list of live handles (h_lock) */
};

/* The user address space a mirror covers (as simdev's). */
#define DM_VA_START ((uintptr_t)DM_PAGE_SIZE)
#define DM_VA_END (((uintptr_t)1 << 47) - DM_PAGE_SIZE)

/* RELEASE: evict everything @d holds by detaching its simdev, and attach
 * a fresh one.  Caller holds d->use_lock for writing.  d->dev is NULL
 * afterwards if the new device could not be created. */
int dm_dev_release_locked(struct dm_dev *d);

/* Whether @h is a live handle of this process (0), or why not: -EBADF
 * not a handle (never one, or closed; @h is looked up before it is
 * dereferenced), -EINVAL a handle inherited from the parent of a fork. */
int dm_handle_check(const uhmm_dmirror *h);

/* One virtual memory area as /proc/self/maps tells it. */
struct dm_vma {
	uintptr_t start, end;
	bool r, w, shared;
	bool anon;  /* no file behind it (private anonymous, heap) */
	bool stack; /* [stack] */
};
/* The VMA covering @addr or the next one after it: 1 found, 0 none,
 * -errno. */
int dm_vma_find(uintptr_t addr, struct dm_vma *v);

/* Make the private readable pages of [start, end) managed by @ctx, from
 * @start up to the first hole or area that is not such memory (what is
 * managed already is left alone).  Private file mappings are adopted
 * (UHMM_REGISTER_ADOPT_FILE): call dm_file_pages() first to learn which
 * of their pages the kernel would not migrate. */
void dm_manage_range(uhmm_ctx *ctx, uintptr_t start, uintptr_t end);

/* For the n (<= DM_CHUNK_PAGES) pages from @start, inside one area: out[i]
 * = 1 where the area is a private file mapping and the page is not one of
 * its anonymous (copied-on-write) pages: a page-cache page or one never
 * touched, which the kernel's migrate_vma does not move.  0 elsewhere. */
void dm_file_pages(uintptr_t start, size_t n, uint8_t *out);

/* A change of the CPU mapping of [start, start + len) made by the program
 * (preload.c's munmap, mremap, mmap(MAP_FIXED), madvise wrappers): @fn(@arg)
 * runs inside uhmm_change_mapping(), so every mirror drops the range
 * before it takes effect, as the kernel's notifiers; straight, when no
 * context exists or the range is uhmm's own memory.  Returns @fn's
 * result.  Takes no lock of ours: callable under any. */
int dm_change(uintptr_t start, size_t len, enum uhmm_inv_reason reason, uintptr_t new_start,
	      uhmm_change_fn fn, void *arg);

/* Read/write process memory the way the kernel does for a device
 * (process_vm_readv/writev on ourselves): the CPU mapping's rights apply,
 * a write copies-on-write, and memory that is not mapped or not allowed
 * gives -EFAULT instead of a crash.  Return 0 or -EFAULT. */
int dm_mem_read(void *dst, uintptr_t src, size_t len);
int dm_mem_write(uintptr_t dst, const void *src, size_t len);

/* Anonymous populated scratch memory the library owns (never managed). */
void *dm_bounce_alloc(size_t len);
void dm_bounce_free(void *p, size_t len);

/* ---- dm_cmd.c ---- */

/* The requests; @cmd is the caller's copy, written only on success. */
int dm_cmd(uhmm_dmirror *h, unsigned request, struct uhmm_dmirror_cmd *cmd);

/* The invalidate callback of a handle's notifier. */
void dm_invalidate(struct uhmm_notifier *n, const struct uhmm_inv_event *ev,
		   void *priv);

/* ---- preload.c: the real libc functions (dm_state.c uses them so that
 * its own calls never come back through the shim) ---- */
void *dm_real_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off);
int dm_real_munmap(void *addr, size_t len);
int dm_real_mprotect(void *addr, size_t len, int prot);
int dm_real_madvise(void *addr, size_t len, int advice);

#endif
