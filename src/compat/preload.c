/* SPDX-License-Identifier: MIT */
/*
 * preload.c - the LD_PRELOAD shim: /dev/hmm_dmirror0..3 inside the process.
 *
 * open() of one of those paths returns a real descriptor (a memfd named
 * after the device, so close, dup, poll and /proc/self/fd work and numbers
 * never collide) bound to a uhmm_dmirror handle in fd_tab.  ioctl(), mmap()
 * and close() on a bound descriptor go to the handle; everything else goes
 * to the next definition (libc, or a sanitizer runtime preloaded before
 * us) through dlsym(RTLD_NEXT).  libuhmm's own calls (its userfaultfd
 * ioctls, its mmaps) come through here too: the fast path is one relaxed
 * load when no device is open, and one table load otherwise.
 *
 * mprotect() goes to uhmm_dmirror_mprotect(), which tells the mirrors
 * before the protection changes (mprotect sends no userfaultfd event).
 * munmap(), mremap(), mmap(MAP_FIXED) and the madvise() advice that
 * discards go through dm_change(): every mirror drops the range before
 * the change takes effect, managed memory or not, as the kernel's
 * notifiers (uhmm hears of unmanaged memory's changes no other way).
 * uhmm's own calls come through here too; those on its reservations go
 * straight to the kernel (dm_change).
 *
 * Locks: tab_lock (a mutex, leaf rank: nothing is called under it) guards
 * the binding of descriptors and handle references (refs).  A request
 * holds a reference, not the lock, so close() of its descriptor from
 * another thread frees the handle only when the request is done.
 */
#undef _FORTIFY_SOURCE /* we define open() itself: no fortify wrappers */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "compat/dmirror_internal.h"

/* ---- the next definitions ---- */

typedef int (*open_fn)(const char *, int, ...);
typedef int (*openat_fn)(int, const char *, int, ...);
typedef int (*open2_fn)(const char *, int);
typedef int (*openat2_fn)(int, const char *, int);
typedef int (*close_fn)(int);
typedef int (*dup_fn)(int);
typedef int (*dup2_fn)(int, int);
typedef int (*dup3_fn)(int, int, int);
typedef int (*ioctl_fn)(int, unsigned long, ...);
typedef void *(*mmap_fn)(void *, size_t, int, int, int, off_t);
typedef int (*munmap_fn)(void *, size_t);
typedef int (*mprotect_fn)(void *, size_t, int);
typedef int (*madvise_fn)(void *, size_t, int);
typedef void *(*mremap_fn)(void *, size_t, size_t, int, ...);

static struct {
	open_fn open, open64;
	openat_fn openat, openat64;
	open2_fn open_2, open64_2;
	openat2_fn openat_2, openat64_2;
	close_fn close;
	dup_fn dup;
	dup2_fn dup2;
	dup3_fn dup3;
	ioctl_fn ioctl;
	mmap_fn mmap, mmap64;
	munmap_fn munmap;
	mprotect_fn mprotect;
	madvise_fn madvise;
	mremap_fn mremap;
} real;
static pthread_once_t real_once = PTHREAD_ONCE_INIT;

static void real_resolve(void)
{
#define R(field, name) real.field = (__typeof__(real.field))dlsym(RTLD_NEXT, name)
	R(open, "open");
	R(open64, "open64");
	R(openat, "openat");
	R(openat64, "openat64");
	R(open_2, "__open_2");
	R(open64_2, "__open64_2");
	R(openat_2, "__openat_2");
	R(openat64_2, "__openat64_2");
	R(close, "close");
	R(dup, "dup");
	R(dup2, "dup2");
	R(dup3, "dup3");
	R(ioctl, "ioctl");
	R(mmap, "mmap");
	R(mmap64, "mmap64");
	R(munmap, "munmap");
	R(mprotect, "mprotect");
	R(madvise, "madvise");
	R(mremap, "mremap");
#undef R
}

static inline void real_init(void)
{
	pthread_once(&real_once, real_resolve);
}

