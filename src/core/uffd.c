/* SPDX-License-Identifier: MIT */
/*
 * uffd.c - opening a userfaultfd, probing its features, and thin wrappers
 * of its ioctls that report partial progress.  No locks.
 *
 * Probing follows the kernel's protocol: UFFDIO_API may be issued once per
 * descriptor, and a request with features = 0 answers with every feature the
 * kernel has.  So a first descriptor asks, is closed, and the context's
 * descriptor is opened asking for what uhmm wants of what exists.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "core/internal.h"
#include "core/log.h"

/* Needed: without these events uhmm cannot follow the CPU page table. */
#define UFFD_NEEDED                                                           \
	(UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_EVENT_UNMAP |               \
	 UFFD_FEATURE_EVENT_REMAP)
/* Used where present. */
#define UFFD_WANTED (UFFD_FEATURE_THREAD_ID | UFFD_FEATURE_MOVE | UFFD_FEATURE_POISON | \
		     UFFD_FEATURE_PAGEFAULT_FLAG_WP)

static int open_raw(int flags)
{
	int fd = (int)syscall(SYS_userfaultfd, flags);
	if (fd >= 0)
		return fd;
	int err = errno;
	/* /dev/userfaultfd (Linux 6.1) grants full mode to whoever may open it,
	 * even with vm.unprivileged_userfaultfd = 0. */
	if (err == EPERM && !(flags & UFFD_USER_MODE_ONLY)) {
		int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
		if (dev >= 0) {
			fd = ioctl(dev, USERFAULTFD_IOC_NEW, flags);
			close(dev);
			if (fd >= 0)
				return fd;
		}
	}
	return -err;
}

int uhmm__uffd_new_fd(bool user_mode_only, int *fd_out)
{
	int flags = O_CLOEXEC | O_NONBLOCK;
	if (user_mode_only)
		flags |= UFFD_USER_MODE_ONLY;
	int fd = open_raw(flags);
	if (fd < 0)
		return fd;
	*fd_out = fd;
	return 0;
}

static int api(int fd, uint64_t features, uint64_t *got)
{
	struct uffdio_api a = { .api = UFFD_API, .features = features };
	if (ioctl(fd, UFFDIO_API, &a) < 0)
		return -errno;
	*got = a.features;
	return 0;
}

