/* SPDX-License-Identifier: MIT */
/*
 * uhmm/uhmm.h - Heterogeneous Memory Management for Linux processes.
 *
 * uhmm gives a process one virtual address space shared by the CPU and by
 * devices.  Memory that uhmm manages ("managed memory", obtained from
 * uhmm_alloc() or handed to uhmm_register()) can be migrated to a device's
 * private memory with uhmm_migrate(); while a page lives on a device it is
 * absent from the CPU page table, and the first CPU access to it (read or
 * write, from any thread) sleeps while uhmm brings the data back, then
 * proceeds.  Plain pointers stay valid throughout.
 *
 * Conventions
 *   - Every call returns 0 (or a non-negative count) on success and a
 *     negative errno on failure; nothing is changed by a call that fails
 *     argument validation.
 *   - Every call except uhmm_ctx_destroy() may be made from any thread at any
 *     time while the context lives.  Calls that "may sleep" wait for page
 *     locks, device copies or the fault-service thread; none may be made from
 *     a signal handler.
 *   - -EBADF: the context or device handle is not live (never created, or
 *     destroyed).  -ECHILD: the context belongs to the parent of a fork();
 *     a fork child uses memory it inherited as ordinary memory and may create
 *     its own context.
 *
 * Page size is 4 KiB (UHMM_PAGE_SIZE); addresses and lengths are in bytes.
 */
#ifndef UHMM_UHMM_H
#define UHMM_UHMM_H

#include <stddef.h>
#include <stdint.h>

#include <uhmm/device.h>