__attribute__((constructor)) static void preload_init(void)
{
	real_init();
}

void *dm_real_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	real_init();
	return real.mmap(addr, len, prot, flags, fd, off);
}

int dm_real_munmap(void *addr, size_t len)
{
	real_init();
	return real.munmap(addr, len);
}

int dm_real_mprotect(void *addr, size_t len, int prot)
{
	real_init();
	return real.mprotect(addr, len, prot);
}

int dm_real_madvise(void *addr, size_t len, int advice)
{
	real_init();
	return real.madvise(addr, len, advice);
}

/* ---- descriptors bound to handles ---- */

#define FD_MAX 65536 /* a device descriptor above this fails with EMFILE */
static _Atomic(uhmm_dmirror *) fd_tab[FD_MAX];
static atomic_int n_bound; /* bound descriptors: 0 keeps the fast path */
static pthread_mutex_t tab_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t tab_once = PTHREAD_ONCE_INIT;

static void tab_atfork_child(void)
{
	/* The child has one thread; the lock may have been held. */
	pthread_mutex_init(&tab_lock, NULL);
}

static void tab_init(void)
{
	pthread_atfork(NULL, NULL, tab_atfork_child);
}

/* The handle bound to @fd with a reference taken, or NULL. */
static uhmm_dmirror *fd_get(int fd)
{
	if (!atomic_load_explicit(&n_bound, memory_order_relaxed) || fd < 0 || fd >= FD_MAX ||
	    !atomic_load_explicit(&fd_tab[fd], memory_order_relaxed))
		return NULL;
	pthread_mutex_lock(&tab_lock);
	uhmm_dmirror *h = atomic_load_explicit(&fd_tab[fd], memory_order_relaxed);
	if (h)
		h->refs++;
	pthread_mutex_unlock(&tab_lock);
	return h;
}

static void handle_put(uhmm_dmirror *h)
{
	pthread_mutex_lock(&tab_lock);
	bool last = --h->refs == 0;
	pthread_mutex_unlock(&tab_lock);
	if (last)
		uhmm_dmirror_close(h);
}

/* Bind @fd to @h (one more reference).  Caller holds a reference. */
static void fd_bind(int fd, uhmm_dmirror *h)
{
	pthread_mutex_lock(&tab_lock);
	h->refs++;
	atomic_store_explicit(&fd_tab[fd], h, memory_order_relaxed);
	atomic_fetch_add(&n_bound, 1);
	pthread_mutex_unlock(&tab_lock);
}

/* Unbind @fd if bound; drops the binding's reference. */
static void fd_unbind(int fd)
{
	if (fd < 0 || fd >= FD_MAX || !atomic_load_explicit(&fd_tab[fd], memory_order_relaxed))
		return;
	pthread_mutex_lock(&tab_lock);
	uhmm_dmirror *h = atomic_exchange_explicit(&fd_tab[fd], NULL, memory_order_relaxed);
	if (h)
		atomic_fetch_sub(&n_bound, 1);
	pthread_mutex_unlock(&tab_lock);
	if (h)
		handle_put(h);
}

/* ---- open ---- */

/* The device number of @path (0..3), or -1 if it is not one of ours. */
static int dev_path(const char *path)
{
	static const char pre[] = "/dev/hmm_dmirror";
	if (!path || strncmp(path, pre, sizeof(pre) - 1) != 0)
		return -1;
	const char *n = path + sizeof(pre) - 1;
	return (n[0] >= '0' && n[0] <= '3' && n[1] == '\0') ? n[0] - '0' : -1;
}

static int dev_open(int devnum, int flags)
{
	pthread_once(&tab_once, tab_init);
	uhmm_dmirror *h;
	int err = uhmm_dmirror_open(devnum, &h);
	if (err) {
		errno = -err;
		return -1;
	}
	char name[] = "hmm_dmirror0";
	name[sizeof(name) - 2] = (char)('0' + devnum);
	int fd = memfd_create(name, (flags & O_CLOEXEC) ? MFD_CLOEXEC : 0);
	if (fd >= FD_MAX) {
		real.close(fd);
		fd = -1;
		errno = EMFILE;
	}
	if (fd < 0) {
		int e = errno;
		uhmm_dmirror_close(h);
		errno = e;
		return -1;
	}
	h->refs = 0;
	fd_bind(fd, h);
	return fd;
}