int uhmm__uffd_open(struct uhmm_ctx *ctx)
{
	const char *env = getenv("UHMM_USER_MODE_ONLY");
	bool user_only = (ctx->opts.flags & UHMM_CTX_USER_MODE_ONLY) ||
			 (env && *env == '1');
	int fd, err = uhmm__uffd_new_fd(user_only, &fd);
	if (err == -EPERM && !user_only &&
	    !(ctx->opts.flags & UHMM_CTX_REQUIRE_KERNEL_FAULTS)) {
		/* Full mode is not ours to have: serve user faults only. */
		UHMM_LOG(UHMM_LOG_INFO, "context %p: a userfaultfd for kernel faults was refused "
			 "(EPERM: vm.unprivileged_userfaultfd=0 and no CAP_SYS_PTRACE): user faults "
			 "only (UFFD_USER_MODE_ONLY); a kernel access to a device page fails EFAULT",
			 (void *)ctx);
		user_only = true;
		err = uhmm__uffd_new_fd(true, &fd);
	}
	if (err == -ENOSYS || err == -EOPNOTSUPP)
		return -ENOSYS;
	if (err)
		return err;

	uint64_t have = 0;
	err = api(fd, 0, &have);
	close(fd);
	if (err)
		return err == -EINVAL ? -EOPNOTSUPP : err;
	if ((have & UFFD_NEEDED) != UFFD_NEEDED)
		return -EOPNOTSUPP;

	uint64_t want = UFFD_NEEDED | (have & UFFD_WANTED);
	if (ctx->opts.flags & UHMM_CTX_SIGBUS) {
		/* Faults raise SIGBUS in the faulting thread (sigbus.c);
		 * events still come as messages. */
		if (!(have & UFFD_FEATURE_SIGBUS))
			return -EOPNOTSUPP;
		want |= UFFD_FEATURE_SIGBUS;
	}

	err = uhmm__uffd_new_fd(user_only, &fd);
	if (err)
		return err;
	err = api(fd, want, &have);
	if (err) {
		close(fd);
		return err;
	}
	ctx->uffd = fd;
	ctx->features = have;
	ctx->user_mode_only = user_only;
	ctx->has_move = (have & UFFD_FEATURE_MOVE) != 0;
	const char *nomove = getenv("UHMM_NO_MOVE");
	ctx->move_in = ctx->has_move && !(ctx->opts.flags & UHMM_CTX_NO_MOVE) &&
		       !(nomove && *nomove == '1');
	/* Toward a device too: without UFFDIO_MOVE (a kernel before 6.8, or
	 * forced), pages leave by the no-move path (migrate.c).  Ranges are
	 * registered for write-protection wherever the kernel has it, so
	 * that a page can be copied while the CPU may still read it but not
	 * write it.  Also with UFFDIO_MOVE: read-only memory, which it
	 * refuses, leaves by the no-move path too, and a plain mprotect to
	 * read-write (uhmm is not told) can make it writable while it is
	 * copied; a migration the application does not wait for (a prefetch,
	 * a device's fault) makes that no race of the application's. */
	ctx->move_out = ctx->move_in;
	ctx->wp = (have & UFFD_FEATURE_PAGEFAULT_FLAG_WP) != 0;
	ctx->has_poison = (have & UFFD_FEATURE_POISON) != 0;
	ctx->sigbus = (ctx->opts.flags & UHMM_CTX_SIGBUS) != 0;
	UHMM_LOG(UHMM_LOG_INFO,
		 "context %p: userfaultfd features %#llx; %s mode; pages %s; write-protection %s%s",
		 (void *)ctx, (unsigned long long)have,
		 ctx->sigbus ? "SIGBUS (faulting threads serve themselves)"
		 : user_only ? "user-mode-only" : "full",
		 ctx->move_in ? "move with UFFDIO_MOVE"
		 : ctx->has_move ? "copied (UFFDIO_MOVE there, but off: UHMM_NO_MOVE or UHMM_CTX_NO_MOVE)"
				 : "copied (no UFFDIO_MOVE: Linux before 6.8)",
		 ctx->wp ? "on" : "off (no UFFD_FEATURE_PAGEFAULT_FLAG_WP)",
		 !ctx->move_out && !ctx->wp ? "; migration to devices impossible" : "");
	return 0;
}

int uhmm__uffd_register(int fd, uintptr_t start, size_t len)
{
	return uhmm__uffd_register_wp(fd, start, len, false);
}

int uhmm__uffd_register_wp(int fd, uintptr_t start, size_t len, bool wp)
{
	struct uffdio_register r = {
		.range = { .start = start, .len = len },
		.mode = UFFDIO_REGISTER_MODE_MISSING | (wp ? UFFDIO_REGISTER_MODE_WP : 0),
	};
	return ioctl(fd, UFFDIO_REGISTER, &r) < 0 ? -errno : 0;
}

int uhmm__uffd_writeprotect(int fd, uintptr_t start, size_t len, bool wp)
{
	struct uffdio_writeprotect w = {
		.range = { .start = start, .len = len },
		.mode = wp ? UFFDIO_WRITEPROTECT_MODE_WP : 0,
	};
	/* -EAGAIN: an event is pending (mmap_changing): the caller decides
	 * (the service thread reads events; a migration backs off). */
	return ioctl(fd, UFFDIO_WRITEPROTECT, &w) < 0 ? -errno : 0;
}

