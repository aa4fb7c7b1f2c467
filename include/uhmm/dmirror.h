/* SPDX-License-Identifier: MIT */
/*
 * uhmm/dmirror.h - the kernel's HMM test device (/dev/hmm_dmirror0..3,
 * lib/test_hmm.c) as a library, on uhmm and simdev.
 *
 * Two ways in, one implementation (src/compat/):
 *   - libuhmm-dmirror.so, used as LD_PRELOAD, makes open("/dev/hmm_dmirrorN")
 *     return a descriptor whose ioctl()s and mmap() behave as the kernel
 *     driver's, so programs written for that driver run unchanged;
 *   - the calls below, for programs that link libuhmm-dmirror directly.
 *
 * Model.  The process gets one uhmm context, created on the first open
 * (a fork child that opens a device gets a fresh one).  Device numbers 0
 * and 1 are device-private: one simdev each, shared by every handle of
 * that number.  2 and 3 are device-coherent, as in the kernel: coherent
 * simdevs (uhmm_simdev_opts.coherent), whose migrated pages stay mapped
 * in place (a CPU access does not bring them back; SNAPSHOT says
 * DEV_COHERENT_LOCAL or _REMOTE; RELEASE moves them home).  Each handle is one mirror
 * of the address space: an interval notifier over all of it and a device
 * page table of its own, filled by uhmm_range_fault().
 *
 * Memory.  uhmm migrates only memory it manages.  The commands that move
 * or take pages (MIGRATE_TO_DEV, EXCLUSIVE) register with uhmm, on the
 * fly, the anonymous private writable memory of the range they are given
 * (uhmm_register(), exactly the pages asked for).  Shared and file-backed
 * mappings stay unmanaged: they can be read, written and snapshotted, not
 * migrated (their read-back gives -ENOENT, as in the kernel).
 *
 * Changes of the address space.  The kernel's mirror hears of every change
 * before it takes effect.  The library defines munmap(), mremap(), mmap()
 * (MAP_FIXED), madvise() (DONTNEED, DONTNEED_LOCKED, FREE, REMOVE) and
 * mprotect() itself (preloaded, or linked: the program's calls of those
 * libc symbols land here) and makes each one inside
 * uhmm_change_mapping() (uhmm/mirror.h): every handle drops the range
 * first, managed memory or not.  Raw system calls and libc's internal
 * calls (free() of a large block) are not seen: docs/COMPAT.md.
 *
 * See docs/COMPAT.md for what matches the kernel driver and what cannot.
 */
#ifndef UHMM_DMIRROR_H
#define UHMM_DMIRROR_H

#include <stddef.h>
#include <stdint.h>

#include <uhmm/device.h>