static int mode_arg(int flags, va_list ap)
{
	/* As libc: the mode is there only with O_CREAT or O_TMPFILE. */
	return (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE ? va_arg(ap, int) : 0;
}

#define OPEN_BODY(next, ...)                                                  \
	do {                                                                  \
		real_init();                                                  \
		int dn_ = dev_path(path);                                     \
		if (dn_ >= 0)                                                 \
			return dev_open(dn_, flags);                          \
		return next(__VA_ARGS__);                                     \
	} while (0)

UHMM_API int open(const char *path, int flags, ...)
{
	va_list ap;
	va_start(ap, flags);
	int mode = mode_arg(flags, ap);
	va_end(ap);
	OPEN_BODY(real.open, path, flags, mode);
}

UHMM_API int open64(const char *path, int flags, ...)
{
	va_list ap;
	va_start(ap, flags);
	int mode = mode_arg(flags, ap);
	va_end(ap);
	OPEN_BODY(real.open64, path, flags, mode);
}

UHMM_API int openat(int dirfd, const char *path, int flags, ...)
{
	va_list ap;
	va_start(ap, flags);
	int mode = mode_arg(flags, ap);
	va_end(ap);
	OPEN_BODY(real.openat, dirfd, path, flags, mode);
}

UHMM_API int openat64(int dirfd, const char *path, int flags, ...)
{
	va_list ap;
	va_start(ap, flags);
	int mode = mode_arg(flags, ap);
	va_end(ap);
	OPEN_BODY(real.openat64, dirfd, path, flags, mode);
}

/* What _FORTIFY_SOURCE builds of programs call. */
UHMM_API int __open_2(const char *path, int flags);
UHMM_API int __open64_2(const char *path, int flags);
UHMM_API int __openat_2(int dirfd, const char *path, int flags);
UHMM_API int __openat64_2(int dirfd, const char *path, int flags);

UHMM_API int __open_2(const char *path, int flags)
{
	OPEN_BODY(real.open_2, path, flags);
}

UHMM_API int __open64_2(const char *path, int flags)
{
	OPEN_BODY(real.open64_2, path, flags);
}

UHMM_API int __openat_2(int dirfd, const char *path, int flags)
{
	OPEN_BODY(real.openat_2, dirfd, path, flags);
}

UHMM_API int __openat64_2(int dirfd, const char *path, int flags)
{
	OPEN_BODY(real.openat64_2, dirfd, path, flags);
}

/* ---- close and dup ---- */

UHMM_API int close(int fd)
{
	real_init();
	/* Unbind before the number can be reused by another open. */
	fd_unbind(fd);
	return real.close(fd);
}

UHMM_API int dup(int fd)
{
	real_init();
	uhmm_dmirror *h = fd_get(fd);
	int nfd = real.dup(fd);
	if (h && nfd >= 0 && nfd < FD_MAX)
		fd_bind(nfd, h);
	if (h)
		handle_put(h);
	return nfd;
}

static int dup_to(int fd, int nfd, int flags, bool three)
{
	real_init();
	uhmm_dmirror *h = fd_get(fd);
	if (fd != nfd)
		fd_unbind(nfd); /* dup2 closes nfd first */
	int r = three ? real.dup3(fd, nfd, flags) : real.dup2(fd, nfd);
	if (h && r >= 0 && fd != nfd && r < FD_MAX)
		fd_bind(r, h);
	if (h)
		handle_put(h);
	return r;
}

UHMM_API int dup2(int fd, int nfd)
{
	return dup_to(fd, nfd, 0, false);
}

UHMM_API int dup3(int fd, int nfd, int flags)
{
	return dup_to(fd, nfd, flags, true);
}

/* ---- ioctl ---- */

/* The uapi request: _IOWR('H', nr, struct hmm_dmirror_cmd). */
static int dev_ioctl(uhmm_dmirror *h, unsigned long req, void *arg)
{
	int err = dm_handle_check(h);
	if (err)
		return err;
	/* The driver reads the command block first, whatever the request
	 * (-EFAULT), then checks it, then the request ("default:" -EINVAL). */
	struct uhmm_dmirror_cmd c;
	if (dm_mem_read(&c, (uintptr_t)arg, sizeof(c)))
		return -EFAULT;
	bool ours = _IOC_TYPE(req) == 'H' && _IOC_SIZE(req) == sizeof(struct uhmm_dmirror_cmd) &&
		    _IOC_DIR(req) == (_IOC_READ | _IOC_WRITE);
	/* dm_cmd checks addr/npages before the number, as the driver. */
	err = dm_cmd(h, ours ? _IOC_NR(req) : ~0u, &c);
	if (!err && dm_mem_write((uintptr_t)arg, &c, sizeof(c)))
		err = -EFAULT;
	return err;
}

/*
 * glibc's prototype.  The third argument is read as a pointer, as glibc's
 * own ioctl() does: every caller passes a pointer or a pointer-sized
 * integer in the same register/slot on the ABIs Linux supports.
 */
UHMM_API int ioctl(int fd, unsigned long req, ...)
{
	real_init();
	va_list ap;
	va_start(ap, req);
	void *arg = va_arg(ap, void *);
	va_end(ap);
	uhmm_dmirror *h = fd_get(fd);
	if (!h)
		return real.ioctl(fd, req, arg);
	int r;
	/* What the VFS answers before a driver sees the request. */
	if (req == FIOCLEX || req == FIONCLEX || req == FIONBIO || req == FIOASYNC) {
		r = real.ioctl(fd, req, arg);
	} else {
		int err = dev_ioctl(h, req, arg);
		r = err ? -1 : 0;
		if (err)
			errno = -err;
	}
	handle_put(h);
	return r;
}

/* ---- mmap, mprotect ---- */

/* Lengths as the kernel takes them (whole pages); 0 if it would wrap. */
static size_t page_len(size_t len)
{
	size_t r = (len + DM_PAGE_SIZE - 1) & ~(DM_PAGE_SIZE - 1);
	return r < len ? 0 : r;
}

struct mmap_call {
	void *addr;
	size_t len;
	int prot, flags, fd;
	off_t off;
	mmap_fn next;
	void *ret;
};

static int mmap_run(void *arg)
{
	struct mmap_call *m = arg;
	uhmm_dmirror *h = fd_get(m->fd);
	if (!h) {
		m->ret = m->next(m->addr, m->len, m->prot, m->flags, m->fd, m->off);
		return m->ret == MAP_FAILED ? -errno : 0;
	}
	int err = uhmm_dmirror_map(h, m->addr, m->len, m->prot, m->flags, &m->ret);
	handle_put(h);
	if (err)
		m->ret = MAP_FAILED;
	return err;
}

/* A mapping of the device goes to the handle; MAP_FIXED (which replaces
 * what was there) tells the mirrors first, as the kernel's munmap part of
 * it does. */
static void *dev_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off,
		      mmap_fn next)
{
	struct mmap_call m = { addr, len, prot, flags, fd, off, next, MAP_FAILED };
	int err;
	if ((flags & MAP_FIXED) && !(flags & MAP_FIXED_NOREPLACE))
		err = dm_change((uintptr_t)addr, page_len(len), UHMM_INV_UNMAP, 0, mmap_run, &m);
	else
		err = mmap_run(&m);
	if (err) {
		errno = -err;
		return MAP_FAILED;
	}
	return m.ret;
}

