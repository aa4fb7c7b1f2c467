/*
 * page.pml - a Promela model of uhmm's per-page protocol, checked with spin
 * by tests/model/run-spin.sh (ctest: model.spin.page).
 *
 * One managed page; NCPU CPU threads that touch it; the fault-service
 * thread; an application thread migrating it to the device and home; a
 * device that does atomics on it through its mirror (one page-table entry)
 * and resolves its own faults by taking the page exclusively.
 *
 * Data.  Every write (CPU store, device atomic) is made to one copy of the
 * page: in place (cpu), the device page (dev) or the reserve slot (slot).
 * fresh_X says whether copy X holds every write made so far: a write to X
 * leaves the other copies behind, a copy from X to Y makes Y as fresh as
 * X.  (This is exactly "the copy's counter equals the number of writes"
 * for counters that writes increment.)  A lost update - a write that
 * slips past a copy or lands in a stale copy (hard point 2) - breaks
 *   - the assertion of every CPU read: the page it maps is fresh;
 *   - the final check: once every actor is done and the page is at rest,
 *     the copy at its published location is fresh.
 *
 * How the model maps to the code, what it abstracts away, and what spin
 * says: docs/ARCHITECTURE.md, "The model-checked page protocol".
 *
 * -DSTALE_INSTALL is the mutation run-spin.sh must see caught: serve_device
 * ends its invalidation right after the callback instead of after the page
 * is published (the fault that invalidate start/end fixed, see the top of
 * notifier.c).  A device range fault in that window reads "on the device",
 * passes read_retry, maps the device page, and its atomic is lost.
 */

#define CPU  0
#define DEV  1
#define EXCL 2

#ifndef NCPU
#define NCPU 2          /* CPU threads, 1 or 2 */
#endif
#ifndef CPU_OPS
#define CPU_OPS 1       /* accesses per CPU thread */
#endif
#ifndef MIGRATIONS
#define MIGRATIONS 2    /* uhmm_migrate calls: to the device, home, ... */
#endif
/* Which accesses thread id makes: thread 0 stores, thread 1 loads (with
 * -DANY_ACCESS each may do either, which multiplies the states). */
#ifdef ANY_ACCESS
#define STORES(id) true
#define LOADS(id) true
#else
#define STORES(id) (id == 0)
#define LOADS(id) (id != 0)
#endif
#ifndef DEV_OPS
#define DEV_OPS 1       /* device atomics */
#endif
#ifndef DEV_TRIES
#define DEV_TRIES 2     /* device fault resolutions; 0: no bound (livelock) */
#endif
#if DEV_TRIES > 0
#define TRY_MORE (tries < DEV_TRIES)
#define COUNT_TRY tries++
#define GIVE_UP (tries == DEV_TRIES)
#else
#define TRY_MORE true
#define COUNT_TRY skip
#define GIVE_UP false
#endif

/* The page. */
byte loc = CPU;            /* published location: the page word's loc bits */
bool locked = false;       /* PG_LOCKED (same word: publish+unlock is one op) */
bool parked = false;       /* PG_PARKED */
bool mapped = true;        /* present in the CPU page table */
bool fresh_cpu = true, fresh_dev = false, fresh_slot = false;

/* The service thread's fault messages, by page-seq snapshot: a message is
 * fresh while the page's seq equals its snapshot, stale for ever after. */
bool pending[NCPU];        /* queued in the kernel, not read yet */
bool wf = false, ws = false;   /* read, being served (fresh, stale) */
bool pf = false, ps = false;   /* parked (ctx->parked) */
chan kick = [1] of { bit };    /* the eventfd */

/* The notifier and the device's mirror. */
byte ninv = 0;             /* invalidations running: seq is odd while > 0 */
bool snap_ok = false;      /* the device's read_begin snapshot == seq */
bool dev_map = false;      /* the device's entry for the page */
byte dev_target = DEV;     /* what it points to: DEV or EXCL */
bool dev_inflight = false; /* a lane between translation and access end */

bool waiting[NCPU];        /* CPU thread asleep in a userfault */
byte cpu_done = 0;
bool mig_done = false, dev_done = false;

#define FRESH_AT_LOC (loc == CPU -> fresh_cpu : (loc == DEV -> fresh_dev : fresh_slot))

/* uhmm__page_lock: futex sleep until unlocked, then take it. */
#define LOCK_PAGE	atomic { !locked -> locked = true }