#ifdef __cplusplus
extern "C" {
#endif

/** The command block: the kernel's struct hmm_dmirror_cmd (40 bytes). */
struct uhmm_dmirror_cmd {
	uint64_t addr;   /**< in: page-aligned address the device works on */
	uint64_t ptr;    /**< in: buffer the data is copied to/from
			      (SNAPSHOT: npages bytes) */
	uint64_t npages; /**< in: pages (FLAGS: the flag word) */
	uint64_t cpages; /**< out: pages handled */
	uint64_t faults; /**< out: rounds of range faults needed */
};

/** Requests: the ioctl numbers (nr of _IOWR('H', nr, struct ...)). */
enum uhmm_dmirror_request {
	UHMM_DMIRROR_READ = 0x00,
	UHMM_DMIRROR_WRITE = 0x01,
	UHMM_DMIRROR_MIGRATE_TO_DEV = 0x02,
	UHMM_DMIRROR_MIGRATE_TO_SYS = 0x03,
	UHMM_DMIRROR_SNAPSHOT = 0x04,
	UHMM_DMIRROR_EXCLUSIVE = 0x05,
	UHMM_DMIRROR_CHECK_EXCLUSIVE = 0x06,
	UHMM_DMIRROR_RELEASE = 0x07,
	UHMM_DMIRROR_FLAGS = 0x08,
	/** READ whose range fault may drop its locks and retry (the kernel's
	 * FAULT_FLAG_ALLOW_RETRY): a page that a userfaultfd of the
	 * program's own must provide is waited for (the program's handler
	 * serves it), where READ fails with -EFAULT. */
	UHMM_DMIRROR_READ_UNLOCKABLE = 0x09,
};

/** FLAGS: the next device-page allocation of this handle fails once. */
#define UHMM_DMIRROR_FLAG_FAIL_ALLOC (1ull << 0)

/** SNAPSHOT bytes (one per page). */
enum {
	UHMM_DMIRROR_PROT_ERROR = 0xFF,
	UHMM_DMIRROR_PROT_NONE = 0x00,
	UHMM_DMIRROR_PROT_READ = 0x01,
	UHMM_DMIRROR_PROT_WRITE = 0x02,
	UHMM_DMIRROR_PROT_PMD = 0x04,
	UHMM_DMIRROR_PROT_PUD = 0x08,
	UHMM_DMIRROR_PROT_ZERO = 0x10,
	UHMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL = 0x20,
	UHMM_DMIRROR_PROT_DEV_PRIVATE_REMOTE = 0x30,
	UHMM_DMIRROR_PROT_DEV_COHERENT_LOCAL = 0x40,
	UHMM_DMIRROR_PROT_DEV_COHERENT_REMOTE = 0x50,
};

/** Memory types of the device numbers. */
enum {
	UHMM_DMIRROR_MEMORY_DEVICE_PRIVATE = 1,
	UHMM_DMIRROR_MEMORY_DEVICE_COHERENT = 2,
};

/** A handle: one open "file" of the device, with its own mirror. */
typedef struct uhmm_dmirror uhmm_dmirror;

/**
 * uhmm_dmirror_open - open device @devnum (0..3).
 * The first open of the process creates its uhmm context and the simdev of
 * @devnum (2 and 3: coherent).  Errors: -EINVAL numbers outside 0..3 or
 * @out NULL; errors of
 * uhmm_ctx_create() and uhmm_simdev_create(); -ENOMEM.  May sleep.
 * Thread-safe.
 */
UHMM_API int uhmm_dmirror_open(int devnum, uhmm_dmirror **out);

/**
 * uhmm_dmirror_cmd - run one request on @h, as the kernel's ioctl would.
 * @request: enum uhmm_dmirror_request.
 * @cmd: in/out.  cpages and faults are zeroed first; @cmd is written only
 *   when the call succeeds.
 * Returns 0 or a negative errno, per request as in the kernel driver,
 * checked in its order:
 *   all:  -EBADF @h not open; -EINVAL @h was opened by the parent of a
 *         fork (its address space is not this process's); -EFAULT @cmd
 *         NULL (the ioctl: the command block cannot be read or written
 *         back); -EINVAL addr not page-aligned, or addr >= addr +
 *         (npages << 12) in 64-bit arithmetic (npages 0, a wrapping
 *         range; FLAGS included, whose npages is the flag word); -EINVAL
 *         an unknown request; -EINVAL npages above 2^36 (more than a
 *         48-bit address space: the kernel fails such a request later,
 *         -ENOMEM or -EFAULT); -EIO the device could not be re-created
 *         after a RELEASE; -ENOMEM.
 *   READ: -EFAULT a hole or PROT_NONE page, ptr not writable, or a page
 *         not present in an area a userfaultfd of the program's registered
 *         for missing faults (the kernel's fault cannot wait for it).
 *   READ_UNLOCKABLE: as READ, but such a page is waited for: the
 *         program's userfaultfd handler serves it (from another thread),
 *         and the request goes on.
 *   WRITE: -EPERM read-only area (memory unchanged); -EFAULT hole,
 *         PROT_NONE, ptr not readable, or a userfaultfd-missing page as
 *         for READ.
 *   MIGRATE_TO_DEV: -EINVAL a missing or unreadable area (earlier chunks
 *         stay migrated); -ENOENT a page of the range is not on this device
 *         afterwards (shared, file, the main stack, a page on another
 *         device: only pages in system memory are selected, as by the
 *         kernel's migrate_vma); -ENOMEM device memory; -EFAULT ptr not
 *         writable.
 *   MIGRATE_TO_SYS: -EINVAL as above; -ENOMEM.
 *   SNAPSHOT: -EFAULT ptr not writable (the bytes before the failing
 *         chunk are written).  Another device's page reads NONE.
 *   EXCLUSIVE: errors of uhmm_make_exclusive(), except that a read-only
 *         area is -EFAULT (the driver's write get_user_pages fails so);
 *         -EFAULT memory that cannot be managed, or ptr; -EBUSY a page the
 *         kernel will not let go.
 *   CHECK_EXCLUSIVE: -EPERM some page is still exclusive to the device.
 *   RELEASE: errors of uhmm_device_detach() and uhmm_simdev_create().
 * May sleep.  Requests on one handle may run concurrently from several
 * threads.
 */
UHMM_API int uhmm_dmirror_cmd(uhmm_dmirror *h, unsigned request,
			      struct uhmm_dmirror_cmd *cmd);

/**
 * uhmm_dmirror_map - what mmap() of the device does: map @len bytes of
 * zeroed, populated pages (@prot, @flags as mmap's; MAP_SHARED or
 * MAP_PRIVATE; a private mapping is read-only in the device's snapshot
 * until written, as the kernel's copy-on-write pages are).  @addr is a
 * hint or, with MAP_FIXED, the place.  Returns 0 and *out, or -errno.
 */
UHMM_API int uhmm_dmirror_map(uhmm_dmirror *h, void *addr, size_t len, int prot,
			      int flags, void **out);

/**
 * uhmm_dmirror_mprotect - mprotect(2) that tells the mirrors first
 * (uhmm_mprotect()), so no handle keeps a right the CPU lost.  The preload
 * library routes mprotect() here.  Returns 0 or -errno.
 */
UHMM_API int uhmm_dmirror_mprotect(void *addr, size_t len, int prot);

/**
 * uhmm_dmirror_close - close @h: its mirror is dropped.  Pages on the
 * device stay there (other handles may use them; the CPU brings them back
 * by touching them).  Returns 0, or -EBADF.  Must not run concurrently
 * with uhmm_dmirror_cmd() on @h.
 */
UHMM_API int uhmm_dmirror_close(uhmm_dmirror *h);

/**
 * uhmm_dmirror_shutdown - destroy the process's context and devices
 * (every device page comes home first).  Only with no handle open:
 * -EBUSY otherwise.  Not needed before exit; useful for leak checkers.
 */
UHMM_API int uhmm_dmirror_shutdown(void);

#ifdef __cplusplus
}
#endif
#endif /* UHMM_DMIRROR_H */
