/* SPDX-License-Identifier: MIT */
/*
 * compute.c - simdev's compute units: lane threads, uhmm_simdev_launch(),
 * the memory accessors kernels use, and how a kernel ends on an error.
 *
 * Threads: compute_units x lanes_per_cu lane threads per simdev, created
 * with the device and parked on launch_cond between launches.  A launch
 * publishes (fn, arg, grid) under launch_lock and bumps the generation;
 * lanes take work-item indices from an atomic counter; the launcher sleeps
 * on done_cond until every lane has left the launch.  A grid of one is run
 * by the launcher itself, as lane 0 (launch_run).
 *
 * Locks:
 *   launch_lock  (leaf) the launch protocol; only condvar waits under it.
 *   sd_cu.lock   (rank 1, see mmu.c) held by a lane from translation to the
 *                end of an out-of-line access through a DEV or EXCL entry
 *                (device memory, or the uhmm-owned copy of a page held
 *                exclusively; neither faults).  The accessors' inline path
 *                (simdev.h) takes no lock: it goes through the lane's TLB
 *                inside a window of its sequence number, which shootdowns
 *                wait for (mmu.c).  It is NOT held across an access through
 *                a SYS entry (system memory): such an access may fault into
 *                uhmm's fault-service thread, which may be running our
 *                invalidate callback, which waits for this very lock.  A
 *                lane never holds a unit lock while it raises a device
 *                fault either (the fault pass runs uhmm_migrate(), whose
 *                invalidation takes every unit lock).
 *
 * Ending a work item on an error: each work item runs under a
 * sigsetjmp(env, 0) (no signal mask saved: cheap).  An accessor that meets
 * an error (unaligned address, a device fault that could not be resolved)
 * records it and siglongjmp()s back to the lane's loop, which fails the
 * launch; other lanes stop taking new items.  An accessor only jumps with
 * no lock held.
 *
 * Memory that vanishes under an access to system memory (munmap while the
 * kernel runs) raises SIGSEGV or SIGBUS in the lane.  simdev installs, once
 * per process at the first uhmm_simdev_create(), a handler for both
 * (SA_SIGINFO | SA_NODEFER | SA_ONSTACK).  If the faulting thread is a lane
 * inside a system-memory access (the thread-local `in_access` is set only
 * around that access), the handler records -EFAULT and siglongjmp()s out,
 * ending the work item as a device would report a page-fault error.
 * Otherwise it passes the signal to the handler that was installed before
 * simdev's (its sa_sigaction or sa_handler), or, if that was SIG_DFL or
 * SIG_IGN, restores SIG_DFL and returns so that the fault re-executes and
 * kills the process as usual.  An application that installs its own
 * handler later must chain to simdev's for device accesses to stay safe.
 * Lanes write their thread-locals before any access, so the handler never
 * triggers a lazy TLS allocation; and they are initial-exec, so reading
 * them is no call to __tls_get_addr (in a library that is preloaded or
 * dlopened, the default model makes one, and ASan's interceptor of it
 * faulted in a thread still starting, inside this very handler, at
 * process exit: an endless chain of SIGSEGV under the dmirror preload).  SA_NODEFER: the handler leaves by a jump
 * that does not restore the signal mask, so the signal must not be blocked
 * while it runs.
 */
#define _GNU_SOURCE
#include "simdev/simdev_internal.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define PAGE_SHIFT 12u

enum op {
	OP_LD = UHMM__SD_LD,
	OP_ST = UHMM__SD_ST,
	OP_ADD = UHMM__SD_ADD,
	OP_XCHG = UHMM__SD_XCHG,
	OP_CAS = UHMM__SD_CAS,
	OP_FADD = UHMM__SD_FADD,
};

/* The lane this thread is (UHMM__SD_NOLANE for every other thread: not
 * NULL, so that a NULL wi differs from it).  Exported: the accessors'
 * inline path compares it with the wi it is given (simdev.h). */
UHMM_API __thread struct uhmm_simdev_item *uhmm__sd_cur
	__attribute__((tls_model("initial-exec"))) = UHMM__SD_NOLANE;
#define cur_lane uhmm__sd_cur
/* Set only while this lane accesses system memory (see the handler). */
static __thread struct uhmm_simdev_item *volatile in_access
	__attribute__((tls_model("initial-exec")));

/* ---- the SIGSEGV / SIGBUS handler --------------------------------------- */

static pthread_once_t sig_once = PTHREAD_ONCE_INIT;
static struct sigaction old_segv, old_bus;

/* uhmm's SIGBUS-mode service (core/sigbus.c): true if it served the fault. */
bool uhmm__sigbus_serve(siginfo_t *si, void *uc);
/* Pass a signal on to the handler @prev that ours replaced (core/sigbus.c). */
void uhmm__sig_chain(const struct sigaction *prev, int sig, siginfo_t *si, void *uc);

