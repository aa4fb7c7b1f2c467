/* SPDX-License-Identifier: MIT */
/*
 * floors.c - the baselines of a CPU fault, written with the raw kernel
 * interfaces and nothing of uhmm:
 *
 *   floor_uffd_thread      a bare userfaultfd service thread answering
 *                          MISSING faults with UFFDIO_COPY (sleeping in
 *                          poll(), or spinning on a non-blocking read)
 *   floor_sigbus_move      UFFD_FEATURE_SIGBUS: the faulting thread serves
 *                          itself in a SIGBUS handler that installs a warm
 *                          page with UFFDIO_MOVE
 *   floor_mprotect_sigsegv what people write without uhmm: PROT_NONE while
 *                          "on the device", a SIGSEGV handler that restores
 *                          access and copies the data back
 *   floor_kernel_fault     the kernel's own anonymous fault (write after
 *                          MADV_DONTNEED: a warm page allocation)
 *
 * Each fills ns[0..n) with per-touch latencies in nanoseconds, after one
 * untimed warm-up round, and returns 0 or a negative errno.
 */
#define _GNU_SOURCE
#include "bench.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "util/dmacopy.h" /* the engines' own copy (simdev copy.c) */

/* Newer than the installed headers (Linux 6.1); values are the kernel's
 * (copied from src/util/uffd_compat.h: the bench uses only public API). */
#ifndef UFFD_FEATURE_MOVE
#define UFFD_FEATURE_MOVE (1 << 16)
#define _UFFDIO_MOVE (0x05)
struct uffdio_move {
	__u64 dst;
	__u64 src;
	__u64 len;
#define UFFDIO_MOVE_MODE_DONTWAKE ((__u64)1 << 0)
#define UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES ((__u64)1 << 1)
	__u64 mode;
	__s64 move;
};
#define UFFDIO_MOVE _IOWR(UFFDIO, _UFFDIO_MOVE, struct uffdio_move)
#endif
#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif

/* Pages a round touches (one region, re-armed between rounds). */
#define ROUND_PAGES 1024u

static int open_uffd(int flags, uint64_t features)
{
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | flags);
	if (fd < 0 && errno == EPERM)
		fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | flags | UFFD_USER_MODE_ONLY);
	if (fd < 0)
		return -errno;
	struct uffdio_api api = { .api = UFFD_API, .features = features };
	if (ioctl(fd, UFFDIO_API, &api) < 0) {
		int e = -errno;
		close(fd);
		return e;
	}
	return fd;
}

static int uffd_register(int fd, void *p, size_t len)
{
	struct uffdio_register r = { .range = { .start = (uintptr_t)p, .len = len },
				     .mode = UFFDIO_REGISTER_MODE_MISSING };
	return ioctl(fd, UFFDIO_REGISTER, &r) < 0 ? -errno : 0;
}

static inline void touch_read(const void *p)
{
	(void)*(const volatile char *)p;
}

/* Time a read touch of each page of [p, p + npages) into ns[]. */
static void time_touches(char *p, size_t npages, double *ns)
{
	for (size_t i = 0; i < npages; i++) {
		uint64_t t = now_ns();
		touch_read(p + i * PAGE);
		ns[i] = (double)(now_ns() - t);
	}
}

/* ------------------------------------------------- bare service thread */

struct server {
	int uffd, stopfd;
	bool spin;
	atomic_bool stop;
	void *src; /* a warm page */
	atomic_int err;
};

static void *serve(void *arg)
{
	struct server *s = arg;
	struct uffd_msg msg[16];
	for (;;) {
		if (!s->spin) {
			struct pollfd fds[2] = { { .fd = s->uffd, .events = POLLIN },
						 { .fd = s->stopfd, .events = POLLIN } };
			if (poll(fds, 2, -1) < 0 && errno != EINTR)
				break;
			if (fds[1].revents)
				break;
		} else if (atomic_load_explicit(&s->stop, memory_order_relaxed)) {
			break;
		}
		ssize_t r = read(s->uffd, msg, sizeof(msg));
		if (r < 0) {
			if (errno == EAGAIN || errno == EINTR)
				continue;
			atomic_store(&s->err, -errno);
			break;
		}
		for (size_t i = 0; i < (size_t)r / sizeof(msg[0]); i++) {
			if (msg[i].event != UFFD_EVENT_PAGEFAULT)
				continue;
			struct uffdio_copy c = {
				.dst = msg[i].arg.pagefault.address & ~(uint64_t)(PAGE - 1),
				.src = (uintptr_t)s->src, .len = PAGE, .mode = 0 };
			if (ioctl(s->uffd, UFFDIO_COPY, &c) < 0 && errno != EEXIST) {
				atomic_store(&s->err, -errno);
				return NULL;
			}
		}
	}
	return NULL;
}

