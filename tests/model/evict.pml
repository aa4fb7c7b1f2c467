/*
 * evict.pml - a Promela model of eviction from device memory (issue 14:
 * device memory is a cache), checked with spin by tests/model/run-spin.sh
 * --evict (ctest: model.spin.evict).
 *
 * page.pml checks one page's protocol in depth; this model checks what
 * eviction adds across pages, with the per-page steps taken as page.pml
 * checked them (simplified: no discard, no exclusive access, no parked
 * path of a migrator's own page).
 *
 * The device has NF = 1 frame of memory (its capacity), holding at the
 * start the victim page V, which the device's lane has mapped (one
 * page-table entry, `dmap` / `dframe`).  Actors:
 *   - requester R0: uhmm_migrate(P, device).  It locks its own page P, finds
 *     the device full and evicts: it walks the LRU (the one frame: its
 *     owner), looks at the victim's word (not on the device: no victim, but
 *     busy if held), takes it with a *trylock* (taken: busy), unlocks it if
 *     it is no longer on the device (moved meanwhile), else migrates it
 *     home (invalidate start with the device's fence; copy into a slot;
 *     the install and the publication of LOC_CPU, which frees the victim's
 *     frame; unlock; wake; invalidate end).  Then it allocates again; with
 *     a victim busy (or a frame freed meanwhile by others) it backs off:
 *     unlocks P, waits for a frame to be freed or a timeout, retries, at
 *     most EVICT_TRIES times, then fails -ENOMEM with nothing changed.  A
 *     walk that finds nothing at all fails -ENOMEM (asserted: only if P's
 *     own request fills the device, never here).  With a frame, it
 *     migrates P into it.
 *   - requester R1 (-DTWO_REQ): the same for its page Q.  Two requesters
 *     evict each other's pages (R1 evicts P once R0 put it on the device)
 *     and race for the frame one of them freed.
 *   - the migrator M: uhmm_migrate(home) over V and P, V's address lower:
 *     it locks V, then P (ascending address, blocking), and brings what is
 *     on the device home (-DNO_HOMER: none; -DHOME_V_ONLY: V only).
 *   - a CPU thread storing to V: a userfault while V is not in system
 *     memory, served by the service thread (serve_fault: trylock or park;
 *     serve_device brings V home).
 *   - the device's lane: atomics on V through its entry (under the unit
 *     lock), and its fault thread: read_begin, range fault (V's location and
 *     frame), pt_lock + read_retry, install the entry.
 *
 * Data are sets of writes as in page.pml (one bit a write; bit 0: V's
 * initial data, bit 1: P's, bit 2: Q's).  A frame's data and owner are
 * separate from the pages: a frame reused by another page while a stale
 * entry of V still leads to it is seen by the lane (the owner check) and by
 * the data checks.  Checked: every CPU store and device atomic reads the
 * page's every write; a lane access through V's entry finds the frame owned
 * by V; at the end, every page's copy at its published location holds its
 * every write, V's entry (if any) leads to V's frame, a frame owned is the
 * frame of its owner on the device; every thread ends (no deadlock).
 *
 * Mutations run-spin.sh must see caught:
 *   -DEARLY_FRAME_FREE (with -DTWO_REQ) the victim's frame goes back to the
 *       allocator when the victim is taken, before the invalidation and
 *       fence: the other requester allocates it and moves its page in while
 *       the lane still maps V there.
 *   -DBLOCKING_EVICT   the victim is taken with a blocking lock: R0 holds P
 *       and waits for V, M holds V and waits for P: a deadlock.
 *   -DNO_RECHECK       a victim taken is evicted without looking whether it
 *       is still on the device: brought home meanwhile (and written by the
 *       CPU), it is "evicted" again from the frame it left.
 *   -DNO_TIMEOUT (with -DTWO_REQ, -DEVICT_TRIES=3) the back-off waits for a
 *       frame freed only: the victim was busy because its owner was moving
 *       it onto the device, whose unlock frees nothing: the requester
 *       sleeps for ever.
 *   -DEVICT_TRIES=0    the back-off retries without bound: a non-progress
 *       cycle (liveness).
 * and two that are the walk as committed on main at aabe1cb (src/core/
 * evict.c, migrate.c: batch_to_device_once), which spin finds wrong: a
 * request that fits fails -ENOMEM (the assertion at that -ENOMEM: the
 * device is full of the request's own pages):
 *   -DNOTHING_ENOMEM   a walk that moved nothing and found nothing busy
 *       fails -ENOMEM without looking whether a frame was freed since the
 *       attempt began: the victim came home meanwhile (a CPU fault), the
 *       walk finds it gone, the frame is free.
 *   -DLOCKED_NOT_BUSY (with -DTWO_REQ) a page that is not on the device is
 *       no victim even when held: on its way onto the device (its frame
 *       taken, its word still LOC_CPU) it is not busy either; the walk
 *       finds nothing while the other request copies.
 *
 * How the model maps to the code: docs/ARCHITECTURE.md, "The
 * model-checked page protocol", "Eviction in the model".
 */