static void device_access_fault(int sig, siginfo_t *si, void *uc)
{
	/* A fault on a managed page of a UHMM_CTX_SIGBUS context (a lane's
	 * access included) is served, not an error, when this handler was
	 * installed after uhmm's and runs first. */
	if (sig == SIGBUS && uhmm__sigbus_serve(si, uc))
		return;
	struct uhmm_simdev_item *wi = in_access;

	if (wi) {
		in_access = NULL;
		wi->err = -EFAULT;
		siglongjmp(wi->env, 1);
	}
	/* Not ours: chain to the handler we replaced. */
	uhmm__sig_chain(sig == SIGSEGV ? &old_segv : &old_bus, sig, si, uc);
}

static void sig_install(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = device_access_fault;
	sa.sa_flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGSEGV, &sa, &old_segv);
	sigaction(SIGBUS, &sa, &old_bus);
}

/* ---- accessors ---------------------------------------------------------- */

/* Ends the current work item with @err (never returns).  No lock held. */
static _Noreturn void item_fail(struct uhmm_simdev_item *wi, int err)
{
	wi->err = err;
	siglongjmp(wi->env, 1);
}

/* An accessor called outside its own work item has no one to report to. */
static void item_check(struct uhmm_simdev_item *wi)
{
	if (__builtin_expect(!wi || wi != cur_lane, 0)) {
		fprintf(stderr, "uhmm simdev: a device accessor was called outside "
			"the work item it was given (wi %p)\n", (void *)wi);
		abort();
	}
}

#define DEFINE_OP(T, name)                                                    \
	static uint64_t name(void *vp, enum op op, uint64_t a, uint64_t b)    \
	{                                                                     \
		T *p = vp;                                                    \
		T e;                                                          \
		switch (op) {                                                 \
		case OP_LD:                                                   \
			return __atomic_load_n(p, __ATOMIC_RELAXED);          \
		case OP_ST:                                                   \
			__atomic_store_n(p, (T)a, __ATOMIC_RELAXED);          \
			return 0;                                             \
		case OP_ADD:                                                  \
			return __atomic_fetch_add(p, (T)a, __ATOMIC_SEQ_CST); \
		case OP_XCHG:                                                 \
			return __atomic_exchange_n(p, (T)a, __ATOMIC_SEQ_CST);\
		case OP_CAS:                                                  \
			e = (T)a;                                             \
			__atomic_compare_exchange_n(p, &e, (T)b, false,       \
						    __ATOMIC_SEQ_CST,         \
						    __ATOMIC_SEQ_CST);        \
			return e;                                             \
		case OP_FADD:                                                 \
			return FADD(p, a);                                    \
		}                                                             \
		return 0;                                                     \
	}

/* Floating-point add on the bits: float for 4 bytes, double for 8 (a
 * compare-exchange loop, as in simdev.h); returns the old bits. */
#define FADD_LOOP(F, U, p, a)                                                 \
	({                                                                    \
		U o_ = __atomic_load_n((U *)(p), __ATOMIC_RELAXED), n_;       \
		U av_ = (U)(a);                                               \
		F x_, v_;                                                     \
		memcpy(&v_, &av_, sizeof(v_));                                \
		do {                                                          \
			memcpy(&x_, &o_, sizeof(x_));                         \
			x_ += v_;                                             \
			memcpy(&n_, &x_, sizeof(n_));                         \
		} while (!__atomic_compare_exchange_n((U *)(p), &o_, n_, true,\
						      __ATOMIC_SEQ_CST,       \
						      __ATOMIC_RELAXED));     \
		(uint64_t)o_;                                                 \
	})
#define FADD(p, a) 0
DEFINE_OP(uint8_t, op8)
DEFINE_OP(uint16_t, op16)
#undef FADD
#define FADD(p, a) FADD_LOOP(float, uint32_t, p, a)
DEFINE_OP(uint32_t, op32)
#undef FADD
#define FADD(p, a) FADD_LOOP(double, uint64_t, p, a)
DEFINE_OP(uint64_t, op64)
#undef FADD

static uint64_t op_apply(void *p, unsigned size, enum op op, uint64_t a, uint64_t b)
{
	switch (size) {
	case 1:
		return op8(p, op, a, b);
	case 2:
		return op16(p, op, a, b);
	case 4:
		return op32(p, op, a, b);
	default:
		return op64(p, op, a, b);
	}
}

/*
 * Under ThreadSanitizer, a kernel's accesses to system memory are hidden
 * from it, as a device's DMA would be: TSan would otherwise build shadow
 * memory for every page a kernel touches (a kernel reading one word per
 * page of 1 GiB costs 1 GiB of shadow and ~10 s).  Accesses to device
 * memory stay visible, so TSan still checks simdev's fence against the
 * copy engine.  Races between the application's CPU threads and its
 * kernels on system memory are the application's to find.
 */