int floor_uffd_thread(double *ns, size_t n, bool spin)
{
	size_t len = (size_t)ROUND_PAGES * PAGE;
	struct server s = { .spin = spin, .uffd = -1, .stopfd = -1 };
	char *region = map_anon(len);
	s.src = map_anon(PAGE);
	int e = 0;
	if (!region || !s.src) {
		e = -ENOMEM;
		goto out;
	}
	memset(s.src, 0x3c, PAGE);
	madvise(region, len, MADV_NOHUGEPAGE);
	/* Non-blocking in both modes: poll() may report a fault that is gone by
	 * the time read() looks (the faulting thread was woken by an earlier
	 * answer for the same page); a blocking read would then sleep forever. */
	s.uffd = open_uffd(O_NONBLOCK, 0);
	if (s.uffd < 0) {
		e = s.uffd;
		goto out;
	}
	s.stopfd = eventfd(0, EFD_CLOEXEC);
	if (s.stopfd < 0 || (e = uffd_register(s.uffd, region, len)) < 0) {
		e = e ? e : -errno;
		goto out;
	}
	pthread_t tid;
	if ((e = -pthread_create(&tid, NULL, serve, &s)) < 0)
		goto out;
	double *scratch = ns;
	for (size_t done = 0, round = 0; done < n; round++) {
		madvise(region, len, MADV_DONTNEED); /* pages missing again */
		size_t k = round == 0 ? ROUND_PAGES : n - done < ROUND_PAGES ? n - done : ROUND_PAGES;
		if (round == 0) { /* warm-up: time into a throwaway area */
			double tmp[ROUND_PAGES];
			time_touches(region, k, tmp);
			continue;
		}
		time_touches(region, k, scratch + done);
		done += k;
		if (atomic_load(&s.err))
			break;
	}
	if (spin)
		atomic_store(&s.stop, true);
	uint64_t one = 1;
	if (write(s.stopfd, &one, sizeof(one)) < 0)
		e = -errno;
	pthread_join(tid, NULL);
	if (atomic_load(&s.err))
		e = atomic_load(&s.err);
out:
	if (s.uffd >= 0)
		close(s.uffd);
	if (s.stopfd >= 0)
		close(s.stopfd);
	if (region)
		munmap(region, len);
	if (s.src)
		munmap(s.src, PAGE);
	return e;
}

/* ---------------------------------------------- SIGBUS + UFFDIO_MOVE */

/* The handler's state: set before the handler is installed. */
static int sb_uffd = -1;
static uintptr_t sb_dst, sb_src, sb_len;
static atomic_int sb_err;
static struct sigaction sb_old;

static void chain(struct sigaction *old, int sig, siginfo_t *si, void *uc)
{
	if (old->sa_flags & SA_SIGINFO) {
		old->sa_sigaction(sig, si, uc);
	} else if (old->sa_handler == SIG_DFL || old->sa_handler == SIG_IGN) {
		signal(sig, SIG_DFL); /* the access faults again and kills, as it would have */
	} else {
		old->sa_handler(sig);
	}
}

static void sigbus_move(int sig, siginfo_t *si, void *uc)
{
	uintptr_t a = (uintptr_t)si->si_addr;
	if (a < sb_dst || a >= sb_dst + sb_len) {
		chain(&sb_old, sig, si, uc);
		return;
	}
	int saved = errno;
	uintptr_t off = (a - sb_dst) & ~(uintptr_t)(PAGE - 1);
	struct uffdio_move m = { .dst = sb_dst + off, .src = sb_src + off, .len = PAGE, .mode = 0 };
	if (ioctl(sb_uffd, UFFDIO_MOVE, &m) < 0 && errno != EEXIST) {
		atomic_store(&sb_err, -errno);
		/* Do not loop on the fault: give the page a zero page instead. */
		struct uffdio_zeropage z = { .range = { .start = m.dst, .len = PAGE } };
		ioctl(sb_uffd, UFFDIO_ZEROPAGE, &z);
	}
	errno = saved;
}