/* uhmm__page_publish_unlock(where): store the location, bump the page seq
 * if it changed (every fault message read so far goes stale), clear the
 * lock bits with one exchange, kick the service thread if a fault was
 * parked (eventfd: a pending kick is enough).  Use inside atomic. */
inline publish_unlock(where) {
	if
	:: loc != where ->
		loc = where;
		if :: wf -> wf = false; ws = true :: else -> skip fi;
		if :: pf -> pf = false; ps = true :: else -> skip fi
	:: else -> skip
	fi;
	locked = false;
	if
	:: parked -> parked = false;
#ifndef LOST_KICK
		if :: nfull(kick) -> kick!1 :: full(kick) -> skip fi
#else
		skip   /* mutation: after_unlock forgets the kick */
#endif
	:: else -> skip
	fi
}

/* uhmm__invalidate_start, with the device's callback and its fence, then
 * `next`: the sequence goes odd (unless another invalidation runs), the
 * callback removes the entry under pt_lock, the fence takes the unit lock,
 * which a lane holds from translation to the end of its access.  Waiting
 * for the access in flight before the whole is the same: a new access
 * could only start through the entry, before its removal. */
#define INV_START_THEN(next) \
	atomic { !dev_inflight -> ninv++; snap_ok = false; dev_map = false; next }
inline inv_end_body() {
	ninv--;
	snap_ok = false   /* seq moves when the last one ends */
}
#define INV_END	atomic { inv_end_body() }

/* UFFDIO_WAKE on the page: every thread asleep on it.  A woken thread whose
 * message was not read yet takes it off the queue (the kernel's
 * handle_userfault / userfaultfd_wake_function). */
inline wake_all() {
#if NCPU > 1
	atomic { waiting[0] = false; waiting[1] = false;
		pending[0] = false; pending[1] = false }
#else
	atomic { waiting[0] = false; pending[0] = false }
#endif
}

/* A device page comes home (serve_device; batch_to_system with the
 * service thread's install): invalidate and fence, copy the device page
 * into a slot, UFFDIO_MOVE it in (DONTWAKE), publish and unlock, wake,
 * end the invalidation.  The lock is held. */
inline home_from_dev() {
#ifdef STALE_INSTALL
	INV_START_THEN(skip);
	atomic { inv_end_body() };   /* the bug: settles before publishing */
	fresh_cpu = fresh_dev;
	atomic { mapped = true; publish_unlock(CPU) };
#else
	INV_START_THEN(fresh_cpu = fresh_dev);
	atomic { mapped = true; publish_unlock(CPU) };
#endif
	wake_all();
#ifndef STALE_INSTALL
	INV_END
#endif
}

/* A page held exclusively comes back (serve_revoke; uhmm__revoke_range):
 * REVOKE to the holder, which fences; the slot's page is moved back into
 * place, published, unlocked; wake; end.  The lock is held. */
inline revoke() {
	INV_START_THEN(skip);
	atomic { fresh_cpu = fresh_slot; mapped = true; publish_unlock(CPU) };
	wake_all();
	INV_END
}

proctype cpu_thread(byte id) {
	byte n = 0;
	do
	:: n == CPU_OPS -> break
	:: atomic { n < CPU_OPS && mapped && STORES(id) ->   /* a store */
		fresh_dev = false; fresh_slot = false; n++ }
progress_w:	skip
	:: atomic { n < CPU_OPS && mapped && LOADS(id) ->    /* a load */
		assert(fresh_cpu); n++ }
progress_r:	skip
	:: atomic { n < CPU_OPS && !mapped ->  /* userfault: sleep */
		waiting[id] = true; pending[id] = true };
	   (!waiting[id])                      /* woken: retry */
	od;
	atomic { cpu_done++ }
}

/* The service thread serves the messages it has read (handle_msgs) or
 * taken from the parked list (redispatch_parked), one by one: serve_fault.
 * Stale ones first: the other order only adds a wake-up after the page
 * was served, which wakes nobody who would not fault again. */
inline serve_all() {
	do
	:: atomic { ws && !locked -> ws = false };   /* stale: unlock, wake */
	   wake_all()
	:: atomic { ws && locked -> ws = false; ps = true; parked = true }
	:: atomic { !ws && wf && !locked && loc == CPU ->   /* serve_zero */
		/* in place: UFFDIO_ZEROPAGE says EEXIST, wake.  Absent
		 * would mean zeros over the page's data. */
		assert(mapped); wf = false };
	   wake_all()
	:: atomic { !ws && wf && !locked && loc == DEV -> wf = false; locked = true };
	   home_from_dev()                            /* serve_device */
	:: atomic { !ws && wf && !locked && loc == EXCL -> wf = false; locked = true };
	   revoke()                                   /* serve_revoke */
	:: atomic { !ws && wf && locked -> wf = false; pf = true; parked = true }
	:: atomic { !wf && !ws -> break }
	od
}