#if defined(__SANITIZE_THREAD__)
void AnnotateIgnoreReadsBegin(const char *f, int l);
void AnnotateIgnoreReadsEnd(const char *f, int l);
void AnnotateIgnoreWritesBegin(const char *f, int l);
void AnnotateIgnoreWritesEnd(const char *f, int l);
#define SYS_ACCESS_BEGIN()                                                    \
	do {                                                                  \
		AnnotateIgnoreReadsBegin(__FILE__, __LINE__);                 \
		AnnotateIgnoreWritesBegin(__FILE__, __LINE__);                \
	} while (0)
#define SYS_ACCESS_END()                                                      \
	do {                                                                  \
		AnnotateIgnoreWritesEnd(__FILE__, __LINE__);                  \
		AnnotateIgnoreReadsEnd(__FILE__, __LINE__);                   \
	} while (0)
#else
#define SYS_ACCESS_BEGIN() ((void)0)
#define SYS_ACCESS_END() ((void)0)
#endif

/* Where the data of @va is for a DEV, EXCL or PEER entry (PTE_FENCED). */
static void *fenced_ptr(struct sd_compute *c, uint64_t pte, uintptr_t va)
{
	uintptr_t off = va & (UHMM_PAGE_SIZE - 1);

	if (pte & (PTE_EXCL | PTE_PEER))
		return (unsigned char *)(uintptr_t)(pte & PTE_ADDR_MASK) + off;
	return uhmm__devmem_ptr(&c->sd->mem, pte >> PTE_DPFN_SHIFT) + off;
}

/*
 * The peer link's cost of an access through a PEER entry that missed the
 * lane's TLB (the out-of-line path; hits that follow ride on it): one page
 * over this simdev's peer link (its latency + 4 KiB / its bandwidth),
 * modelling the line fetches of a page's worth of accesses.  Owed by the
 * lane and slept off, with no lock held, once it reaches PEER_DEBT_NS (a
 * sleep per miss would cost the timer's slack, not the model's figure).
 * Counted in peer_access_ns.  No peer model: free.
 */
#define PEER_DEBT_NS 50000u
static void peer_charge(struct uhmm_simdev_item *wi)
{
	struct simdev *sd = wi->c->sd;
	uint64_t ns = sd->peer_latency_ns;

	if (sd->peer_bandwidth_gbps > 0)
		ns += (uint64_t)((double)UHMM_PAGE_SIZE / sd->peer_bandwidth_gbps);
	if (!ns)
		return;
	atomic_fetch_add_explicit(&wi->c->st.peer_access_ns, ns, memory_order_relaxed);
	wi->peer_debt_ns += ns;
	if (wi->peer_debt_ns < PEER_DEBT_NS)
		return;
	struct timespec ts = { (time_t)(wi->peer_debt_ns / 1000000000ull),
			       (long)(wi->peer_debt_ns % 1000000000ull) };
	wi->peer_debt_ns = 0;
	nanosleep(&ts, NULL);
}

/*
 * Brackets an access to system memory: the signal handler ends the work
 * item if it faults (in_access), and TSan looks away (above).  A jump out
 * of the bracket is tidied by sys_abort() in the lane's loop.
 */
static void sys_begin(struct uhmm_simdev_item *wi)
{
	wi->in_sys = true;
	SYS_ACCESS_BEGIN();
	in_access = wi;
	atomic_signal_fence(memory_order_seq_cst);
}

static void sys_end(struct uhmm_simdev_item *wi)
{
	atomic_signal_fence(memory_order_seq_cst);
	in_access = NULL;
	SYS_ACCESS_END();
	wi->in_sys = false;
}

/* After a jump out of the bracket (the handler cleared in_access).  TSan's
 * siglongjmp restores the thread's ignore state of the sigsetjmp, so there
 * is no TSan bracket to close. */
static void sys_abort(struct uhmm_simdev_item *wi)
{
	in_access = NULL;
	wi->in_sys = false;
}

/* Addresses the device can ever map; others fault with -EFAULT at once. */
static bool va_ok(uintptr_t va, size_t n)
{
	return va >= SD_VA_START && va < SD_VA_END && n <= SD_VA_END - va;
}

/*
 * Accesses @size bytes at @va (naturally aligned, within one page).
 * Translates through the unit's TLB and the page table; on a miss raises a
 * device fault and retries once it is replayed.
 */
/* Under cu->lock: the translation @pte (DEV or EXCL) of the page of @va
 * goes to the lane's TLB, for the inline path's next access to the page. */
static void lane_fill(struct sd_compute *c, struct uhmm_simdev_item *wi,
		      uint64_t pte, uintptr_t va)
{
	uintptr_t pg = va & ~(uintptr_t)(UHMM_PAGE_SIZE - 1);
	uhmm__lane_tlb_fill_locked(wi, pg >> PAGE_SHIFT, pte, fenced_ptr(c, pte, pg));
}