UHMM_API void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	real_init();
	return dev_mmap(addr, len, prot, flags, fd, off, real.mmap);
}

UHMM_API void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	real_init();
	return dev_mmap(addr, len, prot, flags, fd, off, real.mmap64 ? real.mmap64 : real.mmap);
}

/* ---- munmap, mremap, madvise: the mirrors drop the range first ---- */

struct range_call {
	void *addr;
	size_t len;
	int advice;
};

static int munmap_run(void *arg)
{
	struct range_call *c = arg;
	return real.munmap(c->addr, c->len) ? -errno : 0;
}

UHMM_API int munmap(void *addr, size_t len)
{
	real_init();
	struct range_call c = { addr, len, 0 };
	int err = dm_change((uintptr_t)addr, page_len(len), UHMM_INV_UNMAP, 0, munmap_run, &c);
	if (err) {
		errno = -err;
		return -1;
	}
	return 0;
}

#ifndef MADV_DONTNEED_LOCKED
#define MADV_DONTNEED_LOCKED 24
#endif

static int madvise_run(void *arg)
{
	struct range_call *c = arg;
	return real.madvise(c->addr, c->len, c->advice) ? -errno : 0;
}

UHMM_API int madvise(void *addr, size_t len, int advice)
{
	real_init();
	struct range_call c = { addr, len, advice };
	int err;
	/* The advice that discards contents (the kernel zaps the range under
	 * its notifiers); the others leave the mapping as it is. */
	if (advice == MADV_DONTNEED || advice == MADV_DONTNEED_LOCKED || advice == MADV_FREE ||
	    advice == MADV_REMOVE)
		err = dm_change((uintptr_t)addr, page_len(len), UHMM_INV_ZAP, 0, madvise_run, &c);
	else
		err = madvise_run(&c);
	if (err) {
		errno = -err;
		return -1;
	}
	return 0;
}