#define CPU 0
#define DEV 1
#define NONE 255

#define V 0             /* the victim: on the device at the start */
#define P 1             /* R0's own page */
#define Q 2             /* R1's own page (-DTWO_REQ) */
#ifdef TWO_REQ
#define NP 3
#define NREQ 2
#else
#define NP 2
#define NREQ 1
#endif
#if defined(EARLY_FRAME_FREE) && !defined(TWO_REQ)
#error "-DEARLY_FRAME_FREE needs -DTWO_REQ: a second allocator"
#endif
#define NF 1            /* device frames */

#ifndef EVICT_TRIES
#define EVICT_TRIES 2   /* attempts of a requester; 0: no bound */
#endif
#if EVICT_TRIES > 0
#define TRIES_LEFT (tries < EVICT_TRIES)
#define COUNT_TRY tries++
#else
#define TRIES_LEFT true
#define COUNT_TRY skip
#endif
#ifndef DEV_TRIES
#define DEV_TRIES 1     /* device fault resolutions after its entry went */
#endif
#ifndef DEV_OPS
#define DEV_OPS 1       /* device atomics */
#endif
#ifdef NO_HOMER
#define NHOMER 0
#else
#define NHOMER 1
#endif
#ifdef NO_CPU
#define NCPUT 0
#else
#define NCPUT 1
#endif

/* The pages: their words (loc, PG_LOCKED), present in the CPU page table,
 * the frame while on the device, the data in place (or moved out), the
 * writes a read must see. */
byte loc[NP];
bool locked[NP];
bool mapped[NP];
byte frame[NP];
byte cpu[NP];
byte req[NP];
bool parked = false;    /* PG_PARKED of V (only V takes CPU faults) */

/* The device's memory: each frame's owner (the allocator's state; NONE:
 * free) and data (STALE: garbage). */
#define STALE 128
byte fowner[NF];
byte fdata[NF];
bool ev[NREQ];          /* a frame was freed since requester i looked */

/* The notifier and the device's mirror of V. */
byte ninv = 0;          /* invalidations running */
bool snap_ok = false;   /* the device's read_begin snapshot still valid */
bool dmap = true;       /* the lane's entry for V ... */
byte dframe = 0;        /* ... and the frame it leads to */
bool inflight = false;  /* a lane access between translation and its end */

byte nwr = 3;           /* the next write's bit */
byte ndone = 0;         /* actors done */

/* The CPU thread's fault on V and the service thread's messages (fresh /
 * stale page-seq snapshot: page.pml). */
bool pending = false, waiting = false;
bool wf = false, ws = false, pf = false, ps = false;
chan kick = [1] of { bit };

/* -DONLY_ENTRY_CHECK: the data checks off, to see the owner check (a lane
 * access through a stale entry) catch a mutation alone. */
#ifndef ONLY_ENTRY_CHECK
#define DATA_OK(x, p) (x == req[p])
#else
#define DATA_OK(x, p) true
#endif
#define WRITE(x, p) x = x | (1 << nwr); req[p] = req[p] | (1 << nwr); nwr++

#define LOCK_PAGE(p)	atomic { !locked[p] -> locked[p] = true }