int floor_sigbus_move(double *ns, size_t n)
{
	size_t len = (size_t)ROUND_PAGES * PAGE;
	char *dst = map_anon(len), *src = map_anon(len);
	int e = 0, fd = -1;
	bool installed = false;
	if (!dst || !src) {
		e = -ENOMEM;
		goto out;
	}
	madvise(dst, len, MADV_NOHUGEPAGE);
	madvise(src, len, MADV_NOHUGEPAGE);
	fd = open_uffd(0, UFFD_FEATURE_SIGBUS | UFFD_FEATURE_MOVE);
	if (fd < 0) {
		e = fd;
		goto out;
	}
	if ((e = uffd_register(fd, dst, len)) < 0)
		goto out;
	sb_uffd = fd;
	sb_dst = (uintptr_t)dst;
	sb_src = (uintptr_t)src;
	sb_len = len;
	atomic_store(&sb_err, 0);
	struct sigaction sa = { .sa_sigaction = sigbus_move, .sa_flags = SA_SIGINFO | SA_NODEFER };
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGBUS, &sa, &sb_old) < 0) {
		e = -errno;
		goto out;
	}
	installed = true;
	for (size_t done = 0, round = 0; done < n; round++) {
		madvise(dst, len, MADV_DONTNEED);
		touch_write(src, len); /* warm pages to move in (the pool) */
		size_t k = round == 0 ? ROUND_PAGES : n - done < ROUND_PAGES ? n - done : ROUND_PAGES;
		if (round == 0) {
			double tmp[ROUND_PAGES];
			time_touches(dst, k, tmp);
			continue;
		}
		time_touches(dst, k, ns + done);
		done += k;
		if (atomic_load(&sb_err))
			break;
	}
	e = atomic_load(&sb_err);
out:
	if (installed)
		sigaction(SIGBUS, &sb_old, NULL);
	if (fd >= 0)
		close(fd);
	sb_uffd = -1;
	sb_len = 0;
	if (dst)
		munmap(dst, len);
	if (src)
		munmap(src, len);
	return e;
}

/* ------------------------------------------ mprotect + SIGSEGV migrator */

static uintptr_t mp_base, mp_len;
static const char *mp_dev; /* the "device" copy */
static atomic_int mp_err;
static struct sigaction mp_old;

static void sigsegv_migrate(int sig, siginfo_t *si, void *uc)
{
	uintptr_t a = (uintptr_t)si->si_addr;
	if (a < mp_base || a >= mp_base + mp_len) {
		chain(&mp_old, sig, si, uc);
		return;
	}
	int saved = errno;
	uintptr_t off = (a - mp_base) & ~(uintptr_t)(PAGE - 1);
	if (mprotect((void *)(mp_base + off), PAGE, PROT_READ | PROT_WRITE) < 0) {
		atomic_store(&mp_err, -errno);
		signal(sig, SIG_DFL);
	} else {
		__builtin_memcpy((void *)(mp_base + off), mp_dev + off, PAGE); /* copy back */
	}
	errno = saved;
}

int floor_mprotect_sigsegv(double *ns, size_t n)
{
	size_t len = (size_t)ROUND_PAGES * PAGE;
	char *region = map_anon(len), *dev = map_anon(len);
	int e = 0;
	bool installed = false;
	if (!region || !dev) {
		e = -ENOMEM;
		goto out;
	}
	madvise(region, len, MADV_NOHUGEPAGE);
	mp_base = (uintptr_t)region;
	mp_len = len;
	mp_dev = dev;
	atomic_store(&mp_err, 0);
	struct sigaction sa = { .sa_sigaction = sigsegv_migrate, .sa_flags = SA_SIGINFO | SA_NODEFER };
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGSEGV, &sa, &mp_old) < 0) {
		e = -errno;
		goto out;
	}
	installed = true;
	for (size_t done = 0, round = 0; done < n; round++) {
		/* "Migrate to the device": copy out, free, and take access away. */
		touch_write(region, len);
		memcpy(dev, region, len);
		madvise(region, len, MADV_DONTNEED);
		if (mprotect(region, len, PROT_NONE) < 0) {
			e = -errno;
			break;
		}
		size_t k = round == 0 ? ROUND_PAGES : n - done < ROUND_PAGES ? n - done : ROUND_PAGES;
		if (round == 0) {
			double tmp[ROUND_PAGES];
			time_touches(region, k, tmp);
			continue;
		}
		time_touches(region, k, ns + done);
		done += k;
		if (mprotect(region, len, PROT_READ | PROT_WRITE) < 0) /* untouched rest */
			e = -errno;
		if (atomic_load(&mp_err) || e)
			break;
	}
	if (!e)
		e = atomic_load(&mp_err);