#ifdef __cplusplus
extern "C" {
#endif

#define UHMM_VERSION_MAJOR 0
#define UHMM_VERSION_MINOR 1

/** A context: the process's userfaultfd, fault service and managed ranges. */
typedef struct uhmm_ctx uhmm_ctx;
/** A device attached to a context (a simdev, or a backend of the caller's). */
typedef struct uhmm_device uhmm_device;

/* ------------------------------------------------------------------------ */
/* Context                                                                   */

/** Context flags (struct uhmm_ctx_opts.flags). */
enum {
	/**
	 * Refuse to fall back to UFFD_USER_MODE_ONLY: fail with -EPERM when the
	 * process may not open a userfaultfd that also traps kernel accesses.
	 */
	UHMM_CTX_REQUIRE_KERNEL_FAULTS = 1u << 0,
	/** Force UFFD_USER_MODE_ONLY even where full mode is allowed (testing). */
	UHMM_CTX_USER_MODE_ONLY = 1u << 1,
	/**
	 * Never use UFFDIO_MOVE for managed memory: the path of kernels
	 * without it (before Linux 6.8), forced on a newer one (for testing
	 * and measuring).  CPU faults install pages with UFFDIO_COPY instead
	 * of moving warm pool pages in; migrations toward a device take the
	 * no-move path: the pages are write-protected (UFFDIO_WRITEPROTECT:
	 * managed ranges are then registered for write-protection), copied
	 * in place, and their CPU copies discarded after the copy; a CPU
	 * write meanwhile waits for the migration.  Also UHMM_NO_MOVE=1 in
	 * the environment.  Device exclusive access still needs UFFDIO_MOVE.
	 */
	UHMM_CTX_NO_MOVE = 1u << 2,
	/**
	 * SIGBUS self-service: the faulting thread serves its own CPU fault,
	 * with no round trip through the fault-service thread (a fault
	 * ~20-30 % cheaper, 1.1-1.25x the bare SIGBUS floor of uhmm-bench;
	 * docs/PERFORMANCE.md).  Opt-in.
	 *
	 * The userfaultfd is opened with UFFD_FEATURE_SIGBUS: an access to a
	 * managed page that is not present raises SIGBUS in the faulting
	 * thread.  uhmm's SIGBUS handler (installed process-wide with
	 * sigaction(SA_SIGINFO | SA_NODEFER) at the creation of the first
	 * such context, once) serves it on that thread, on its own stack (up
	 * to ~24 KiB of it), and returns, and the access is executed again:
	 *   - a device-resident page: the page is locked, its data copied by
	 *     the device's copy engine into warm pages of the pool and
	 *     installed (a single page with UFFDIO_COPY of it, runs with
	 *     UFFDIO_MOVE, or UFFDIO_COPY with UHMM_CTX_NO_MOVE), with
	 *     fault-around as in the default mode; with no warm page left the
	 *     fault is handed to the service thread;
	 *   - a never-populated (or discarded) page: zeros, as the service
	 *     thread does;
	 *   - a page a device holds exclusively: the device's hold is revoked;
	 *   - a page another thread holds (a migration, another fault): the
	 *     handler sleeps on the page lock (futex), then looks again.
	 * When the address space is changing under the fault (an munmap,
	 * mremap or madvise whose event the fault-service thread has not
	 * handled yet) the install is handed to the service thread, which
	 * still reads those events, and the handler waits for it.
	 * Statistics count faults as in the default mode.
	 *
	 * SIGBUS that are not uhmm's (si_code not from a fault, an address no
	 * SIGBUS context manages, such as a file mapping touched beyond its
	 * end) are passed on to the handler installed before uhmm's (its
	 * sa_sigaction or sa_handler), or, if that was SIG_DFL or SIG_IGN,
	 * get the default action (the process is killed).
	 *
	 * Limitations:
	 *   - As with UFFD_USER_MODE_ONLY, a *kernel* access to a page that is
	 *     not present (read(2) into a device-resident buffer, write(2)
	 *     from it, a futex or process_vm_readv on it) is not served: the
	 *     kernel copies up to the first such page and the call returns
	 *     what it copied (a short count: a pread(2) into a buffer whose
	 *     second half is on a device returns the first half's length),
	 *     or fails with EFAULT if that is the first page.  Bring such
	 *     buffers home with uhmm_migrate(..., NULL, 0) first.  So this
	 *     flag cannot be combined with UHMM_CTX_REQUIRE_KERNEL_FAULTS
	 *     (-EINVAL).
	 *   - Thread stacks.  The kernel delivers the SIGBUS on the faulting
	 *     thread's stack; a stack that is itself on a device cannot take
	 *     the signal frame, and the process is killed.  So
	 *     uhmm_register() refuses (-EOPNOTSUPP) memory in a mapping that
	 *     holds a thread stack, where uhmm can tell: the calling thread's
	 *     (its stack pointer), the main thread's ([stack]), and those of
	 *     the process's other threads that are blocked in a system call
	 *     or a fault at that moment (/proc/self/task/TID/syscall).  The
	 *     rule is by mapping as /proc/self/maps shows it (adjacent
	 *     anonymous mmaps with the same protection merge into one).  A
	 *     thread that is running when the call looks, or a stack
	 *     registered before the thread starts using it, cannot be told:
	 *     do not register memory that is or will be a thread stack (nor
	 *     a sigaltstack) in this mode.  uhmm does not provide an
	 *     alternate signal stack of its own: a signal stack on a device
	 *     has the same problem.  (The default mode serves a stack's
	 *     faults on the service thread, and has no such rule.)
	 *   - Threads touching managed memory must not block SIGBUS (a
	 *     blocked synchronous SIGBUS kills the process).
	 *   - An application SIGBUS handler installed *before* the context is
	 *     chained to as above.  One installed *after* it replaces uhmm's:
	 *     it must pass the signals it does not recognise to the handler
	 *     sigaction() returned when it was installed (uhmm's), or uhmm's
	 *     faults reach it instead and are not served.  Likewise, code
	 *     that restores a SIGBUS disposition saved before uhmm's was
	 *     installed removes uhmm's (it is installed once per process).
	 *   - Code that touches managed memory while holding a lock that
	 *     uhmm's fault path may take must not exist: device callbacks
	 *     (invalidate, copy) and interval-notifier callbacks must not
	 *     touch managed memory (the same rule as in the default mode).
	 *     The handler calls no malloc: uhmm's allocations come from
	 *     memory of its own, never from the application's heap, so any
	 *     span of the heap may be registered.
	 *   - The tail an in-place mremap() grows onto managed memory is in
	 *     no managed range: a touch of it is passed on as a foreign
	 *     SIGBUS (the default mode fills it with zeros).
	 *   - Read-ahead (readahead_pages) is not done.
	 * uhmm_ctx_create() fails with -EOPNOTSUPP if the kernel lacks
	 * UFFD_FEATURE_SIGBUS, -EINVAL with UHMM_CTX_REQUIRE_KERNEL_FAULTS,
	 * -ENOMEM if the handler's table of SIGBUS-mode contexts cannot
	 * grow (it has no fixed size: one 4 KiB page per 254 more contexts,
	 * kept until the process exits).
	 */
	UHMM_CTX_SIGBUS = 1u << 3,
	/**
	 * No live view.  By default every context publishes its counters
	 * (what uhmm_stats_get() returns), its devices' memory in use and
	 * where each managed range's bytes live (system memory, each
	 * device, coherent memory) into a small file that another process
	 * reads without stopping this one: `uhmm-stat PID` (uhmm-stat(1)).
	 * The file is /dev/shm/uhmm-EUID/PID.N (or $UHMM_STAT_DIR/PID.N),
	 * mode 0600 in a directory that must be the user's own (0700); it
	 * is rewritten every UHMM_STAT_MS milliseconds (default 250, range
	 * 10..60000) by a thread of the context, under a seqlock, and
	 * removed at uhmm_ctx_destroy() or the process's exit.  Its format
	 * is stable and versioned (docs/STAT.md).  The publication never
	 * makes the fault path wait; uhmm-bench measures its cost
	 * (stat_overhead_ratio).  A failure to publish (no /dev/shm, a
	 * directory of someone else's) does not fail the context: the
	 * decision log says so (UHMM_LOG=info).
	 *
	 * This flag turns the publication off.  The environment wins:
	 * UHMM_STAT=0 turns it off for every context of the process, and
	 * UHMM_STAT=1 on, whatever the flag.
	 */
	UHMM_CTX_NO_STAT = 1u << 4,
};

/**
 * Options of a context.  Initialise with uhmm_ctx_opts_init(), then change
 * what you need.  Each numeric option can also be set through the
 * environment variable named beside it; the environment wins over the
 * struct, so a deployed program can be tuned without rebuilding.
 */
struct uhmm_ctx_opts {
	/** sizeof(struct uhmm_ctx_opts), set by uhmm_ctx_opts_init().  The
	 * struct only grows at its end, and each size it has had is
	 * accepted: UHMM_CTX_OPTS_SIZE_V1, _V2, _V3 or _V4 (the fields after it
	 * take their defaults) or the current sizeof.  Any other size is
	 * -EINVAL. */
	uint32_t size;
	uint32_t flags;       /**< UHMM_CTX_* */
	/**
	 * Fault-around: on a CPU fault on a device-resident page, bring back up
	 * to this many pages (the faulting page included) of the aligned block
	 * around it that live on the same device.  1 disables fault-around.
	 * Range 1..512.  UHMM_FAULT_AROUND.  Default 64 (see
	 * docs/ARCHITECTURE.md for the measurement).
	 */
	uint32_t fault_around;
	/**
	 * Zero-fill window: a CPU fault on a never-populated page fills up to
	 * this many following never-populated pages too.  Range 1..512.
	 * UHMM_ZERO_AROUND.  Default 64.
	 */
	uint32_t zero_around;
	/**
	 * Warm page pool: populated system pages kept ready to be moved into
	 * place on a CPU fault (UFFDIO_MOVE).  In pages; 0 disables the pool
	 * (faults then copy with UFFDIO_COPY).  UHMM_POOL_PAGES.  Default 4096.
	 */
	uint32_t pool_pages;
	/** Print statistics to stderr at destroy (also UHMM_STATS=1). */
	uint32_t print_stats;
	/**
	 * Warm pool ceiling.  A migration to a device takes the system pages
	 * out of managed memory into the pool; up to this many pages (and at
	 * least pool_pages) stay there, warm, to be moved back into place
	 * when the data returns (CPU faults, uhmm_migrate() home) instead of
	 * being freed now and allocated again then.  Freeing and allocating
	 * cost about as much as the copy itself: a 2 MiB migration to a
	 * device is ~40 % faster when it need not free its 512 pages.  The
	 * price is memory: while data is on a device, up to this many pages
	 * of system memory stay allocated.  After one second without faults
	 * or migrations the context releases the pool back to pool_pages.
	 * Pages beyond the ceiling are freed by the fault-service thread
	 * while the migration goes on (on another CPU), and by the migration
	 * itself if that falls behind; when uhmm_migrate() returns, no more
	 * than this many stay.
	 * 0 keeps the pool at pool_pages (every page beyond it is freed as it
	 * leaves); ignored when pool_pages is 0.  In pages, range 0..2^20.
	 * UHMM_POOL_MAX_PAGES.  Default 65536 (256 MiB).
	 */
	uint32_t pool_max_pages;
	/**
	 * Read-ahead window.  When CPU faults bring device-resident data back
	 * in ascending, consecutive fault-around blocks (a sequential scan),
	 * the fault-service thread brings back the following blocks, up to
	 * this many pages past the block of the last fault, before they are
	 * touched: the copy overlaps the reader's work, and the reader finds
	 * the pages in place instead of faulting.  The service thread does it
	 * between faults, one fault-around block at a time, so other faults
	 * wait at most one block's copy; pages another thread holds are
	 * skipped.  Up to four scans (of different threads or areas) are
	 * followed at once.  Read-ahead works in fault-around blocks:
	 * fault_around 1 turns it off as well.  The price of a scan that stops
	 * early is the window brought back for nothing.  0 disables.  In
	 * pages, range 0..65536.  UHMM_READAHEAD_PAGES.  Default 512 (2 MiB).
	 */
	uint32_t readahead_pages;
	/**
	 * Service-thread spin.  After a round in which it read messages (CPU
	 * faults, events), the fault-service thread keeps looking for the
	 * next one for up to this many microseconds before it sleeps.  A
	 * thread that faults again within that time is served with no
	 * wake-up of the service thread: one scheduler round trip of the two
	 * a fault costs (the faulting thread's own wake-up remains).  Worth
	 * it where waking a sleeping thread is slow: uhmm-bench measured a
	 * bare spinning thread at 26 us a fault against 65 us for a sleeping
	 * one, in a phase of slow wake-ups on a 2-vCPU VM, and about 10 %
	 * cheaper otherwise (docs/PERFORMANCE.md).  The price is CPU time:
	 * up to this long busy on a CPU after every burst of faults, taken
	 * from the application's threads on a small machine.  Ignored in
	 * UHMM_CTX_SIGBUS mode (the service thread serves no faults there).
	 * 0 never spins.  Range 0..10000.  UHMM_SPIN_US.  Default 0.
	 */
	uint32_t spin_us;
	/**
	 * Trace file: when set, the context records every CPU fault,
	 * device fault, migration (with its cause), eviction and
	 * invalidation into this file (created, or truncated), in a compact
	 * binary format (docs/TRACING.md, "Trace files"), for the tools
	 * uhmm-trace (CSV, Chrome/Perfetto JSON, summary) and uhmm-replay
	 * (the fault sequence against eviction and migration policies and
	 * Belady's optimum).  Each thread records into a buffer of its own,
	 * with no lock on the fault path; buffers are written out when full
	 * and at uhmm_ctx_destroy(), which completes the file: a trace is
	 * whole only after destroy.  Costs ~40 bytes a record.  The
	 * environment variable UHMM_TRACE=path wins over this field (an
	 * empty value leaves it).  NULL: no trace (default).
	 * uhmm_ctx_create() fails with the negative errno of open(2) if the
	 * file cannot be created (-EACCES, -ENOENT, ...), -EIO if its header
	 * cannot be written.  The pointer is only read during
	 * uhmm_ctx_create().
	 */
	const char *trace_path;
};

/** Size of struct uhmm_ctx_opts before pool_max_pages was added. */
#define UHMM_CTX_OPTS_SIZE_V1 offsetof(struct uhmm_ctx_opts, pool_max_pages)
/** Size of struct uhmm_ctx_opts before readahead_pages was added. */
#define UHMM_CTX_OPTS_SIZE_V2 offsetof(struct uhmm_ctx_opts, readahead_pages)
/** Size of struct uhmm_ctx_opts before spin_us was added. */
#define UHMM_CTX_OPTS_SIZE_V3 offsetof(struct uhmm_ctx_opts, spin_us)
/** Size of struct uhmm_ctx_opts before trace_path was added (its end:
 * trace_path, a pointer, is aligned past it). */
#define UHMM_CTX_OPTS_SIZE_V4 (offsetof(struct uhmm_ctx_opts, spin_us) + sizeof(uint32_t))

/** Fill @opts with the defaults. */
UHMM_API void uhmm_ctx_opts_init(struct uhmm_ctx_opts *opts);

/**
 * uhmm_ctx_create - create a context.
 * @opts: options, or NULL for the defaults.
 * @out:  receives the context.
 *
 * Opens a userfaultfd, probes the kernel's features and starts the
 * fault-service thread.  Full mode (kernel accesses to device-resident pages
 * are served too) is used where the process may have it: root,
 * CAP_SYS_PTRACE, read/write access to /dev/userfaultfd, or
 * vm.unprivileged_userfaultfd = 1.  Otherwise the context falls back to
 * UFFD_USER_MODE_ONLY, and then a *kernel* access to a device-resident page
 * (read(2) into it, write(2) from it, a futex on it) does not bring the
 * page back: the call copies up to the first such page and returns a
 * short count, or fails with EFAULT if that is the first page.  Migrate
 * such buffers back with uhmm_migrate(..., NULL, 0) before handing them
 * to system calls.
 * uhmm_ctx_info() tells which mode a context got.
 *
 * Errors: -EINVAL bad options; -ENOSYS the kernel has no userfaultfd;
 * -EPERM userfaultfd is not permitted (or full mode was required and is not);
 * -EOPNOTSUPP the kernel lacks a feature uhmm needs (UFFD_FEATURE_EVENT_REMOVE,
 * EVENT_UNMAP, EVENT_REMAP, THREAD_ID); -ENOMEM; -EAGAIN thread creation
 * failed; with a trace file (trace_path, UHMM_TRACE), open(2)'s error for it
 * (-EACCES, -ENOENT, -EISDIR, ...) or -EIO if its header cannot be
 * written.  May sleep.
 */
UHMM_API int uhmm_ctx_create(const struct uhmm_ctx_opts *opts, uhmm_ctx **out);

/**
 * uhmm_ctx_destroy - tear a context down.
 *
 * Brings every device-resident page back to system memory (nothing is
 * lost), detaches and destroys every device, stops the fault-service thread
 * and unregisters every managed range.  Memory from uhmm_alloc() stays
 * mapped as ordinary anonymous memory owned by the caller (release it with
 * munmap(2)); registered memory stays the caller's as before.
 *
 * The caller must not make other calls on @ctx concurrently with or after
 * this one.  Other threads may keep touching managed memory until destroy
 * returns: their faults are served.  A trace being recorded (trace_path)
 * is completed and closed last.  Returns 0, -EBADF, -ECHILD, or -EIO if
 * a device failed to return some page (that page's data is poisoned: a
 * later access raises SIGBUS).  May sleep.
 */
UHMM_API int uhmm_ctx_destroy(uhmm_ctx *ctx);

/** What a context runs with (uhmm_ctx_info()). */
struct uhmm_ctx_info {
	uint64_t uffd_features; /**< UFFD_FEATURE_* the kernel granted */
	uint32_t user_mode_only;/**< 1: kernel accesses to device pages fail */
	uint32_t has_move;      /**< 1: faults install pages with UFFDIO_MOVE */
	uint32_t fault_around;  /**< effective options after the environment */
	uint32_t zero_around;
	uint32_t pool_pages;
	uint32_t sigbus;        /**< 1: faulting threads serve their own faults (UHMM_CTX_SIGBUS) */
};

/**
 * uhmm_ctx_info - what @ctx runs with: the userfaultfd features the kernel
 * granted, the mode it chose (full, user-mode-only, SIGBUS) and whether it
 * moves pages with UFFDIO_MOVE, and its options after the environment.
 * @info: filled in whole.
 * Returns 0.  Errors: -EINVAL @info NULL; -EBADF @ctx is not a live
 * context; -ECHILD (a fork child's copy of a context: Conventions).
 * Thread-safe; does not block.
 */
UHMM_API int uhmm_ctx_info(uhmm_ctx *ctx, struct uhmm_ctx_info *info);

/* ------------------------------------------------------------------------ */
/* Managed memory                                                            */

/**
 * uhmm_alloc - map managed memory.
 * @len: bytes, > 0; rounded up to a multiple of 4 KiB.
 * @out: receives an address aligned to 2 MiB.
 * The memory reads as zeros.  Errors: -EINVAL, -ENOMEM, -EBADF, -ECHILD.
 */
UHMM_API int uhmm_alloc(uhmm_ctx *ctx, size_t len, void **out);

/**
 * uhmm_free - unmap memory from uhmm_alloc().
 * @addr: exactly the address uhmm_alloc() returned.
 * Device pages of the range are freed (their data is discarded).  Faults
 * of other threads on the range after this returns get SIGSEGV as for any
 * unmapped memory.  Errors: -EINVAL @addr is not the start of a range from
 * uhmm_alloc() (a registered range is released with uhmm_unregister()).
 * May sleep: waits for migrations of the range in flight.
 */
UHMM_API int uhmm_free(uhmm_ctx *ctx, void *addr);

/**
 * uhmm_register - manage existing memory of the process.
 * @addr, @len: page-aligned, len > 0.  The whole range must be mapped,
 *   private, anonymous and readable (malloc'd or mmap'd with
 *   MAP_PRIVATE | MAP_ANONYMOUS; allocate with aligned_alloc(4096, n) or
 *   posix_memalign to get page alignment).  Read-only memory (PROT_READ,
 *   e.g. a buffer filled then mprotect()ed, or one that only ever read
 *   zeros) is managed too: its pages migrate both ways and come back
 *   read-only; it may be mprotect()ed between read-only, read-write and
 *   PROT_NONE later (see uhmm_migrate for PROT_NONE pages).
 * Any span of the application's heap may be registered, whatever malloc
 * put there: uhmm's own objects never live in the application's heap
 * (they live in address space uhmm reserved for itself, which in turn may
 * not be registered).
 * Errors: -EINVAL unaligned or zero length or wrapping, or the range meets
 * uhmm's own memory; -EFAULT part of the range is not mapped; -EOPNOTSUPP
 * shared, file-backed, hugetlb or inaccessible (PROT_NONE, write-only)
 * memory; -EEXIST overlaps a
 * managed range; -ENOMEM.
 * A range that was managed and has just been munmap()ed or mremap()ed away
 * is no overlap: the kernel posts the event of such a call after it
 * returns, and uhmm_register waits for it (up to 2 s) rather than fail.
 * The other errors it can return:
 *   -EOPNOTSUPP the main thread's stack ("[stack]" in /proc/self/maps: it
 *           grows, and the kernel guards it), in every mode; in a
 *           UHMM_CTX_SIGBUS context, a mapping that holds a thread stack
 *           (see "Thread stacks" there); a mapping the kernel's
 *           userfaultfd will not take;
 *   -EADDRINUSE the memory is managed by another uhmm context, or
 *           registered with a userfaultfd of the program's own (the
 *           kernel lets one userfaultfd register a page);
 *   -EMFILE, -ENFILE no descriptor to read /proc/self/maps;
 *   -EBADF, -ECHILD (see Conventions).
 * May sleep.
 */
UHMM_API int uhmm_register(uhmm_ctx *ctx, void *addr, size_t len);

/** uhmm_register_flags() flags. */
enum {
	/**
	 * Adopt private file mappings: every readable MAP_PRIVATE file
	 * mapping in the range becomes, before the range is registered,
	 * anonymous private memory in place, with the same contents (the
	 * pages the process wrote and the file's pages it had not) and the
	 * same rights, so that all its pages migrate (the kernel migrates
	 * the written, anonymous pages of such a mapping; uhmm cannot manage
	 * a file mapping at all: userfaultfd does not register one).  The
	 * mapping is replaced atomically (one mremap), so no instant sees it
	 * empty.  What the process can no longer observe of the file through
	 * that memory: later changes to the file (by write(2), truncate, or
	 * another process's shared mapping) in pages it had not written
	 * (Linux shows them in a private mapping until the page is written;
	 * adopted memory keeps the contents of the adoption); the file's
	 * end: pages past it, which raised SIGBUS, read as zeros; the file's
	 * name in /proc/self/maps (the memory is anonymous there); and the
	 * sharing of unwritten pages with the page cache (they become private
	 * pages: the process's memory use grows by them).  msync() and
	 * madvise() advice that concerns the file (MADV_WILLNEED, ...) no
	 * longer reach it.  Other threads must not write the range during
	 * the call (a write that lands between the copy and the replacement
	 * is lost).  Shared mappings, anonymous memory and PROT_NONE file
	 * mappings are left as they are (and refused or accepted as by
	 * uhmm_register).  An adopted mapping stays anonymous if the call
	 * then fails.
	 */
	UHMM_REGISTER_ADOPT_FILE = 1u << 0,
};

/**
 * uhmm_register_flags - uhmm_register() with flags.
 * @flags: 0 (exactly uhmm_register()), or UHMM_REGISTER_ADOPT_FILE.
 * Errors: those of uhmm_register(), and -EINVAL unknown flags; with
 * UHMM_REGISTER_ADOPT_FILE, -EEXIST part of the range is managed already
 * (nothing is adopted), -EOPNOTSUPP a mapping could not be replaced,
 * -ENOMEM no memory for the copy.  Thread-safe; may sleep.
 */
UHMM_API int uhmm_register_flags(uhmm_ctx *ctx, void *addr, size_t len, unsigned flags);

/**
 * uhmm_unregister - stop managing memory given to uhmm_register().
 * @addr, @len: exactly a registered range.
 * Device-resident pages come back first: the memory keeps its contents.
 * Errors: -EINVAL not exactly a registered range (or memory uhmm_alloc
 * gave), or another uhmm_unregister of it is at work; -EIO a device failed
 * to return a page, -ENOMEM no memory to stage the copy (the range stays
 * registered either way); -EBADF, -ECHILD (Conventions).  May sleep.
 */
UHMM_API int uhmm_unregister(uhmm_ctx *ctx, void *addr, size_t len);

/* ------------------------------------------------------------------------ */
/* Migration                                                                 */

/**
 * uhmm_migrate - move pages of managed memory to a device or back.
 * @addr, @len: page-aligned range, len > 0, inside managed ranges (it may
 *   span several adjacent ones).
 * @dst: the destination device, or NULL for system memory.
 * @flags: 0, or UHMM_MIGRATE_MOVE: move pages advised read-mostly too
 *   (their duplicates collapse first) instead of duplicating them; or
 *   UHMM_MIGRATE_DUPLICATE: give @dst read-only duplicates of every page
 *   of the range, advised read-mostly or not (the pages stay where they
 *   are; below).  Not both; DUPLICATE needs a device @dst.
 *
 * Read-mostly advice (UHMM_ADVISE_READ_MOSTLY): toward a device, without
 * UHMM_MIGRATE_MOVE, the pages of the range so advised get read-only
 * duplicates on @dst instead of moving (the CPU keeps its copy); with it,
 * or toward a coherent device, their duplicates collapse and they move.
 *
 * Works in batches of at most 2 MiB.  For each batch: the pages are locked
 * (in address order; CPU faults on them wait), removed from the CPU page
 * table (so a CPU write cannot slip past the copy), copied by the
 * destination's copy engine, and the new location is recorded.  Where
 * UFFDIO_MOVE cannot remove a page (a kernel before 6.8, a read-only
 * mapping, or UHMM_CTX_NO_MOVE) the page takes the no-move path: it is
 * write-protected where it is writable, copied while the CPU may still
 * read it, and its CPU copy is discarded once the copy is done; a CPU
 * write meanwhile waits for the batch (read-only pages are protected
 * too: an mprotect() to read-write may come while they are copied, and
 * the write after it waits as well).  Pages come back with the rights of
 * their mapping.  Pages
 * never touched become zeroed device pages without a copy.  Pages already
 * at @dst are skipped.  If a copy fails, the batch's pages are put back
 * where they were with their data and the call fails.  Pages still
 * shared copy-on-write with a fork child are unshared (the pages of the
 * batch present in the CPU page table are populated for write, the others
 * are not touched), in every userfaultfd mode.
 *
 * Device memory is a cache.  When @dst is full, uhmm evicts: it moves the
 * least recently used 2 MiB blocks of other pages on @dst back to system
 * memory (with their data; their mirrors are invalidated first) and goes
 * on.  It never evicts pages of [@addr, @addr + @len) for this call, and
 * never waits for a page someone else holds: if every victim is busy, the
 * batch lets go of its own pages and tries again when device memory is
 * released, for up to 2 s.  Counters: uhmm_stats.evicted_*.
 *
 * Coherent devices (device.h, coherent_mem).  A page migrated to a device
 * whose memory is coherent is copied into a frame of it, then that frame
 * is moved into place at the page's address: the CPU reads and writes it
 * there, without a fault and without migrating it back (it is the
 * device's memory: counted, evicted, moved only by uhmm_migrate or
 * eviction).  Any direction works: system -> coherent -> another coherent
 * or private device -> system, the caller choosing @dst each time; the
 * copy is the destination's copy engine's (from another device, through
 * the source's copy engine into a bounce buffer first).
 *
 * Returns 0 when every page is at @dst.  Errors: -EINVAL bad range or
 * flags; -EFAULT part of the range is not managed, or is managed but not
 * accessible at all (PROT_NONE after mprotect: those pages stay where they
 * are, nothing is lost); -ENOMEM @dst cannot hold the request: @len is
 * more than @dst's memory (or than what is left to uhmm when no other page
 * can be evicted: what fits has moved, the rest is where it was), or every
 * page that could be evicted stayed held by others for 2 s (the failing
 * batch is left where it was), or uhmm's reserve (where system pages are moved out to) could
 * not grow for 2 s: its address space, about the machine's RAM and swap,
 * was all held, e.g. by pages held exclusively (pages of earlier batches
 * stay migrated; the failing batch is left where it was); -EIO a copy
 * failed (likewise); -EBUSY some page could
 * not be taken from the CPU page table (pinned by the kernel, e.g. by
 * O_DIRECT I/O in flight): the others moved;
 * -EHWPOISON the range holds pages lost on a device (poisoned,
 * uhmm_device_page_lost in device.h): they stay poisoned where they are,
 * every other page moved (the least precedence: any other error wins);
 * -EOPNOTSUPP migration to a
 * device needs UFFDIO_MOVE (Linux 6.8) or, without it, userfaultfd
 * write-protection of anonymous memory (Linux 5.7), and the kernel has
 * neither; -EBADF @ctx is not a live
 * context, or @dst is not a live device of @ctx (or is being detached:
 * uhmm_device_detach() waits for migrations toward the device already
 * under way); -ECHILD.  May sleep.
 */
UHMM_API int uhmm_migrate(uhmm_ctx *ctx, void *addr, size_t len, uhmm_device *dst,
		 unsigned flags);
/** uhmm_migrate() flag: move read-mostly pages instead of duplicating
 * them (a device's write fault asks for this). */
#define UHMM_MIGRATE_MOVE (1u << 1)
/** uhmm_migrate() flag: duplicate every page of the range on @dst, as
 * read-mostly advice would, whatever the advice (the policy's
 * UHMM_POL_DUPLICATE verb; policy.h).  Pages on another device come to
 * system memory first; the CPU's copy stays current and writable (a write
 * collapses the duplicates, as for advised pages); a coherent @dst gets
 * the pages moved instead.  The duplicates are dropped first when @dst
 * needs room (no copy), and by a migration that moves the pages.  Errors
 * as for a migration to @dst, and -EOPNOTSUPP where the kernel lacks
 * userfaultfd write-protection of anonymous memory (Linux 5.7). */
#define UHMM_MIGRATE_DUPLICATE (1u << 2)

/**
 * uhmm_prefetch - migrate [@addr, @addr + @len) to @dst (NULL: system
 * memory) asynchronously.
 *
 * Returns at once with a handle in *@out; the context's prefetch thread
 * runs the migration later, prefetches in the order they were submitted,
 * with uhmm_migrate()'s semantics and errors.  The handle tells when it is
 * done: uhmm_prefetch_fd() becomes readable (poll, epoll: for runtimes'
 * event loops), uhmm_prefetch_wait() waits; both give the migration's
 * result.  Release every handle (uhmm_prefetch_release()), done or not:
 * a released prefetch still runs.
 *
 * Ordering: a uhmm_migrate() of a range that overlaps a prefetch submitted
 * before the uhmm_migrate() began first waits for that prefetch to finish,
 * so the later call decides where the pages end up (as if the prefetch had
 * been synchronous).  CPU and device faults are not ordered with it: a page
 * touched meanwhile moves as the touch wants, and the prefetch, when it
 * runs, moves it again.  A prefetch of memory unmapped or unregistered
 * before it runs finishes -EFAULT, moving nothing that is gone.  At
 * uhmm_ctx_destroy(), prefetches not yet started finish -ECANCELED; a
 * handle stays valid until released, even after its context is destroyed.
 *
 * @flags: 0 (reserved).  Returns 0.  Errors (of the call itself):
 * -EINVAL (@out NULL, bad range or flags); -EBADF @ctx is not a live
 * context, or @dst is not a live device of it; -ENOMEM; -EMFILE, -ENFILE
 * (no file descriptor for the eventfd); -EAGAIN (the prefetch thread could
 * not be started); -ECHILD.  Thread-safe.
 */
typedef struct uhmm_prefetch_req uhmm_prefetch_req;
UHMM_API int uhmm_prefetch(uhmm_ctx *ctx, void *addr, size_t len, uhmm_device *dst,
			   unsigned flags, uhmm_prefetch_req **out);
/** The eventfd that becomes readable when @pf is done (-EINVAL for NULL).
 * It belongs to the handle: do not close it. */
UHMM_API int uhmm_prefetch_fd(const uhmm_prefetch_req *pf);
/**
 * uhmm_prefetch_wait - wait for @pf to finish: @timeout_ns < 0 for ever
 * (the migration is bounded: uhmm_migrate() never waits for ever), 0 to
 * poll, > 0 at most that long.  Returns the migration's result (0 or its
 * error, -ECANCELED if its context was destroyed first), or -EAGAIN (poll:
 * not done), -ETIMEDOUT, -EINVAL (@pf NULL).
 */
UHMM_API int uhmm_prefetch_wait(uhmm_prefetch_req *pf, int64_t timeout_ns);
/** Let go of @pf (it runs to its end if not done).  Returns 0; -EINVAL. */
UHMM_API int uhmm_prefetch_release(uhmm_prefetch_req *pf);

/** Advice (uhmm_advise()). */
enum uhmm_advice {
	/** Pages of the range resist moving away from @dev (NULL: system
	 * memory): the built-in policy maps them remotely for other
	 * processors where it can instead of migrating them (a device's
	 * faults on system memory preferred by the CPU, or preferred by
	 * another device while they are in system memory), and evicts blocks
	 * preferred on a device after the others.  A CPU touch still brings
	 * device pages home (the CPU cannot map a device's private memory),
	 * and an explicit uhmm_migrate() or uhmm_prefetch() moves them. */
	UHMM_ADVISE_PREFERRED_LOCATION = 1,
	/** Forget the preferred location of the range. */
	UHMM_ADVISE_UNSET_PREFERRED_LOCATION = 2,
	/** The range is mostly read (@dev is ignored).  A device's read
	 * fault on a page of it, and a uhmm_migrate() or uhmm_prefetch() of
	 * it to a device (without UHMM_MIGRATE_MOVE), give the device a
	 * read-only duplicate of the page in its memory while the CPU keeps
	 * its copy, mapped (reads go on without a fault) and write-protected
	 * (UFFDIO_WRITEPROTECT; the range is registered for it when the
	 * advice is given).  Several devices may hold duplicates of a page
	 * at once (up to UHMM_MAX_DUPLICATES).  A write from either side
	 * collapses the duplicates to the writer: a CPU write faults (served
	 * by the fault-service thread, or by the SIGBUS handler in that
	 * mode): every duplicate is invalidated (the mirrors are told and
	 * fence) and freed, the protection is removed and the write goes on;
	 * a device's write faults on its read-only mapping, and the page
	 * migrates to the writer (uhmm_migrate(..., UHMM_MIGRATE_MOVE)),
	 * every duplicate invalidated and freed first.  Pages on another
	 * device come home first; pages never touched (not present) and
	 * pages held exclusively or in coherent memory are not duplicated
	 * (the device maps them as without the advice).  Duplicates are not
	 * evicted: a device full of them refuses new ones (-ENOMEM from
	 * uhmm_migrate; a device fault then maps the page remotely).  Needs
	 * userfaultfd write-protection (Linux 5.7): uhmm_advise fails with
	 * -EOPNOTSUPP without it. */
	UHMM_ADVISE_READ_MOSTLY = 3,
	/** Forget the read-mostly advice of the range: its duplicates
	 * collapse to the CPU copy (which is current). */
	UHMM_ADVISE_UNSET_READ_MOSTLY = 4,

	/* Accessed-by (issue 17). */
	/** @dev (not NULL) keeps a mapping of the range's data wherever it
	 * lives, so that its accesses do not fault: at once for the pages
	 * where they are now, and again whenever pages of the range migrate
	 * (to system memory by a CPU fault, an eviction or uhmm_migrate(), or
	 * to a device), the built-in policy asks @dev's backend to map them at
	 * their new location (device.h, ops->map_range).  What the device can
	 * map is its backend's: simdev maps system memory (and coherent
	 * memory in place) remotely and its own memory locally, but not
	 * another device's private memory (those pages it faults on, as
	 * without the advice).  The mapping is made asynchronously; simdev
	 * completes what was asked before its next launch starts
	 * (uhmm_simdev_launch()).  It does not move pages: combine it with
	 * UHMM_ADVISE_PREFERRED_LOCATION to keep them somewhere.  Several
	 * devices may access one range; each is added or removed alone. */
	UHMM_ADVISE_ACCESSED_BY = 16,
	/** @dev (not NULL) no longer follows the range's pages (its current
	 * mappings stay until the pages move or are invalidated). */
	UHMM_ADVISE_UNSET_ACCESSED_BY = 17,
};
/** Devices that may hold a duplicate of one page at once (read-mostly). */
#define UHMM_MAX_DUPLICATES 4

/**
 * uhmm_advise - say something of [@addr, @addr + @len) (page-aligned,
 * managed) that the policy may use (enum uhmm_advice).  Advice belongs to
 * the addresses: it stays when pages move, replaces earlier advice of the
 * same kind over the range, and is not cleared by munmap (as madvise's).
 * A plug-in policy sees it in its callbacks' arguments (uhmm/policy.h).
 * Returns 0.  Errors: -EINVAL bad range or advice (also: @dev NULL for
 * UHMM_ADVISE_ACCESSED_BY or _UNSET_ACCESSED_BY); -EFAULT part of the
 * range is not managed; -EBADF @ctx not live, or @dev not a live device of
 * it; -ENOMEM (nothing changed); -EOPNOTSUPP read-mostly advice without
 * userfaultfd write-protection; -ECHILD.  Thread-safe.  Unsetting
 * read-mostly advice waits for the page locks of the range's duplicated
 * pages (bounded: their holders make progress).
 */
UHMM_API int uhmm_advise(uhmm_ctx *ctx, void *addr, size_t len, int advice, uhmm_device *dev);

/** Attribute values over a range (uhmm_range_attrs()). */
#define UHMM_ATTR_NONE (-1)  /**< nothing said of it */
#define UHMM_ATTR_MIXED (-2) /**< different over the range */
/** Locations a range attribute can name: 0 system memory, 1..255 devices. */
#define UHMM_MAX_LOCATIONS 256

/** What uhmm_range_attrs() reports of a range. */
struct uhmm_range_attrs {
	/** The preferred location (0 system memory, n the device of id n,
	 * uhmm_device_id()) if the whole range has the same one, else
	 * UHMM_ATTR_NONE or UHMM_ATTR_MIXED. */
	int32_t preferred;
	/** The destination of the last uhmm_prefetch() (submitted) of the
	 * whole range, likewise. */
	int32_t last_prefetch;
	/** Bytes in system memory (never touched included), held exclusively
	 * by a device (uhmm_make_exclusive), and on each device (by id). */
	uint64_t bytes_cpu, bytes_exclusive;
	uint64_t bytes_on[UHMM_MAX_LOCATIONS];
	/** The devices advised to access the whole range
	 * (UHMM_ADVISE_ACCESSED_BY): the device of id n is bit n % 64 of
	 * accessed_by[n / 64]. */
	uint64_t accessed_by[UHMM_MAX_LOCATIONS / 64];
	/** 1 if the whole range is advised read-mostly, UHMM_ATTR_NONE if
	 * none of it, UHMM_ATTR_MIXED otherwise. */
	int32_t read_mostly;
	uint32_t _pad;
	/** Bytes of the range (in system memory, counted in bytes_cpu too)
	 * of which at least one device holds a read-only duplicate, and the
	 * bytes of duplicates each device holds (by id). */
	uint64_t bytes_duplicated;
	uint64_t bytes_dup_on[UHMM_MAX_LOCATIONS];
};

/**
 * uhmm_range_attrs - report the advice, last prefetch destination and
 * residency of [@addr, @addr + @len) (page-aligned, managed) at once.  A
 * snapshot (pages may move while it looks).  Costs time proportional to
 * the range's touched part.  Returns 0.  Errors: -EINVAL (@out NULL, bad
 * range); -EFAULT part of it not managed; -EBADF; -ECHILD.
 */
UHMM_API int uhmm_range_attrs(uhmm_ctx *ctx, const void *addr, size_t len,
			      struct uhmm_range_attrs *out);

/** Where a page lives (uhmm_page_info.where). */
enum uhmm_where {
	UHMM_WHERE_CPU = 0,    /**< system memory (present or never touched) */
	UHMM_WHERE_DEVICE = 1, /**< a device's private memory */
	UHMM_WHERE_EXCLUSIVE = 2, /**< system memory held exclusively by a device
				       (uhmm_make_exclusive, mirror.h) */
	UHMM_WHERE_COHERENT = 3, /**< a device's coherent memory, mapped in place
				      at its address (device.h, coherent_mem) */
	UHMM_WHERE_POISONED = 4, /**< lost on a device: the data is gone
				      (device.h, uhmm_device_page_lost) */
};

/** State of one managed page (uhmm_page_query()). */
struct uhmm_page_info {
	uint32_t where;        /**< enum uhmm_where */
	uint32_t seq;          /**< bumped on every change of location */
	uhmm_device *device;   /**< UHMM_WHERE_DEVICE, _EXCLUSIVE, _COHERENT: which device */
	uint64_t dpfn;         /**< UHMM_WHERE_DEVICE, _COHERENT: device frame */
};

/**
 * uhmm_page_query - report where the page containing @addr lives.
 * A snapshot: it may change as soon as the call returns.  Does not fault
 * the page in.  A munmap(), mremap() or madvise() of managed memory that
 * has just returned may not be seen yet (see uhmm_sync()).  Errors:
 * -EFAULT @addr is not managed.
 */
UHMM_API int uhmm_page_query(uhmm_ctx *ctx, const void *addr,
		    struct uhmm_page_info *info);

/**
 * uhmm_sync - wait until uhmm has followed the address-space changes that
 * have returned.
 *
 * uhmm learns of munmap(), mremap() and madvise(MADV_DONTNEED) of managed
 * memory from userfaultfd events, which the kernel lets the calling thread
 * return from once the event is *read*; the fault-service thread applies it
 * (ranges cut or moved, device copies freed, mirrors invalidated) right
 * after.  Calls that only look (uhmm_page_query(), uhmm_check_exclusive())
 * or that act on what they find (uhmm_migrate(), uhmm_range_fault()) may
 * meet the old state in between.  After uhmm_sync(), every such change made
 * by a call that returned before it is applied.  That includes a discard
 * that met a page uhmm was busy with (a migration, an eviction, a fault in
 * service): the service thread can only mark such a page, and whoever
 * holds it finishes the discard (drops the copy it was publishing, frees
 * the device frame) when it lets the page go; uhmm_sync() waits for those
 * too (for as long as they make progress).  Cheap when nothing is in
 * flight (two atomic loads).  The /dev/hmm_dmirror layer does this before
 * every request, as the kernel's mirror is invalidated before munmap()
 * returns.
 *
 * Returns 0.  Errors: -EBADF @ctx is not a live context; -ECHILD;
 * -ETIMEDOUT the changes are followed, but a page discarded while busy was
 * not let go by its holder, and no other such page was either, for 2 s (a
 * holder stuck, e.g. a thread that holds a page and calls uhmm_sync()
 * itself: uhmm's device callbacks must not).  From an invalidate callback
 * (which runs while such a change is applied) it returns 0 at once.
 * Thread-safe.
 */
UHMM_API int uhmm_sync(uhmm_ctx *ctx);

/* ------------------------------------------------------------------------ */
/* Devices                                                                   */

/**
 * uhmm_device_attach - attach a backend to a context.
 * @ops:  the backend's operations (must outlive the device).
 * @priv: passed to every operation.
 * @name: a short name for messages (copied; may be NULL).
 * At most 255 devices per context.  Errors: -EINVAL, -ENOSPC, -ENOMEM.
 */
UHMM_API int uhmm_device_attach(uhmm_ctx *ctx, const struct uhmm_device_ops *ops,
		       void *priv, const char *name, uhmm_device **out);

/**
 * uhmm_device_detach - bring every page on @dev back to system memory,
 * then call ops->destroy and release the handle.  Calls in flight that use
 * @dev (uhmm_migrate() toward it, uhmm_range_fault() and
 * uhmm_make_exclusive() for it, a simdev launch on it) finish first; from
 * the moment the detach starts, new ones fail with -EBADF, and so do
 * those calls when a launch in flight makes them for its device faults
 * (the launch then ends early).  Errors: -EBADF (@dev is not a live
 * device, or another detach of it is under way), -EIO (a page could not
 * be read back; the device stays attached).  May sleep.
 */
UHMM_API int uhmm_device_detach(uhmm_device *dev);

/** The priv pointer given to uhmm_device_attach() (NULL if @dev is not a
 * live device; likewise for the two calls below). */
UHMM_API void *uhmm_device_priv(const uhmm_device *dev);
/** The device's name. */
UHMM_API const char *uhmm_device_name(const uhmm_device *dev);
/** The ops table given to uhmm_device_attach() (tells a backend its own). */
UHMM_API const struct uhmm_device_ops *uhmm_device_ops_of(const uhmm_device *dev);
/** The device's id in its context, 1..255: the uhmm_loc a policy sees
 * (uhmm/policy.h).  0 if @dev is not a live device. */
UHMM_API uint32_t uhmm_device_id(const uhmm_device *dev);

/* ------------------------------------------------------------------------ */
/* Statistics                                                                */

/**
 * Counters of a context since it was created.  Every field only grows but the
 * gauges (metadata_bytes, managed_pages, metadata_dir_bytes, private_bytes,
 * reserve_slots, reserve_slots_used), which say what is in use now.
 * "Pages" are 4 KiB pages.
 */
struct uhmm_stats {
	uint64_t migrated_to_device_pages;
	uint64_t migrated_to_device_bytes;   /**< bytes copied (holes excluded) */
	uint64_t migrated_to_system_pages;
	uint64_t migrated_to_system_bytes;
	uint64_t zero_filled_pages;          /**< device pages zero-filled, no copy */
	uint64_t cpu_faults;                 /**< CPU faults served */
	uint64_t cpu_faults_device;          /**< ...of which brought data back */
	uint64_t cpu_faults_waited;          /**< ...of which waited on a busy page */
	uint64_t fault_around_pages;         /**< extra pages brought back by fault-around */
	uint64_t copy_ns;                    /**< time in the copy engines (submit to completion) */
	uint64_t copy_batches;
	uint64_t copy_errors;
	uint64_t pool_hits;                  /**< faults served from the warm pool (UFFDIO_MOVE) */
	uint64_t pool_misses;                /**< faults served by UFFDIO_COPY */
	uint64_t events_remove;              /**< madvise(MADV_DONTNEED)-like zaps seen */
	uint64_t events_unmap;
	uint64_t events_remap;
	uint64_t device_pages_freed_by_events;
	/** Range pieces an mremap's destination found still managed because
	 * their own munmap/mremap event was late (another thread's); kept
	 * aside until that event comes (docs/ARCHITECTURE.md, "Limbo"). */
	uint64_t ranges_displaced;
	uint64_t migrate_busy;               /**< pages left in place: -EBUSY */
	uint64_t exclusive_grabs;            /**< pages made device-exclusive */
	uint64_t exclusive_revocations;      /**< pages the CPU took back */
	uint64_t exclusive_revoke_ns;        /**< time revoking (fence included) */
	uint64_t invalidations;              /**< invalidations sent to notifiers */
	uint64_t range_fault_calls;
	uint64_t range_fault_pages;          /**< pages walked by range faults */
	/** gauge: page-state bytes: 16 per page of every 2 MiB block of
	 * page state created (a block is created the first time uhmm needs
	 * the state of one of its pages: a fault, a migration, a lock), so
	 * untouched memory costs none.  The directories are apart, in
	 * metadata_dir_bytes. */
	uint64_t metadata_bytes;
	uint64_t managed_pages;              /**< gauge: pages under management */
	/** Gauge, process-wide (all contexts and devices together): bytes of
	 * memory uhmm has mapped for itself and that count against the
	 * system's commit limit -- its objects and tables, page-state arrays,
	 * zero and bounce buffers -- touched or not (docs/ARCHITECTURE.md,
	 * "uhmm's own memory").  Not in it: the warm-pool reserves, simdev
	 * memory and thread stacks, address space that costs memory only where
	 * touched.  None of it is in the application's malloc heap. */
	uint64_t private_bytes;
	/** Pages brought back by read-ahead, before a CPU touched them
	 * (readahead_pages; also in migrated_to_system_pages). */
	uint64_t readahead_pages;
	/** Rounds in which the fault-service thread found a message while
	 * spinning (spin_us) instead of sleeping. */
	uint64_t service_spin_hits;
	/** gauge: bytes of the page-state directories: 16 per 2 MiB block of
	 * every managed range, touched or not. */
	uint64_t metadata_dir_bytes;
	/** Device pages moved back to system memory to make room on a full
	 * device (also in migrated_to_system_pages), and their bytes. */
	uint64_t evicted_pages;
	uint64_t evicted_bytes;
	/** 2 MiB blocks (of page state) that eviction took pages from. */
	uint64_t evicted_blocks;
	/** Time spent evicting (invalidation, copy, install), ns. */
	uint64_t evict_ns;
	/** Pages eviction wanted but skipped because someone held them. */
	uint64_t evict_busy;
	/** Times a request found its device full with every victim busy,
	 * and backed off (dropped its pages and waited). */
	uint64_t evict_backoffs;
	/** Gauge: slots of the reserve in its current extent (it grows on
	 * demand and shrinks back to its initial size when idle;
	 * docs/ARCHITECTURE.md, "The warm page pool"). */
	uint64_t reserve_slots;
	/** Gauge: reserve slots in use: held by a migration or an exclusive
	 * page, or holding a warm page. */
	uint64_t reserve_slots_used;
	/** Plug-in policies ejected (uhmm/policy.h): an invalid decision, an
	 * error, or a callback over its time budget. */
	uint64_t policy_ejections;
	/** Bytes uhmm_prefetch() moved to devices (prefetches that succeeded). */
	uint64_t prefetched_bytes;
	/** Thrashing detected by the built-in policy (a 64 KiB region moved
	 * UHMM_THRASH_MOVES (3) times within UHMM_THRASH_WINDOW_US (2000):
	 * its device faults are throttled for UHMM_THRASH_NAP_US (100)), and
	 * regions pinned to system memory for it after UHMM_THRASH_PIN_AFTER
	 * (3) detections, for UHMM_THRASH_PIN_MS (300): devices map them
	 * remotely.  UHMM_THRASH=0 turns it off (docs/ARCHITECTURE.md
	 * "Policy"). */
	uint64_t thrash_detections;
	uint64_t thrash_pins;
	/** Pages lost on a device so far (uhmm_device_page_lost, device.h). */
	uint64_t poisoned_pages;
	/** 2 MiB device pages: whole aligned blocks that moved to a device
	 * as one unit (one 2 MiB allocation of the backend, device.h
	 * ops->split), and units split since into 4 KiB pages in place
	 * because part of the block left the device (docs/ARCHITECTURE.md
	 * "Device huge pages"). */
	uint64_t dev_huge_units;
	uint64_t dev_huge_splits;
	/** Read-mostly (UHMM_ADVISE_READ_MOSTLY): read-only duplicates made
	 * on devices (one per page and device), and duplicates dropped by a
	 * collapse (a write of the CPU or a device, an unset of the advice, a
	 * discard, a detach). */
	uint64_t dup_made;
	uint64_t dup_dropped;
	/** Gauge: 1 if the process can get transparent huge pages (probed
	 * once at uhmm_ctx_create: /sys/kernel/mm/transparent_hugepage/enabled
	 * "always" or "madvise", and no prctl(PR_SET_THP_DISABLE)); 0: uhmm
	 * works at 4 KiB on the CPU side (a THP the process already has is
	 * still moved whole). */
	uint64_t thp_available;
	/** 2 MiB blocks moved to a device as one transparent huge page (one
	 * UFFDIO_MOVE of the PMD), and brought home as one (the range is
	 * THP-backed again).  docs/ARCHITECTURE.md "2 MiB on the CPU side". */
	uint64_t thp_moves_out;
	uint64_t thp_moves_in;
};

/** Copy a context's counters into @out. */
UHMM_API int uhmm_stats_get(uhmm_ctx *ctx, struct uhmm_stats *out);
/** Print the counters to @f (a FILE *) in a human-readable table. */
UHMM_API int uhmm_stats_print(uhmm_ctx *ctx, void *f);

/**
 * uhmm_strerror - a string for a uhmm error code (a negative errno).
 * @err: what a call returned (0, or -EINVAL, ...; a positive errno is
 *   taken as its negative).
 *
 * Every code a uhmm call returns has a text in uhmm's words (what it
 * means for a call is on the call's page); other codes get libc's text.
 * The decision log (UHMM_LOG=LEVEL[:PATH], LEVEL error, warn, info or
 * debug: uhmm(7)) says what led to a fallback or a refusal.
 *
 * Returns a static string, never NULL, whatever the int (INT_MIN
 * included).  Thread-safe; does not allocate.
 */
UHMM_API const char *uhmm_strerror(int err);

#ifdef __cplusplus
}
#endif
#endif /* UHMM_UHMM_H */
