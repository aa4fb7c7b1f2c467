/* SPDX-License-Identifier: MIT */
/*
 * sigbus.c - the SIGBUS handler of UHMM_CTX_SIGBUS contexts.
 *
 * A context in SIGBUS mode opens its userfaultfd with UFFD_FEATURE_SIGBUS:
 * a CPU access to a managed page that is not present raises SIGBUS in the
 * faulting thread instead of queueing a message for the service thread.
 * The handler below (installed once per process, at the first such
 * context) finds the context and the range of the address and serves the
 * fault on that thread (uhmm__serve_self in service.c, the service
 * thread's code); the access is executed again when it returns.
 *
 * Which contexts: a table of atomic pointers, each with a count of the
 * handlers looking at it, so uhmm_ctx_destroy can take its context out
 * and wait for the handlers still on it (uhmm__sigbus_del) without a lock
 * the handler would take.  The table grows without bound: it is a list of
 * chunks (the first, of 16 slots, static; the others one mmap'd page of
 * slots each), a new chunk filled with zeros before it is published by
 * one release store to the last chunk's next.  Chunks are never freed or
 * moved, so a handler walks them with acquire loads and no lock
 * (async-signal-safe); creators serialise on add_lock (never taken by the
 * handler).  A freed slot is reused by the next context.
 *
 * Not ours, passed on (uhmm__sig_chain()): a si_code other than BUS_ADRERR (the
 * kernel's code for a userfaultfd SIGBUS: memory errors, kill(2)), or an
 * address in no range of a SIGBUS context of this process (a file mapping
 * touched beyond its end...).  An address in no range while the service
 * thread is handling events may be the destination of an mremap whose
 * REMAP is read but not yet followed: the handler waits for the events to
 * be handled (uhmm__events_wait) and looks again first.  An address still
 * in no range is let run again once (retry_once) before it is passed on.
 *
 * What the handler takes (docs/ARCHITECTURE.md, "SIGBUS mode"): the
 * ranges_lock for reading, the page lock of the faulting page (sleeping
 * on it), trylocks of its neighbours, the pool lock, the notifier lock for
 * reading and the notifiers' callbacks (device fences), the copy engine,
 * the request lock, and it may wait for the service thread.  A SIGBUS is
 * synchronous: the thread holds what its own code took before the access.
 * No uhmm path touches managed memory holding one of these (simdev lanes
 * and the dmirror layer reach system memory with no lock held; the copy
 * engine copies into reserve slots and bounce buffers only), except the
 * handler itself, through a callback that touches managed memory: a
 * thread-local depth catches that, and such a fault is handed to the
 * service thread (uhmm__fault_request) instead of being served under the
 * outer one's locks.
 *
 * Memory: the handler's path calls no malloc.  What it allocates or frees
 * (a copy batch descriptor, a bounce buffer, the last reference of a
 * range) comes from umem (util/umem.h).  That is safe here: umem's locks
 * are held only inside umem, which touches nothing but its own pages, and
 * those are never managed (uhmm_register refuses them), so no SIGBUS of
 * ours can interrupt a thread inside umem -- the one way the handler could
 * meet a umem lock its own thread holds.  (The application's malloc gave
 * no such guarantee: its heap may be registered.)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include "core/internal.h"
#include "util/futex.h"

#define SB_FIRST 16u /* slots of the static first chunk */
#define SB_CHUNK_BYTES 4096u
#define SB_WAITER 0x80000000u

struct sb_slot {
	struct uhmm_ctx *_Atomic ctx;
	_Atomic uint32_t users; /* handlers looking at ctx; SB_WAITER: del waits */
};

struct sb_chunk {
	struct sb_chunk *_Atomic next; /* published once, never changed after */
	struct sb_slot *s;
	unsigned n;
};

static struct sb_slot first_slots[SB_FIRST];
static struct sb_chunk first = { .s = first_slots, .n = SB_FIRST };
static pthread_mutex_t add_lock = PTHREAD_MUTEX_INITIALIZER;

static struct sb_chunk *chunk_next(const struct sb_chunk *c)
{
	return atomic_load_explicit(&c->next, memory_order_acquire);
}

/* Slot number i of the whole table (a slot number handed out by add). */
static struct sb_slot *slot_at(unsigned i)
{
	struct sb_chunk *c = &first;
	while (i >= c->n) {
		i -= c->n;
		c = chunk_next(c);
	}
	return &c->s[i];
}

static pthread_once_t once = PTHREAD_ONCE_INIT;
static void install(void);
static struct sigaction prev_bus; /* the handler before ours */
static int install_err;

/* Serving a fault on this thread now (a nested SIGBUS: see the top). */
static __thread unsigned depth __attribute__((tls_model("initial-exec")));