static uint64_t access_word(struct uhmm_simdev_item *wi, uintptr_t va,
			    unsigned size, enum op op, uint64_t a, uint64_t b)
{
	struct sd_compute *c;
	unsigned acc = op == OP_LD ? SD_READ : op == OP_ST ? SD_WRITE : SD_ATOMIC;

	item_check(wi);
	c = wi->c;
	if ((size != 1 && size != 2 && size != 4 && size != 8) ||
	    (op == OP_FADD && size < 4) || op > OP_FADD)
		item_fail(wi, -EINVAL);
	if (va & (size - 1))
		item_fail(wi, -EINVAL);
	if (!va_ok(va, size))
		item_fail(wi, -EFAULT);
	for (;;) {
		struct sd_cu *cu = wi->cu;
		pthread_mutex_lock(&cu->lock);
		uint64_t pte = uhmm__translate_locked(c, cu, va >> PAGE_SHIFT, acc);
		if (pte & PTE_FENCED) {
			/* Device memory or a page held exclusively: under the
			 * unit lock, so an invalidation (a revocation too)
			 * waits for this access (the fence).  The lane's TLB
			 * takes the translation for the inline path. */
			uint64_t r = op_apply(fenced_ptr(c, pte, va), size, op, a, b);
			lane_fill(c, wi, pte, va);
			pthread_mutex_unlock(&cu->lock);
			if (pte & PTE_PEER)
				peer_charge(wi);
			return r;
		}
		pthread_mutex_unlock(&cu->lock);
		if (pte) {
			/* System memory, through the CPU's MMU, no lock held.
			 * Never an atomic: SYS entries lack PTE_A (but our
			 * coherent memory's, in place: local). */
			sys_begin(wi);
			uint64_t r = op_apply((void *)va, size, op, a, b);
			sys_end(wi);
			if (!(pte & PTE_LOCAL))
				uhmm__counter_hit(c, va);
			return r;
		}
		int err = uhmm__fault_raise(c, wi, va & ~(uintptr_t)(UHMM_PAGE_SIZE - 1),
					    acc);
		if (err && err != -EBUSY)
			item_fail(wi, err);
	}
}

/*
 * Copies @n bytes (within one page) between @va and @buf: to @buf when
 * @write is false, from it otherwise.
 */
static void access_bytes(struct uhmm_simdev_item *wi, uintptr_t va, void *buf,
			 size_t n, bool write)
{
	struct sd_compute *c = wi->c;
	unsigned acc = write ? SD_WRITE : SD_READ;

	for (;;) {
		struct sd_cu *cu = wi->cu;
		pthread_mutex_lock(&cu->lock);
		uint64_t pte = uhmm__translate_locked(c, cu, va >> PAGE_SHIFT, acc);
		if (pte & PTE_FENCED) {
			if (!c->lane_fence) {
				/* Through the lane's TLB and the inline path's
				 * protocol (simdev.h), so that the copy is not
				 * made under the unit lock, which the unit's
				 * other lanes need for their own misses.  The
				 * entry may be shot down before we look: then
				 * translate again. */
				lane_fill(c, wi, pte, va);
				pthread_mutex_unlock(&cu->lock);
				uint64_t s;
				void *d = uhmm__sd_begin(wi, va, write ? UHMM__SD_TW : 0, &s);
				if (!d)
					continue;
				/* Counted as a unit TLB hit or miss above, not
				 * as a lane hit too (stats: seq / 2 - misses). */
				atomic_store_explicit((_Atomic uint64_t *)&wi->fast.misses,
						      wi->fast.misses + 1,
						      memory_order_relaxed);
				if (write)
					memcpy(d, buf, n);
				else
					memcpy(buf, d, n);
				uhmm__sd_end(wi, s);
				if (pte & PTE_PEER)
					peer_charge(wi);
				return;
			}
			void *d = fenced_ptr(c, pte, va);
			if (write)
				memcpy(d, buf, n);
			else
				memcpy(buf, d, n);
			pthread_mutex_unlock(&cu->lock);
			if (pte & PTE_PEER)
				peer_charge(wi);
			return;
		}
		pthread_mutex_unlock(&cu->lock);
		if (pte) {
			sys_begin(wi);
			if (write)
				memcpy((void *)va, buf, n);
			else
				memcpy(buf, (const void *)va, n);
			sys_end(wi);
			if (!(pte & PTE_LOCAL))
				uhmm__counter_hit(c, va);
			return;
		}
		int err = uhmm__fault_raise(c, wi, va & ~(uintptr_t)(UHMM_PAGE_SIZE - 1),
					    acc);
		if (err && err != -EBUSY)
			item_fail(wi, err);
	}
}

/* The out-of-line path of every scalar accessor (simdev.h). */
UHMM_API uint64_t uhmm__simdev_access(uhmm_simdev_item *wi, const void *p,
				      unsigned size, unsigned op, uint64_t a,
				      uint64_t b)
{
	return access_word(wi, (uintptr_t)p, size, (enum op)op, a, b);
}

/*
 * The out-of-line path of the vector helpers: @n elements of @elem bytes
 * between @p and @buf, split at page boundaries (one translation a page).
 * @buf is the kernel's own memory (simdev.h), so the pieces are copied
 * straight to or from it, with no bounce buffer.
 */