/* uhmm__page_publish_unlock: the location (a page leaving the device frees
 * its frame back to the allocator, and that is an event for requesters
 * backing off), seq bump (V's messages read so far go stale), unlock, kick
 * if a fault was parked.  Use inside atomic.  With -DEARLY_FRAME_FREE the
 * victim's frame was freed already, and may be another page's now. */
#ifdef EARLY_FRAME_FREE
#define FREE_FRAME(p) if :: fowner[frame[p]] == p -> fowner[frame[p]] = NONE :: else -> skip fi
#else
#define FREE_FRAME(p) assert(fowner[frame[p]] == p); fowner[frame[p]] = NONE
#endif
#if NREQ > 1
#define FREED_EVENT ev[0] = true; ev[1] = true
#else
#define FREED_EVENT ev[0] = true
#endif
inline publish_unlock(p, where) {
	if
	:: loc[p] != where ->
		if
		:: loc[p] == DEV -> FREE_FRAME(p); frame[p] = NONE; FREED_EVENT
		:: else -> skip
		fi;
		loc[p] = where;
		if
		:: p == V ->
			if :: wf -> wf = false; ws = true :: else -> skip fi;
			if :: pf -> pf = false; ps = true :: else -> skip fi
		:: else -> skip
		fi
	:: else -> skip
	fi;
	locked[p] = false;
	if
	:: p == V && parked -> parked = false;
		if :: nfull(kick) -> kick!1 :: full(kick) -> skip fi
	:: else -> skip
	fi
}

/* uhmm__invalidate_start for page p with the device's callback (V's entry
 * removed) and fence (the unit lock: waits for the access in flight), then
 * `next`; uhmm__invalidate_end. */
#define INV_START_THEN(p, next) \
	atomic { !inflight -> ninv++; snap_ok = false; \
		if :: p == V -> dmap = false :: else -> skip fi; next }
#define INV_END	atomic { ninv--; snap_ok = false }

/* UFFDIO_WAKE on V. */
#define WAKE_V	atomic { waiting = false; pending = false }
#define WAKE(p)	if :: p == V -> WAKE_V :: else -> skip fi

/* A page on the device comes home, its lock held (serve_device;
 * batch_to_system, and the eviction, with the service thread's install):
 * invalidate and fence, copy the frame into a slot, move it into place and
 * publish LOC_CPU (the frame is freed), unlock, wake, end the
 * invalidation.  `vf` is the frame to copy from. */
#define HOME_FROM(p, vf) \
	INV_START_THEN(p, skip); \
	atomic { cpu[p] = fdata[vf]; mapped[p] = true; publish_unlock(p, CPU) }; \
	WAKE(p); \
	INV_END
#define HOME(p)	HOME_FROM(p, frame[p])

/* The frame allocator: the free frame, if any, now owned by p. */
#define ALLOC(p, f) \
	if :: fowner[0] == NONE -> fowner[0] = p; f = 0 :: else -> f = NONE fi

/* A request toward the device (batch_to_device): an attempt (its seen
 * snapshot of dev_freed, lock, allocate; while the device is full, walk and
 * evict), then back off or fail.  The walk (uhmm__evict, batch_to_system
 * with a victim filter): the LRU gives the frame's owner (a block of the
 * request's own is skipped); an unlocked look at its word: not on the
 * device, it is no victim (but a page held, on its way onto the device
 * perhaps, is busy); trylock (taken: busy); the look again under the lock
 * (moved meanwhile: unlock, skip); evict.  What the walk found decides
 * (batch_to_device_once): a page moved (a frame freed): allocate again; a
 * victim busy or a page in flight: back off; nothing, but a frame was
 * freed since the attempt began (the victim moved meanwhile): back off
 * (the wait returns at once); nothing at all: -ENOMEM, which is right
 * only when the request's own pages fill the device (asserted). */