out:
	if (installed)
		sigaction(SIGSEGV, &mp_old, NULL);
	mp_len = 0;
	if (region)
		munmap(region, len);
	if (dev)
		munmap(dev, len);
	return e;
}

/* ------------------------------------------------ kernel's own fault */

int floor_kernel_fault(double *ns, size_t n)
{
	size_t len = (size_t)ROUND_PAGES * PAGE;
	char *region = map_anon(len);
	if (!region)
		return -ENOMEM;
	madvise(region, len, MADV_NOHUGEPAGE);
	for (size_t done = 0, round = 0; done < n; round++) {
		touch_write(region, len);
		madvise(region, len, MADV_DONTNEED);
		size_t k = round == 0 ? ROUND_PAGES : n - done < ROUND_PAGES ? n - done : ROUND_PAGES;
		double tmp[ROUND_PAGES], *out = round == 0 ? tmp : ns + done;
		for (size_t i = 0; i < k; i++) {
			uint64_t t = now_ns();
			((volatile char *)region)[i * PAGE] = 1; /* write: a page is allocated */
			out[i] = (double)(now_ns() - t);
		}
		if (round)
			done += k;
	}
	munmap(region, len);
	return 0;
}

/* ------------------------------------------ migration floor (scenario 1) */

/*
 * What a migration to a device has to do at least, with the raw kernel
 * interface and nothing of uhmm: per batch, one UFFDIO_MOVE of the batch's
 * pages out of the data mapping into a second registered mapping (uhmm's
 * reserve), and a copy of them into "device memory" (a plain warm
 * buffer) the way simdev's engines copy (util/dmacopy.h: non-temporal
 * stores from 64 KiB).  Between repetitions the pages are moved back
 * (untimed).  Median GB/s of @reps runs over @len bytes in @batch-sized
 * batches, or a negative errno (no UFFDIO_MOVE: -EOPNOTSUPP).  The copy
 * runs on one thread: a bound for batches up to 256 KiB (uhmm's copy
 * engine runs those in the caller), not above, where uhmm's copy uses two
 * threads.
 */
int floor_move_copy_gbps(size_t len, size_t batch, int reps, double *out)
{
	int fd = open_uffd(0, UFFD_FEATURE_MOVE);
	if (fd < 0)
		return fd;
	int err = 0;
	char *a = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char *s = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char *d = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	double *v = calloc((size_t)reps, sizeof(double));
	if (a == MAP_FAILED || s == MAP_FAILED || d == MAP_FAILED || !v) {
		err = -ENOMEM;
		goto out;
	}
	/* 4 KiB pages, as uhmm's reserve and ranges have without THP. */
	madvise(a, len, MADV_NOHUGEPAGE);
	madvise(s, len, MADV_NOHUGEPAGE);
	memset(a, 0x5a, len); /* populated before registration: no faults */
	memset(d, 0, len);
	if ((err = uffd_register(fd, a, len)) < 0 || (err = uffd_register(fd, s, len)) < 0)
		goto out;
	for (int r = 0; r < reps && !err; r++) {
		uint64_t t = now_ns();
		for (size_t off = 0; off < len; off += batch) {
			struct uffdio_move m = { .dst = (uintptr_t)s + off, .src = (uintptr_t)a + off,
						 .len = batch };
			if (ioctl(fd, UFFDIO_MOVE, &m) < 0) {
				err = errno == EINVAL || errno == ENOTTY ? -EOPNOTSUPP : -errno;
				break;
			}
			uhmm__dma_copy(d + off, s + off, batch);
		}
		v[r] = gbps(len, now_ns() - t);
		struct uffdio_move back = { .dst = (uintptr_t)a, .src = (uintptr_t)s, .len = len };
		if (!err && ioctl(fd, UFFDIO_MOVE, &back) < 0)
			err = -errno;
	}
	if (!err)
		*out = dist_of(v, (size_t)reps).median;
out:
	free(v);
	if (a != MAP_FAILED)
		munmap(a, len);
	if (s != MAP_FAILED)
		munmap(s, len);
	if (d != MAP_FAILED)
		munmap(d, len);
	close(fd);
	return err;
}