/*
 * Pass a signal that is not ours to @prev, the handler we replaced: its
 * sa_sigaction or sa_handler, or, for SIG_DFL and SIG_IGN, the default
 * action.  A fault executes again and now kills (with the core dump a
 * SIGBUS or SIGSEGV is due); a signal sent by kill() does not come back by
 * itself.  Shared with simdev's handler (compute.c).
 */
void uhmm__sig_chain(const struct sigaction *prev, int sig, siginfo_t *si, void *uc);
void uhmm__sig_chain(const struct sigaction *prev, int sig, siginfo_t *si, void *uc)
{
	if (prev->sa_flags & SA_SIGINFO) {
		prev->sa_sigaction(sig, si, uc);
		return;
	}
	if (prev->sa_handler != SIG_DFL && prev->sa_handler != SIG_IGN) {
		prev->sa_handler(sig);
		return;
	}
	struct sigaction dfl;
	memset(&dfl, 0, sizeof(dfl));
	dfl.sa_handler = SIG_DFL;
	sigemptyset(&dfl.sa_mask);
	sigaction(sig, &dfl, NULL);
	if (si && si->si_code <= 0)
		raise(sig);
}

/* Did the faulting access write?  (A read gets the zero page, a write a
 * private page: as the service thread does with the message's flag.) */
static bool write_hint(void *ucv)
{
#if defined(__x86_64__)
	const ucontext_t *uc = ucv;
	return (uc->uc_mcontext.gregs[REG_ERR] & 2) != 0; /* X86_PF_WRITE */
#else
	(void)ucv;
	return false; /* a write then takes a copy-on-write fault of its own */
#endif
}

/* The last address this thread let run again for want of a range. */
static __thread uintptr_t retried __attribute__((tls_model("initial-exec")));

/*
 * A fault on an address in no range of any SIGBUS context of the process:
 * not ours, or no longer ours.  The
 * source of an mremap(MREMAP_DONTUNMAP) is given back to the kernel
 * (unregistered) when its REMAP is handled, which may happen between the
 * fault and this handler: the access would now be served by the kernel.
 * So let it run again, once; the same address faulting again (before a
 * fault of ours is served on this thread) is not ours.
 */
static bool retry_once(uintptr_t addr)
{
	/* (Not cleared on the second fault: simdev's handler asks first
	 * and chains to ours, which asks again for the same fault.) */
	if (retried == addr)
		return false;
	retried = addr;
	return true;
}

/* Serve addr if ctx manages it.  The caller keeps ctx alive. */
static bool serve_in(struct uhmm_ctx *ctx, uintptr_t addr, bool write)
{
	struct uhmm_range *r = uhmm__range_get(ctx, addr);
	if (!r) {
		/* Perhaps the destination of an mremap being followed. */
		if (atomic_load_explicit(&ctx->events_busy, memory_order_acquire)) {
			uhmm__events_wait(ctx);
			r = uhmm__range_get(ctx, addr);
		}
		/* Perhaps the grown tail of a range (mremap grew it): the
		 * service thread looks (it reads /proc/self/maps, which a
		 * handler does not), and serves the fault if so.  Not from
		 * inside our own service, nor on the service thread. */
		if (!r)
			return !depth && !pthread_equal(pthread_self(), ctx->service) &&
			       uhmm__fault_request(ctx, addr, write);
	}
	if (depth) {
		/* From inside our own service of a fault (a callback touched
		 * managed memory): not under the outer one's locks. */
		uhmm__range_put(r);
		uhmm__fault_request(ctx, addr, write);
		return true;
	}
	depth++;
	uhmm__serve_self(ctx, r, addr, write);
	depth--;
	uhmm__range_put(r);
	return true;
}

/* Ask the context of slot s, if any, to serve addr (me: the pid, read
 * once a context was asked). */
static bool ask_slot(struct sb_slot *s, uintptr_t addr, void *uc, pid_t *me)
{
	if (!atomic_load_explicit(&s->ctx, memory_order_relaxed))
		return false;
	bool served = false;
	atomic_fetch_add_explicit(&s->users, 1, memory_order_seq_cst);
	struct uhmm_ctx *ctx = atomic_load_explicit(&s->ctx, memory_order_seq_cst);
	if (ctx) {
		if (!*me)
			*me = getpid();
		/* (A fork child's copy of its parent's table.) */
		if (ctx->pid == *me)
			served = serve_in(ctx, addr, write_hint(uc));
	}
	if (atomic_fetch_sub_explicit(&s->users, 1, memory_order_seq_cst) == (SB_WAITER | 1))
		uhmm_futex_wake_all(&s->users);
	return served;
}