#define W_NOTHING 0
#define W_BUSY    1
#define W_MOVED   2
proctype requester(byte id; byte o) {
	byte tries = 0, f = NONE, v = NONE, w = W_NOTHING;
	bool got = false, enomem = false;
	do
	:: LOCK_PAGE(o);
	   if
	   :: loc[o] == DEV ->            /* already there (K_STAY) */
		atomic { publish_unlock(o, DEV) };
		break
	   :: else -> skip
	   fi;
	   atomic { ALLOC(o, f) };
	   do
	   :: f != NONE -> break
	   :: else ->
		atomic {                  /* the LRU; the unlocked look */
			v = fowner[0];
			if
			:: v == o || v == NONE -> v = NONE
			:: else -> skip
			fi;
			if
			:: v != NONE && loc[v] != DEV ->
#ifndef LOCKED_NOT_BUSY
				if :: locked[v] -> w = W_BUSY :: else -> skip fi;
#endif
				v = NONE
			:: else -> skip
			fi
		};
		if
		:: v != NONE ->
#ifndef BLOCKING_EVICT
			atomic { if :: !locked[v] -> locked[v] = true; got = true
				:: else -> got = false; w = W_BUSY fi }
#else
			atomic { !locked[v] -> locked[v] = true; got = true }
#endif
			;
			if
#ifndef NO_RECHECK
			:: got && loc[v] != DEV ->     /* moved meanwhile */
				atomic { publish_unlock(v, loc[v]); got = false }
			:: got && loc[v] == DEV ->
#else
			:: got ->                      /* mutation: no look */
#endif
#ifdef EARLY_FRAME_FREE
				atomic { fowner[frame[v]] = NONE; FREED_EVENT };
#endif
#ifndef NO_RECHECK
				HOME(v);
#else
				HOME_FROM(v, 0);
#endif
				atomic { got = false; w = W_MOVED }
			:: else -> skip                /* busy: skipped */
			fi
		:: else -> skip
		fi;
		if
		:: w == W_BUSY -> break           /* back off */
		:: w == W_MOVED ->                /* allocate again */
			atomic { v = NONE; w = W_NOTHING; ALLOC(o, f) }
#ifndef NOTHING_ENOMEM
		:: w == W_NOTHING && ev[id] ->    /* freed meanwhile: back off */
			break                     /* (the wait returns at once) */
		:: w == W_NOTHING && !ev[id] ->
#else
		:: w == W_NOTHING ->              /* mutation: no look at freed */
#endif
			/* -ENOMEM: right only if the request's own pages fill
			 * the device. */
			assert(fowner[0] == o);
			atomic { v = NONE; enomem = true };
			break
		fi
	   od;
	   if
	   :: f != NONE ->                /* migrate the page into the frame */
		INV_START_THEN(o, mapped[o] = false);
		atomic { fdata[f] = cpu[o]; frame[o] = f; publish_unlock(o, DEV); f = NONE };
		INV_END;
		break
	   :: else ->                     /* back off: nothing changed */
		atomic { publish_unlock(o, CPU); v = NONE; w = W_NOTHING; COUNT_TRY };
		if
		:: !TRIES_LEFT || enomem -> break   /* -ENOMEM */
		:: else ->
			/* uhmm__dev_freed_wait: a frame freed since the
			 * attempt's snapshot, or the timeout; then the next
			 * attempt's snapshot */
#ifndef NO_TIMEOUT
			atomic {
				if
				:: ev[id] -> skip     /* a frame was freed */
				:: true -> skip       /* the timeout */
				fi;
				ev[id] = false
			}
#else
			atomic { ev[id] -> ev[id] = false }
#endif
		fi
	   fi
	od;
progress_r:	atomic { ndone++ }   /* the call returned: done or -ENOMEM */
}

/* uhmm_migrate(home) over [V, P]: page locks in ascending address order,
 * then each page on the device comes home. */
proctype homer() {
	LOCK_PAGE(V);
#ifndef HOME_V_ONLY
	LOCK_PAGE(P);
#endif
	if
	:: loc[V] == DEV -> HOME(V)
	:: else -> atomic { publish_unlock(V, CPU) }
	fi;
#ifndef HOME_V_ONLY
	if
	:: loc[P] == DEV -> HOME(P)
	:: else -> atomic { publish_unlock(P, CPU) }
	fi;
#endif
	atomic { ndone++ }
}

/* A CPU thread stores to V (a read-modify-write: it must see every write),
 * or sleeps in a userfault and retries when woken. */