UHMM_API void uhmm__simdev_vec(uhmm_simdev_item *wi, void *buf, const void *p,
			       size_t n, unsigned elem, int write)
{
	uintptr_t va = (uintptr_t)p;
	unsigned char *b = buf;

	item_check(wi);
	if ((elem != 4 && elem != 8) || (va & (elem - 1)))
		item_fail(wi, -EINVAL);
	if (n == 0)
		return;
	if (n > SIZE_MAX / elem || !va_ok(va, n * elem))
		item_fail(wi, -EFAULT);
	size_t len = n * elem;
	while (len) {
		size_t k = UHMM_PAGE_SIZE - (va & (UHMM_PAGE_SIZE - 1));
		if (k > len)
			k = len;
		access_bytes(wi, va, b, k, write != 0);
		va += k;
		b += k;
		len -= k;
	}
}

/* Through a bounce buffer, one piece at a time: no piece crosses a page
 * of either side, so each is one translation per side. */
UHMM_API void uhmm_simdev_copy(uhmm_simdev_item *wi, void *dst, const void *src,
			       size_t n)
{
	unsigned char buf[UHMM_PAGE_SIZE];
	uintptr_t d = (uintptr_t)dst, s = (uintptr_t)src;

	item_check(wi);
	if (n == 0)
		return;
	if (!va_ok(d, n) || !va_ok(s, n))
		item_fail(wi, -EFAULT);
	while (n) {
		size_t k = n;
		size_t sroom = UHMM_PAGE_SIZE - (s & (UHMM_PAGE_SIZE - 1));
		size_t droom = UHMM_PAGE_SIZE - (d & (UHMM_PAGE_SIZE - 1));
		if (k > sroom)
			k = sroom;
		if (k > droom)
			k = droom;
		access_bytes(wi, s, buf, k, false);
		access_bytes(wi, d, buf, k, true);
		s += k;
		d += k;
		n -= k;
	}
}

/* ---- lanes and launches ------------------------------------------------- */

static void launch_fail(struct sd_compute *c, int err)
{
	int zero = 0;
	atomic_compare_exchange_strong(&c->err, &zero, err);
	atomic_store_explicit(&c->failed, true, memory_order_relaxed);
}

/* What a lane runs: a kernel per item, or a block kernel per block. */
struct sd_run {
	uhmm_simdev_kernel fn;
	uhmm_simdev_block_kernel bfn;
	void *arg;
	uint64_t grid;   /* indices handed out: items, or blocks for bfn */
	uint64_t chunk;  /* indices a lane takes at once */
	uint64_t items, block; /* bfn: work items in all, and per block */
};

/* Work items of index @idx (an item, or a block for bfn). */
static uint64_t run_items(const struct sd_run *r, uint64_t idx)
{
	if (!r->bfn)
		return 1;
	uint64_t first = idx * r->block;
	return r->items - first < r->block ? r->items - first : r->block;
}

/*
 * Runs the work items [first, last) of a chunk: 0, or the error an
 * accessor (or the signal handler) ended one with.  One sigsetjmp per
 * chunk, not per item (it was a good part of an item's overhead): after a
 * jump nothing of the chunk resumes, the launch fails.  Its own frame, so
 * that nothing live across the sigsetjmp changes before a jump back to it;
 * the items done are counted in wi->items_done (memory, not a local).
 */
static __attribute__((noinline)) int run_chunk(struct uhmm_simdev_item *wi,
						const struct sd_run *r, uint64_t first,
						uint64_t last)
{
	struct sd_compute *c = wi->c;

	if (sigsetjmp(wi->env, 0)) {
		sys_abort(wi);
		return wi->err;
	}
	for (uint64_t idx = first; idx < last; idx++) {
		if (atomic_load_explicit(&c->failed, memory_order_relaxed))
			break;
		if (r->bfn)
			r->bfn(wi, idx * r->block, run_items(r, idx), r->arg);
		else
			r->fn(wi, idx, r->arg);
		wi->items_done += run_items(r, idx);
	}
	return 0;
}

/*
 * Runs work items of the current launch until none is left.  Indices are
 * taken from the shared counter a chunk at a time (one atomic per chunk,
 * not per item); a chunk is small enough that the lanes stay balanced.
 */
static void lane_run(struct uhmm_simdev_item *wi, const struct sd_run *r)
{
	struct sd_compute *c = wi->c;
	uint64_t grid = r->grid, chunk = r->chunk;

	wi->items_done = 0;
	while (!atomic_load_explicit(&c->failed, memory_order_relaxed)) {
		uint64_t first = atomic_fetch_add_explicit(&c->next_idx, chunk,
							   memory_order_relaxed);
		if (first >= grid)
			break;
		uint64_t last = grid - first < chunk ? grid : first + chunk;
		int err = run_chunk(wi, r, first, last);
		if (err) {
			launch_fail(c, err);
			break;
		}
	}
	atomic_fetch_add_explicit(&c->st.work_items, wi->items_done, memory_order_relaxed);
}