/* Exported to simdev's own SIGSEGV/SIGBUS handler (compute.c), which runs
 * first when it was installed after ours: a lane's access to a managed page
 * is served, not reported as a device error. */
__thread bool uhmm__sb_poisoned __attribute__((tls_model("initial-exec")));

/*
 * Addresses of poisoned pages (coherent.c), process-wide, for the handler:
 * a SIGBUS at one of them is a touch of a page lost on a device, reported
 * as the kernel reports a hardware-poisoned page (BUS_MCEERR_AR, lsb 12)
 * whatever the kernel said (its poison marker gives BUS_ADRERR without
 * CONFIG_MEMORY_FAILURE).  The handler reads the table lock-free, so it
 * is a list of chunks that are never freed or moved: a static first one
 * of POISON_FIRST entries, then chunks of POISON_CHUNK entries mapped from
 * umem when every entry is taken, zeroed before they are published by one
 * release store (noters serialise their growth on poison_lock, which the
 * handler never takes).  No limit but memory: a page that finds no entry
 * (umem exhausted) keeps the kernel's code.  Entries are keyed by the page
 * state (never dereferenced); an mremap moves the addresses of the range's
 * entries with it (uhmm__poison_remap, range.c).
 */
#define POISON_FIRST 1024u
#define POISON_CHUNK_BYTES 65536u
struct poison_ent {
	_Atomic(const void *) page;
	_Atomic uintptr_t addr;
};
struct poison_chunk {
	struct poison_chunk *_Atomic next;
	unsigned n;
	struct poison_ent *e;
};
static struct poison_ent poison_first[POISON_FIRST];
static struct poison_chunk poison_tab = { .n = POISON_FIRST, .e = poison_first };
static pthread_mutex_t poison_lock = PTHREAD_MUTEX_INITIALIZER;

static struct poison_chunk *poison_next(const struct poison_chunk *c)
{
	return atomic_load_explicit(&c->next, memory_order_acquire);
}

#define POISON_EACH(c, i) \
	for (struct poison_chunk *c = &poison_tab; c; c = poison_next(c)) \
		for (unsigned i = 0; i < c->n; i++)

static bool poison_claim(const struct uhmm_page *p, uintptr_t addr)
{
	POISON_EACH(c, i) {
		const void *none = NULL;
		if (atomic_load_explicit(&c->e[i].page, memory_order_relaxed) == NULL &&
		    atomic_compare_exchange_strong(&c->e[i].page, &none, p)) {
			atomic_store(&c->e[i].addr, addr);
			return true;
		}
	}
	return false;
}

int uhmm__poison_note(const struct uhmm_page *p, uintptr_t addr)
{
	pthread_once(&once, install); /* in every mode: the handler */
	if (poison_claim(p, addr))
		return 0;
	/* Every entry taken: look again under the lock (another noter may
	 * have added a chunk), else add one, its first entry ours. */
	int err = 0;
	pthread_mutex_lock(&poison_lock);
	if (!poison_claim(p, addr)) {
		struct poison_chunk *last = &poison_tab, *n;
		while ((n = poison_next(last)))
			last = n;
		struct poison_chunk *c = uhmm__umem_map(POISON_CHUNK_BYTES, 0, 0);
		if (c) {
			c->e = (struct poison_ent *)(c + 1);
			c->n = (unsigned)((POISON_CHUNK_BYTES - sizeof(*c)) / sizeof(*c->e));
			atomic_init(&c->e[0].page, p);
			atomic_init(&c->e[0].addr, addr);
			atomic_store_explicit(&last->next, c, memory_order_release);
		} else {
			err = -ENOSPC; /* (its SIGBUS keeps the kernel's code) */
		}
	}
	pthread_mutex_unlock(&poison_lock);
	return err;
}

void uhmm__poison_forget(const struct uhmm_page *p)
{
	POISON_EACH(c, i) {
		if (atomic_load_explicit(&c->e[i].page, memory_order_relaxed) != p)
			continue;
		atomic_store(&c->e[i].addr, 0);
		atomic_store(&c->e[i].page, NULL);
		return;
	}
}

void uhmm__poison_remap(uintptr_t from, uintptr_t to, size_t len)
{
	POISON_EACH(c, i) {
		uintptr_t a = atomic_load_explicit(&c->e[i].addr, memory_order_relaxed);
		if (a && a >= from && a - from < len)
			(void)atomic_compare_exchange_strong(&c->e[i].addr, &a, to + (a - from));
	}
}

static bool poisoned_addr(uintptr_t a)
{
	a &= ~(PAGE_SIZE - 1);
	POISON_EACH(c, i)
		if (atomic_load_explicit(&c->e[i].addr, memory_order_relaxed) == a)
			return true;
	return false;
}