proctype cpu_thread() {
	do
	:: atomic { mapped[V] -> assert(DATA_OK(cpu[V], V)); WRITE(cpu[V], V) };
progress_c:	break
	:: atomic { !mapped[V] -> waiting = true; pending = true };
	   !waiting
	od;
	atomic { ndone++ }
}

/* The service thread serves V's fault messages (serve_fault): stale ones
 * wake; a page held is parked; a page in system memory is present (the
 * zero fill finds it: EEXIST, wake); a page on the device comes home
 * (serve_device). */
inline serve_all() {
	do
	:: atomic { ws && !locked[V] -> ws = false }; WAKE_V
	:: atomic { ws && locked[V] -> ws = false; ps = true; parked = true }
	:: atomic { !ws && wf && !locked[V] && loc[V] == CPU -> wf = false;
		assert(mapped[V]) };            /* no zeros over data */
	   WAKE_V
	:: atomic { !ws && wf && !locked[V] && loc[V] == DEV -> wf = false;
		locked[V] = true };
	   HOME(V)
	:: atomic { !ws && wf && locked[V] -> wf = false; pf = true; parked = true }
	:: atomic { !wf && !ws -> break }
	od
}

proctype service() {
end:	do
	:: atomic { pending -> pending = false; wf = true };
	   serve_all();
	   atomic { wf = pf; ws = ps; pf = false; ps = false };
	   serve_all()
	:: atomic { kick?_ -> wf = pf; ws = ps; pf = false; ps = false };
	   serve_all()
	od
}

/* The device: atomics on V through its entry (the owner check: the frame
 * is V's; the data check: every write), and, its entry gone, its fault
 * thread's range fault. */
proctype device() {
	byte n = 0, tries = 0, l = 0, lf = 0;
	do
	:: atomic { n == DEV_OPS || (!dmap && tries == DEV_TRIES) -> break }
	:: atomic { n < DEV_OPS && dmap -> inflight = true };
	   atomic {
		assert(fowner[dframe] == V);   /* no stale entry into a reused frame */
		assert(DATA_OK(fdata[dframe], V));
		WRITE(fdata[dframe], V);
		inflight = false;
		n++
	   }
progress_d:	skip
	:: atomic { n < DEV_OPS && !dmap && tries < DEV_TRIES -> tries++ };
	   atomic { ninv == 0 -> snap_ok = true; l = loc[V]; lf = frame[V] };
	   atomic {                       /* pt_lock; read_retry; install */
		if
		:: snap_ok && l == DEV -> dmap = true; dframe = lf
		:: else -> skip
		fi;
		snap_ok = false; l = 0; lf = 0
	   }
	od;
	atomic { ndone++ }
}

init {
	byte p = 0;
	atomic {
		loc[V] = DEV; frame[V] = 0; mapped[V] = false; cpu[V] = STALE; req[V] = 1;
		fowner[0] = V; fdata[0] = 1;
		loc[P] = CPU; frame[P] = NONE; mapped[P] = true; cpu[P] = 2; req[P] = 2;
#ifdef TWO_REQ
		loc[Q] = CPU; frame[Q] = NONE; mapped[Q] = true; cpu[Q] = 4; req[Q] = 4;
#endif
		run service();
		run requester(0, P);
#ifdef TWO_REQ
		run requester(1, Q);
#endif
#ifndef NO_HOMER
		run homer();
#endif
#ifndef NO_CPU
		run cpu_thread();
#endif
		run device()
	};
	/* Everyone done, the pages at rest: each copy at its location holds
	 * every write; a frame owned is its owner's frame on the device;
	 * V's entry, if any, leads to V's frame. */
	atomic { ndone == NREQ + NHOMER + NCPUT + 1 && ninv == 0 ->
		do
		:: p < NP ->
			assert(!locked[p]);
			assert(loc[p] == CPU -> (mapped[p] && DATA_OK(cpu[p], p))
				: (fowner[frame[p]] == p && DATA_OK(fdata[frame[p]], p)));
			p++
		:: else -> break
		od;
		assert(fowner[0] == NONE || (loc[fowner[0]] == DEV && frame[fowner[0]] == 0));
		assert(!dmap || (loc[V] == DEV && dframe == frame[V]))
	}
}