int uhmm__uffd_protect_yielding(int fd, uintptr_t start, size_t len)
{
	int e;
	for (int k = 0; (e = uhmm__uffd_writeprotect(fd, start, len, true)) == -EAGAIN && k < 16;
	     k++)
		sched_yield();
	return e;
}

int uhmm__uffd_unregister(int fd, uintptr_t start, size_t len)
{
	struct uffdio_range r = { .start = start, .len = len };
	return ioctl(fd, UFFDIO_UNREGISTER, &r) < 0 ? -errno : 0;
}

/*
 * How far a failed fill or move really got, from @off on: a page counts as
 * done when it is present at the destination and, for a move (@src not 0),
 * gone from the source.
 *
 * Linux 6.18 can end UFFDIO_MOVE, UFFDIO_COPY and UFFDIO_ZEROPAGE having
 * done more pages than it reports in the ioctl's count (seen as a short
 * count, and then -EEXIST when the rest is retried: the first uncounted
 * page is in place already).  Taken at its word, the report makes the
 * caller believe a moved page is still at its source (it is lost, sitting
 * unrecorded at the destination) or a filled page still missing (its next
 * CPU write then goes unseen).  The destinations this is used for are
 * filled by nobody but uhmm's own ioctls: an EMPTY reserve slot, a missing
 * managed page that uhmm records on a device.  (A zero-fill window may hold
 * pages present for good reasons; its caller compares with a snapshot.)
 */
static size_t landed(uintptr_t dst, uintptr_t src, size_t off, size_t len)
{
	while (off < len) {
		unsigned char vd = 0, vs = 1;
		if (mincore((void *)(dst + off), PAGE_SIZE, &vd) || !(vd & 1))
			break;
		if (src && (mincore((void *)(src + off), PAGE_SIZE, &vs) || (vs & 1)))
			break;
		off += PAGE_SIZE;
	}
	return off;
}

long uhmm__uffd_move(int fd, uintptr_t dst, uintptr_t src, size_t len,
		     uint64_t mode, size_t *done)
{
	size_t off = 0;
	while (off < len) {
		struct uffdio_move m = { .dst = dst + off, .src = src + off,
					 .len = len - off, .mode = mode };
		if (ioctl(fd, UFFDIO_MOVE, &m) == 0) {
			off = len;
			break;
		}
		int err = errno;
		if (m.move > 0)
			off += (size_t)m.move;
		/* The report may fall short of what was done (above): if it
		 * did, go on from where the kernel really stopped. */
		size_t real = landed(dst, src, off, len);
		if (real > off) {
			off = real;
			continue;
		}
		/* EAGAIN after progress: the rest is still to do.  EAGAIN with
		 * none: an event is pending (mmap_changing) and must be read
		 * first; the caller decides (the service thread reads it). */
		if (err == EAGAIN && m.move > 0)
			continue;
		*done = off;
		return -err;
	}
	*done = off;
	return (long)off;
}

/* The EAGAIN retry of uhmm__uffd_move_out, for one run. */
static long move_out_run(int fd, uintptr_t dst, uintptr_t src, size_t len,
			 uint64_t mode, size_t *done)
{
	size_t off = 0;
	uint64_t t0 = 0;
	for (;;) {
		size_t d = 0;
		long ret = uhmm__uffd_move(fd, dst + off, src + off, len - off, mode, &d);
		off += d;
		if (ret != -EAGAIN) {
			*done = off;
			return ret < 0 ? ret : (long)off;
		}
		/* A page in transit (internal.h); the reserve's descriptor
		 * has no events, so this is never mmap_changing. */
		if (uhmm__settle_expired(&t0)) {
			*done = off;
			return -EAGAIN;
		}
		sched_yield();
	}
}

#define PM_PRESENT (1ull << 63)
#define PM_SWAP (1ull << 62)

/*
 * From src, n pages on: how many pages hold nothing (*holes), then how many
 * hold something (*run: present or swapped out).  False if pagemap cannot
 * be read.
 */