bool uhmm__sigbus_serve(siginfo_t *si, void *uc);
bool uhmm__sigbus_serve(siginfo_t *si, void *uc)
{
	if (si->si_signo != SIGBUS || si->si_code != BUS_ADRERR)
		return false;
	uintptr_t addr = (uintptr_t)si->si_addr;
	if (poisoned_addr(addr)) {
		si->si_code = BUS_MCEERR_AR; /* passed on (see poison_tab) */
		si->si_addr_lsb = PAGE_SHIFT;
		return false;
	}
	pid_t me = 0;
	bool served = false;
	for (const struct sb_chunk *c = &first; c && !served; c = chunk_next(c))
		for (unsigned i = 0; i < c->n && !served; i++)
			served = ask_slot(&c->s[i], addr, uc, &me);
	if (served && uhmm__sb_poisoned) {
		/* A page lost on a device (coherent.c): not ours to serve;
		 * passed on as the kernel reports a hardware-poisoned page. */
		uhmm__sb_poisoned = false;
		si->si_code = BUS_MCEERR_AR;
		si->si_addr_lsb = PAGE_SHIFT;
		return false;
	}
	/* In no range of any context (me: one was asked). */
	if (served)
		retried = 0;
	else if (me)
		served = retry_once(addr);
	return served;
}

static void handler(int sig, siginfo_t *si, void *uc)
{
	int saved = errno;
	if (!uhmm__sigbus_serve(si, uc))
		uhmm__sig_chain(&prev_bus, sig, si, uc);
	errno = saved;
}

static void install(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = handler;
	/* NODEFER: a nested fault (see the top) must be delivered.  No
	 * ONSTACK: serving takes up to ~24 KiB of stack (a copy batch of 512
	 * descriptors), more than an alternate signal stack often has; the
	 * thread's own stack is where its access was. */
	sa.sa_flags = SA_SIGINFO | SA_NODEFER | SA_RESTART;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGBUS, &sa, &prev_bus) < 0)
		install_err = -errno;
}

int uhmm__sigbus_add(struct uhmm_ctx *ctx)
{
	pthread_once(&once, install);
	if (install_err)
		return install_err;
	pthread_mutex_lock(&add_lock);
	unsigned base = 0;
	for (struct sb_chunk *c = &first;; c = chunk_next(c)) {
		for (unsigned i = 0; i < c->n; i++) {
			struct uhmm_ctx *none = NULL;
			if (atomic_compare_exchange_strong(&c->s[i].ctx, &none, ctx)) {
				ctx->sb_slot = base + i;
				pthread_mutex_unlock(&add_lock);
				return 0;
			}
		}
		base += c->n;
		if (chunk_next(c))
			continue;
		/* Full: one more chunk (zeros: every slot empty), published
		 * whole.  uhmm's own memory (never the application's heap,
		 * which it may register, nor a hole it left): the handler
		 * reads it. */
		struct sb_chunk *n = uhmm__umem_map(SB_CHUNK_BYTES, 0, 0);
		if (!n) {
			pthread_mutex_unlock(&add_lock);
			return -ENOMEM;
		}
		n->s = (struct sb_slot *)(n + 1);
		n->n = (SB_CHUNK_BYTES - sizeof(*n)) / sizeof(struct sb_slot);
		atomic_store_explicit(&c->next, n, memory_order_release);
	}
}

void uhmm__sigbus_del(struct uhmm_ctx *ctx)
{
	struct sb_slot *s = slot_at(ctx->sb_slot);
	atomic_store_explicit(&s->ctx, NULL, memory_order_seq_cst);
	uint32_t u = atomic_fetch_or_explicit(&s->users, SB_WAITER, memory_order_seq_cst);
	while ((u & ~SB_WAITER) != 0) {
		uhmm_futex_wait(&s->users, u | SB_WAITER);
		u = atomic_load_explicit(&s->users, memory_order_seq_cst);
	}
	atomic_fetch_and_explicit(&s->users, ~SB_WAITER, memory_order_seq_cst);
}

void uhmm__sigbus_atfork_child(void)
{
	/* The parent's contexts are not the child's (ctx->pid says so too),
	 * and counts of its other threads froze mid-look; another thread may
	 * have held add_lock (the child has only this one). */
	pthread_mutex_init(&add_lock, NULL);
	for (struct sb_chunk *c = &first; c; c = chunk_next(c))
		for (unsigned i = 0; i < c->n; i++) {
			atomic_store(&c->s[i].ctx, NULL);
			atomic_store(&c->s[i].users, 0);
		}
}