struct mremap_call {
	void *old;
	size_t old_len, new_len;
	int flags;
	void *new_addr;
	void *ret;
	size_t tail; /* MREMAP_FIXED: the target's length, told second */
};

static int mremap_run(void *arg)
{
	struct mremap_call *m = arg;
	m->ret = real.mremap(m->old, m->old_len, m->new_len, m->flags, m->new_addr);
	return m->ret == MAP_FAILED ? -errno : 0;
}

/* MREMAP_FIXED replaces what was at the target too: its mirrors are told
 * inside the change of the old range. */
static int mremap_fixed_run(void *arg)
{
	struct mremap_call *m = arg;
	return dm_change((uintptr_t)m->new_addr, page_len(m->new_len), UHMM_INV_UNMAP, 0,
			 mremap_run, m);
}

UHMM_API void *mremap(void *old, size_t old_len, size_t new_len, int flags, ...)
{
	real_init();
	struct mremap_call m = { old, old_len, new_len, flags, NULL, MAP_FAILED, 0 };
	if (flags & MREMAP_FIXED) {
		va_list ap;
		va_start(ap, flags);
		m.new_addr = va_arg(ap, void *);
		va_end(ap);
	}
	size_t ol = page_len(old_len), nl = page_len(new_len);
	uintptr_t o = (uintptr_t)old;
	int err;
	/*
	 * What leaves the old place: all of it when the mapping may move
	 * (MREMAP_MAYMOVE, with or without FIXED or DONTUNMAP), the cut tail
	 * when it shrinks in place; nothing when it grows in place (the
	 * kernel's notifiers see nothing then either).
	 */
	if (flags & MREMAP_MAYMOVE)
		err = dm_change(o, ol, UHMM_INV_UNMAP, 0,
				(flags & MREMAP_FIXED) ? mremap_fixed_run : mremap_run, &m);
	else if (nl < ol)
		err = dm_change(o + nl, ol - nl, UHMM_INV_UNMAP, 0, mremap_run, &m);
	else
		err = mremap_run(&m);
	if (err) {
		errno = -err;
		return MAP_FAILED;
	}
	return m.ret;
}

UHMM_API int mprotect(void *addr, size_t len, int prot)
{
	int err = uhmm_dmirror_mprotect(addr, len, prot);
	if (err) {
		errno = -err;
		return -1;
	}
	return 0;
}