static bool scan_src(int pagemap_fd, uintptr_t src, size_t n, size_t *holes, size_t *run)
{
	uint64_t e[64];
	size_t i = 0, h = 0, r = 0;
	while (i < n) {
		size_t k = n - i < 64 ? n - i : 64;
		off_t at = (off_t)(((src >> PAGE_SHIFT) + i) * sizeof(uint64_t));
		if (pread(pagemap_fd, e, k * sizeof(uint64_t), at) != (ssize_t)(k * sizeof(uint64_t)))
			return false;
		for (size_t x = 0; x < k; x++, i++) {
			bool full = e[x] & (PM_PRESENT | PM_SWAP);
			if (!full && r)
				goto out;
			if (full)
				r++;
			else
				h++;
		}
	}
out:
	*holes = h;
	*run = r;
	return true;
}

/* Is all of [a, a + len) mapped?  (mincore fails ENOMEM on a gap.) */
static bool all_mapped(uintptr_t a, size_t len)
{
	unsigned char vec[512];
	while (len) {
		size_t l = len < sizeof(vec) * PAGE_SIZE ? len : sizeof(vec) * PAGE_SIZE;
		if (mincore((void *)a, l, vec))
			return false;
		a += l;
		len -= l;
	}
	return true;
}

long uhmm__uffd_move_out(int fd, int pagemap_fd, uintptr_t dst, uintptr_t src, size_t len,
			 uint64_t mode, size_t *done)
{
	bool exact;
	return uhmm__uffd_move_out_map(fd, pagemap_fd, dst, src, len, mode, done, NULL, &exact);
}

/* Mark pages [from, to) (byte offsets) in moved[], if asked. */
static void mark_moved(uint8_t *moved, size_t from, size_t to)
{
	if (moved && to > from)
		memset(moved + (from >> PAGE_SHIFT), 1, (to - from) >> PAGE_SHIFT);
}

long uhmm__uffd_move_out_map(int fd, int pagemap_fd, uintptr_t dst, uintptr_t src,
			     size_t len, uint64_t mode, size_t *done, uint8_t *moved,
			     bool *exact)
{
	if (pagemap_fd < 0 || !(mode & UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES)) {
		*exact = !(mode & UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES);
		long ret = move_out_run(fd, dst, src, len, mode, done);
		if (*exact)
			mark_moved(moved, 0, *done);
		return ret;
	}
	*exact = true;
	/*
	 * Most batches have no hole: move the whole run first without
	 * ALLOW_SRC_HOLES (all of it moves, or the kernel stops at the first
	 * hole with ENOENT, having moved what came before), and scan pagemap
	 * only from where it stopped.  A batch of present pages then costs
	 * its UFFDIO_MOVE alone, not a pagemap read besides (issue 18: ~0.3
	 * us of a 4 KiB batch's few).  What follows is the same as if the
	 * scan had started there.
	 */
	size_t off = 0, enoent_at = SIZE_MAX;
	{
		size_t d = 0;
		long ret = move_out_run(fd, dst, src, len,
					mode & ~(uint64_t)UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES, &d);
		mark_moved(moved, 0, d);
		if (ret >= 0) {
			*done = len;
			return (long)len;
		}
		if (ret != -ENOENT) {
			*done = d;
			return ret;
		}
		off = d;
	}
	/*
	 * Holes are skipped here, not handed to the kernel.  Linux 6.18 was
	 * seen (about once in 500 runs of a test that discards a range while
	 * a device kernel migrates it, under load) to loop for ever inside
	 * UFFDIO_MOVE with ALLOW_SRC_HOLES over a source that was all holes:
	 * the thread spun in move_pages() reading both page tables, never
	 * returning to user space (docs/RELIABILITY.md).  A page the scan
	 * saw full and a discard emptied before the move makes the run stop
	 * with ENOENT: scanned again, it is a hole.  An address no longer
	 * mapped is no hole: the kernel says what it says of it (ENOENT).
	 */
	while (off < len) {
		size_t holes, run;
		/* Holes, or no mapping at all (an munmap or mremap under us):
		 * pagemap says the same of both, and only a hole may count as
		 * moved.  Asked after the scan, which then saw the range as it
		 * was mapped (a later mremap moves holes as holes).  Where
		 * pagemap cannot be read or the range is not all mapped, the
		 * kernel decides for the rest, as before. */
		if (!scan_src(pagemap_fd, src + off, (len - off) >> PAGE_SHIFT, &holes, &run) ||
		    (holes && !all_mapped(src + off, holes << PAGE_SHIFT))) {
			size_t d = 0;
			*exact = false; /* the kernel skips the holes: which? */
			long ret = move_out_run(fd, dst + off, src + off, len - off, mode, &d);
			*done = off + d;
			return ret < 0 ? ret : (long)*done;
		}
		off += holes << PAGE_SHIFT;
		if (!run)
			break;
		size_t d = 0;
		long ret = move_out_run(fd, dst + off, src + off, run << PAGE_SHIFT,
					mode & ~(uint64_t)UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES, &d);
		mark_moved(moved, off, off + d); /* no holes in a run */
		off += d;
		if (ret >= 0)
			continue;
		if (ret == -ENOENT && off != enoent_at) {
			enoent_at = off; /* emptied since the scan: look again */
			continue;
		}
		*done = off;
		return ret;
	}
	*done = len;
	return (long)len;
}