/* service_main: poll; read the fault messages queued, each with its page's
 * seq snapshot (one message per page and snapshot: a duplicate would only
 * wake twice); serve them; redispatch the parked faults. */
proctype service() {
end:	do
	:: atomic { (pending[0]
#if NCPU > 1
		|| pending[1]
#endif
		) ->
		pending[0] = false;
#if NCPU > 1
		pending[1] = false;
#endif
		wf = true };
	   serve_all();
	   atomic { wf = pf; ws = ps; pf = false; ps = false };
	   serve_all()
	:: atomic { kick?_ -> wf = pf; ws = ps; pf = false; ps = false };
	   serve_all()
	od
}

/* An application thread: uhmm_migrate(page, device), then home, ... */
proctype migrator() {
	byte n = 0;
	do
	:: n == MIGRATIONS -> break
	:: else ->
		LOCK_PAGE;
		if
		:: n % 2 == 0 ->   /* batch_to_device */
			if
			:: loc == CPU ->
				INV_START_THEN(mapped = false);  /* UFFDIO_MOVE out */
				if
				:: atomic { fresh_dev = fresh_cpu;     /* copy */
					publish_unlock(DEV) }
				:: atomic { mapped = true;             /* copy failed: */
					publish_unlock(CPU) };         /* restore */
				   wake_all()
				fi;
				INV_END
			:: loc == EXCL ->                              /* K_FROM_EXCL */
				INV_START_THEN(fresh_dev = fresh_slot; publish_unlock(DEV));
				INV_END
			:: loc == DEV ->                               /* K_STAY */
				atomic { publish_unlock(DEV) }
			fi
		:: else ->         /* uhmm__migrate_range_to_system */
			if
			:: loc == DEV -> home_from_dev()
			:: loc == EXCL -> revoke()
			:: loc == CPU -> atomic { publish_unlock(CPU) }
			fi
		fi;
		n++
progress_m:	skip
	od;
	mig_done = true
}

/* The device: an atomic goes through its entry; a miss goes to its fault
 * thread, which takes the page exclusively if the CPU has it
 * (uhmm_make_exclusive, grab_batch), then installs what a range fault says
 * with read_begin / range fault / pt_lock + read_retry. */
proctype device() {
	byte n = 0, tries = 0, l;
	bool grab = false;
	do
	:: n == DEV_OPS || GIVE_UP -> break
	:: atomic { n < DEV_OPS && dev_map -> dev_inflight = true };
	   atomic {   /* the atomic, under the unit lock */
		if
		:: dev_target == DEV -> fresh_cpu = false; fresh_slot = false
		:: else -> fresh_cpu = false; fresh_dev = false
		fi;
		dev_inflight = false;
		n++
	   }
progress_d:	skip
	:: atomic { n < DEV_OPS && !dev_map && TRY_MORE && (loc != CPU || !locked) ->
		COUNT_TRY;
		if
		:: loc == CPU -> locked = true; grab = true  /* uhmm_make_exclusive */
		:: else -> skip
		fi
	   };
	   if
	   :: grab ->
		INV_START_THEN(mapped = false);            /* UFFDIO_MOVE */
		atomic { fresh_slot = fresh_cpu;           /* into the slot */
			publish_unlock(EXCL); grab = false };
		INV_END
	   :: else -> skip
	   fi;
	   atomic { ninv == 0 -> snap_ok = true; l = loc };  /* read_begin; range fault */
	   atomic {                                       /* pt_lock; read_retry */
		if
		:: snap_ok && l != CPU -> dev_map = true; dev_target = l
		:: else -> skip
		fi;
		snap_ok = false; l = 0
	   }
	od;
	dev_done = true
}

init {
	atomic {
		run service();
		run cpu_thread(0);
#if NCPU > 1
		run cpu_thread(1);
#endif
		run migrator();
		run device()
	};
	/* Everyone done and the page at rest: its copy holds every write. */
	atomic { cpu_done == NCPU && mig_done && dev_done && !locked && ninv == 0 ->
		assert(FRESH_AT_LOC)
	}
}