/*
 * The signal mask of a thread running work items: no asynchronous signal
 * meant for the application; the synchronous ones a device access may
 * raise stay deliverable.
 */
static void lane_sigset(sigset_t *set)
{
	sigfillset(set);
	sigdelset(set, SIGSEGV);
	sigdelset(set, SIGBUS);
	sigdelset(set, SIGFPE);
	sigdelset(set, SIGILL);
	sigdelset(set, SIGTRAP);
}

static void *lane_main(void *p)
{
	struct uhmm_simdev_item *wi = p;
	struct sd_compute *c = wi->c;
	uint64_t seen = 0;

	/* Touch the thread-locals before any access (see the handler). */
	cur_lane = wi;
	in_access = NULL;

	pthread_mutex_lock(&c->launch_lock);
	for (;;) {
		while (!c->lanes_stop && c->gen == seen)
			pthread_cond_wait(&c->launch_cond, &c->launch_lock);
		if (c->lanes_stop)
			break;
		seen = c->gen;
		struct sd_run r = {
			.fn = c->fn, .bfn = c->bfn, .arg = c->arg, .grid = c->grid,
			.chunk = c->chunk, .items = c->items, .block = c->block,
		};
		pthread_mutex_unlock(&c->launch_lock);

		lane_run(wi, &r);

		pthread_mutex_lock(&c->launch_lock);
		if (--c->running == 0)
			pthread_cond_signal(&c->done_cond);
	}
	pthread_mutex_unlock(&c->launch_lock);
	return NULL;
}

/*
 * The uhmm core functions (src/core/ctx.c) a launch needs, declared here:
 * simdev includes no core header.  A launch is a call in flight on its
 * device's context (uhmm_ctx_destroy() waits for it) and a user of the
 * device (uhmm_device_detach() waits for it), so the device cannot be
 * destroyed under its lanes.  Neither wait can deadlock with the launch:
 * once a destroy or a detach has started, the uhmm calls the launch's
 * device faults make fail at once with -EBADF (they never wait for it),
 * the faulting work items end with that error, and the launch returns.
 */
int uhmm__dev_enter(uhmm_device *dev, uhmm_ctx **ctx);
void uhmm__ctx_exit(uhmm_ctx *ctx);
int uhmm__dev_hold(uhmm_ctx *ctx, uhmm_device *dev);
void uhmm__dev_release(uhmm_device *dev);

/*
 * A grid of one: no parallelism to be had, so the caller runs the item as
 * lane 0, which is parked (the launch is ours: busy).  Waking a lane and
 * being woken back are two scheduler round trips, 5-130 us on a small VM,
 * against a work item that may take a microsecond (uhmm-bench mirror).
 * The caller blocks asynchronous signals meanwhile, as lanes do: a handler
 * must not run inside an access of the item (in_access).
 */
static void run_in_caller(struct sd_compute *c, struct sd_run *r)
{
	sigset_t set, old;
	lane_sigset(&set);
	pthread_sigmask(SIG_SETMASK, &set, &old);
	struct uhmm_simdev_item *wi = &c->lanes[0];
	cur_lane = wi;
	in_access = NULL;
	r->chunk = 1;
	lane_run(wi, r);
	cur_lane = UHMM__SD_NOLANE;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
}

/* Any other grid: the lanes run it, the caller waits for them all. */
static void run_on_lanes(struct sd_compute *c, const struct sd_run *r)
{
	pthread_mutex_lock(&c->launch_lock);
	c->fn = r->fn;
	c->bfn = r->bfn;
	c->arg = r->arg;
	c->grid = r->grid;
	c->items = r->items;
	c->block = r->block;
	/* About 16 chunks per lane, at most 64 items (blocks: 1) each. */
	c->chunk = r->grid / ((uint64_t)c->nlanes * 16);
	c->chunk = c->chunk < 1 ? 1 : c->chunk > 64 ? 64 : c->chunk;
	if (r->bfn)
		c->chunk = 1;
	c->running = c->nlanes;
	c->gen++;
	pthread_cond_broadcast(&c->launch_cond);
	while (c->running)
		pthread_cond_wait(&c->done_cond, &c->launch_lock);
	pthread_mutex_unlock(&c->launch_lock);
}

static int launch_run(struct sd_compute *c, struct sd_run *r)
{
	uint64_t grid = r->grid;

	if (getpid() != c->pid)
		return -ECHILD;
	if (atomic_exchange(&c->busy, true))
		return -EBUSY;
	atomic_fetch_add_explicit(&c->st.launches, 1, memory_order_relaxed);
	if (grid == 0) {
		atomic_store(&c->busy, false);
		return 0;
	}

	atomic_store(&c->next_idx, 0);
	atomic_store(&c->failed, false);
	atomic_store(&c->err, 0);
	if (grid == 1)
		run_in_caller(c, r);
	else
		run_on_lanes(c, r);
	int err = atomic_load(&c->err);
	if (err)
		atomic_fetch_add_explicit(&c->st.kernel_errors, 1, memory_order_relaxed);
	atomic_store(&c->busy, false);
	return err;
}