long uhmm__uffd_copy(int fd, uintptr_t dst, const void *src, size_t len,
		     uint64_t mode, bool dst_empty, size_t *done)
{
	size_t off = 0;
	while (off < len) {
		struct uffdio_copy c = { .dst = dst + off,
					 .src = (uintptr_t)src + off,
					 .len = len - off, .mode = mode };
		if (ioctl(fd, UFFDIO_COPY, &c) == 0) {
			off = len;
			break;
		}
		int err = errno;
		if (c.copy > 0)
			off += (size_t)c.copy;
		if (dst_empty) {
			size_t real = landed(dst, 0, off, len);
			if (real > off) {
				off = real;
				continue;
			}
		}
		if (err == EAGAIN && c.copy > 0)
			continue; /* see uhmm__uffd_move */
		*done = off;
		return -err;
	}
	*done = off;
	return (long)off;
}

int uhmm__uffd_zeropage(int fd, uintptr_t dst, size_t len, size_t *done)
{
	size_t off = 0;
	while (off < len) {
		struct uffdio_zeropage z = {
			.range = { .start = dst + off, .len = len - off }
		};
		if (ioctl(fd, UFFDIO_ZEROPAGE, &z) == 0) {
			off = len;
			break;
		}
		int err = errno;
		if (z.zeropage > 0)
			off += (size_t)z.zeropage;
		if (err == EAGAIN && z.zeropage > 0)
			continue; /* see uhmm__uffd_move */
		*done = off;
		return -err;
	}
	*done = off;
	return 0;
}

int uhmm__uffd_wake(int fd, uintptr_t addr, size_t len)
{
	struct uffdio_range r = { .start = addr, .len = len };
	return ioctl(fd, UFFDIO_WAKE, &r) < 0 ? -errno : 0;
}

int uhmm__uffd_poison(int fd, uintptr_t addr, size_t len)
{
	struct uffdio_poison p = { .range = { .start = addr, .len = len } };
	return ioctl(fd, UFFDIO_POISON, &p) < 0 ? -errno : 0;
}

bool uhmm__events_pending(struct uhmm_ctx *ctx)
{
	size_t done;
	return ctx->probe &&
	       uhmm__uffd_zeropage(ctx->uffd, (uintptr_t)ctx->probe, PAGE_SIZE, &done) == -EAGAIN;
}