static int launch(uhmm_device *dev, struct sd_run *r)
{
	uhmm_ctx *ctx;

	if (cur_lane != UHMM__SD_NOLANE)
		return -EINVAL;
	/* A handle that is not a live device: "not a simdev". */
	int err = uhmm__dev_enter(dev, &ctx);
	if (err)
		return err == -EBADF ? -EINVAL : err;
	if (uhmm__dev_hold(ctx, dev)) {
		uhmm__ctx_exit(ctx);
		return -EINVAL; /* detached meanwhile */
	}
	/* A munmap/mremap/madvise that returned before the launch is
	 * followed first: the kernel's mirrors are invalidated before those
	 * calls return, and a kernel must not use a stale entry either (it
	 * would write into a device page that the late event then frees). */
	(void)uhmm_sync(ctx);
	struct simdev *sd = uhmm__simdev_of(dev);
	struct sd_compute *c = sd ? sd->comp : NULL;
	/* Mappings asked for before the launch (accessed-by advice, device.h
	 * map_range) are in place before its first access. */
	if (c)
		uhmm__fault_map_drain(c);
	err = c ? launch_run(c, r) : -EINVAL;
	/* ... and the access counters' notifications it raised are served
	 * before it returns. */
	if (c)
		uhmm__fault_map_drain(c);
	uhmm__dev_release(dev);
	uhmm__ctx_exit(ctx);
	return err;
}

UHMM_API int uhmm_simdev_launch(uhmm_device *dev, uhmm_simdev_kernel fn,
				uint64_t grid, void *arg)
{
	struct sd_run r = { .fn = fn, .arg = arg, .grid = grid };

	if (!fn)
		return -EINVAL;
	return launch(dev, &r);
}

/*
 * Blocks are handed out one at a time (a block is the unit of balance);
 * the bookkeeping counts work items, as a launch of items would.
 */
UHMM_API int uhmm_simdev_launch_blocks(uhmm_device *dev, uhmm_simdev_block_kernel fn,
				       uint64_t grid, uint64_t block, void *arg)
{
	struct sd_run r = { .bfn = fn, .arg = arg, .items = grid, .block = block };

	if (!fn || block == 0)
		return -EINVAL;
	r.grid = grid / block + (grid % block != 0);
	return launch(dev, &r);
}

UHMM_API int uhmm_simdev_advise(uhmm_device *dev, void *addr, size_t len,
				enum uhmm_simdev_advice advice)
{
	struct simdev *sd = uhmm__simdev_of(dev);
	uintptr_t a = (uintptr_t)addr;

	if (!sd || !sd->comp || len == 0 || (a | len) & (UHMM_PAGE_SIZE - 1) ||
	    len > UINTPTR_MAX - a)
		return -EINVAL;
	if (advice != UHMM_SIMDEV_MIGRATE_ON_TOUCH && advice != UHMM_SIMDEV_MAP_REMOTE)
		return -EINVAL;
	return uhmm__advise(sd->comp, SD_ADV_PLACE, a, a + len, advice);
}

void uhmm__compute_stats(struct sd_compute *c, struct uhmm_simdev_stats *o)
{
	memset(o, 0, sizeof(*o));
#define S(f) o->f = atomic_load_explicit(&c->st.f, memory_order_relaxed)
	S(launches);
	S(work_items);
	S(faults);
	S(fault_batches);
	S(fault_duplicates);
	S(fault_resolutions);
	S(fault_service_ns);
	S(migrations);
	S(remote_maps);
	S(range_fault_calls);
	S(range_fault_pages);
	S(invalidations);
	S(shootdown_pages);
	S(kernel_errors);
	S(exclusive_pages);
	S(throttle_ns);
	S(peer_maps);
	S(peer_access_ns);
	S(pt_huge_maps);
	S(pt_huge_splits);
	S(tlb_huge_fills);
	S(map_requests);
	S(map_requests_dropped);
	S(counter_notifications);
	S(counter_migrations);
#undef S
	pthread_mutex_lock(&c->pt_lock);
	o->pt_huge_entries = c->pt_huge;
	pthread_mutex_unlock(&c->pt_lock);
	for (unsigned i = 0; i < c->ncu; i++) {
		pthread_mutex_lock(&c->cus[i].lock);
		o->tlb_huge_hits += c->cus[i].huge_hits;
		o->tlb_hits += c->cus[i].hits;
		o->tlb_misses += c->cus[i].misses;
		pthread_mutex_unlock(&c->cus[i].lock);
	}
	/* A lane's inline lookups: seq / 2 (+2 each), of which fast.misses
	 * missed. */
	for (unsigned i = 0; i < c->nlanes; i++) {
		struct uhmm__sd_lane *l = &c->lanes[i].fast;
		uint64_t m = atomic_load_explicit((_Atomic uint64_t *)&l->misses,
						  memory_order_relaxed);
		uint64_t q = atomic_load_explicit((_Atomic uint64_t *)&l->seq,
						  memory_order_relaxed);
		o->tlb_lane_hits += q / 2 > m ? q / 2 - m : 0;
	}
	o->tlb_hits += o->tlb_lane_hits;
}

/* ---- start and stop ----------------------------------------------------- */

static void lanes_stop(struct sd_compute *c)
{
	pthread_mutex_lock(&c->launch_lock);
	c->lanes_stop = true;
	pthread_cond_broadcast(&c->launch_cond);
	pthread_mutex_unlock(&c->launch_lock);
	for (unsigned i = 0; i < c->lanes_started; i++)
		uhmm__umem_thread_join(c->lanes[i].thread, NULL);
	c->lanes_started = 0;
}

static int lanes_start(struct sd_compute *c, unsigned lanes_per_cu)
{
	/* Page-aligned, and a lane is a multiple of 64 bytes: no two lanes
	 * share a cache line (each writes its own on every access). */
	c->lanes = uhmm__umem_map((size_t)c->nlanes * sizeof(*c->lanes), 0, 0);
	if (!c->lanes)
		return -ENOMEM;
	for (unsigned i = 0; i < c->nlanes; i++) {
		struct uhmm_simdev_item *wi = &c->lanes[i];
		wi->c = c;
		wi->cu = &c->cus[i / lanes_per_cu];
		wi->id = i;
		pthread_cond_init(&wi->fault_cond, NULL);
	}
	if (uhmm__mmu_lanes_init(c, c->sd->tlb_entries, lanes_per_cu))
		return -ENOMEM;
	sigset_t set, old;
	lane_sigset(&set);
	pthread_sigmask(SIG_SETMASK, &set, &old);
	int err = 0;
	for (unsigned i = 0; i < c->nlanes; i++) {
		if (uhmm__umem_thread_create(&c->lanes[i].thread, lane_main,
					     &c->lanes[i]) != 0) {
			err = -EAGAIN;
			break;
		}
		char name[16];
		snprintf(name, sizeof(name), "uhmm-lane%u", i % 10000u);
		pthread_setname_np(c->lanes[i].thread, name);
		c->lanes_started++;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return err;
}

static void compute_free(struct sd_compute *c)
{
	if (c->lanes)
		for (unsigned i = 0; i < c->nlanes; i++)
			pthread_cond_destroy(&c->lanes[i].fault_cond);
	uhmm__mmu_lanes_fini(c);
	if (c->lanes)
		uhmm__umem_unmap(c->lanes, (size_t)c->nlanes * sizeof(*c->lanes));
	uhmm__fault_fini(c);
	uhmm__mmu_fini(c);
	pthread_mutex_destroy(&c->launch_lock);
	pthread_cond_destroy(&c->launch_cond);
	pthread_cond_destroy(&c->done_cond);
	uhmm__umem_free(c);
}

int uhmm__compute_start(struct simdev *sd, uhmm_ctx *ctx, uhmm_device *dev)
{
	struct sd_compute *c = uhmm__umem_calloc(1, sizeof(*c));
	int err;

	if (!c)
		return -ENOMEM;
	pthread_once(&sig_once, sig_install);
	c->sd = sd;
	c->ctx = ctx;
	c->dev = dev;
	c->pid = getpid();
	c->ncu = sd->compute_units;
	c->nlanes = sd->compute_units * sd->lanes_per_cu;
	c->fault_batch = sd->fault_batch;
	pthread_mutex_init(&c->launch_lock, NULL);
	pthread_cond_init(&c->launch_cond, NULL);
	pthread_cond_init(&c->done_cond, NULL);

	err = uhmm__mmu_init(c, sd->tlb_entries);
	if (!err)
		err = uhmm__fault_init(c);
	if (!err)
		err = lanes_start(c, sd->lanes_per_cu);
	if (!err)
		err = uhmm__fault_start(c);
	if (!err)
		err = uhmm_notifier_insert(ctx, SD_VA_START, SD_VA_END - SD_VA_START,
					   uhmm__mmu_invalidate, c, &c->notifier);
	if (err) {
		c->notifier = NULL;
		uhmm__fault_stop(c);
		lanes_stop(c);
		compute_free(c);
		return err;
	}
	sd->comp = c;
	return 0;
}

/*
 * The notifier goes first (uhmm_notifier_remove() waits for a callback in
 * progress), so no invalidation reaches the table once we free it; then the
 * fault-service thread, then the lanes.
 */
void uhmm__compute_stop(struct simdev *sd)
{
	struct sd_compute *c = sd->comp;

	if (!c)
		return;
	/* Map requests and counter notifications use the notifier: none
	 * runs once it goes. */
	uhmm__fault_map_off(c);
	if (c->notifier)
		(void)uhmm_notifier_remove(c->notifier);
	c->notifier = NULL;
	uhmm__fault_stop(c);
	lanes_stop(c);
	compute_free(c);
	sd->comp = NULL;
}
