/*
 * page.pml - a Promela model of uhmm's per-page protocol, checked with spin
 * by tests/model/run-spin.sh (ctest: model.spin.page).
 *
 * One managed page; NCPU CPU threads that touch it; the fault-service
 * thread; an application thread migrating it to the device and home; a
 * device that does atomics on it through its mirror (one page-table entry)
 * and resolves its own faults by taking the page exclusively.  With
 * -DDISCARD, CPU thread 1 first discards the page (madvise(MADV_DONTNEED),
 * then uhmm_sync) and only then loads.
 *
 * Data.  Every write (the page's initial data, a CPU store, a device
 * atomic) has a bit of its own; each copy of the page - in place (cpu), the
 * device page (dev), the reserve slot (slot) - holds the set of writes made
 * to it or to the copy it was copied from: a write to X adds its bit to X
 * only, a copy from X to Y makes Y = X, zeros are the empty set.  `req` is
 * the set a read must see: every write so far, until a discard.  The
 * discard empties it and remembers what it erased (`pre`); from then on
 * only writes after it are required, and none of `pre` may be seen again.
 * A lost update (a write that slips past a copy or lands in a stale copy,
 * hard point 2) or discarded data coming back breaks
 *   - the assertion of every CPU read and device atomic (READ_OK);
 *   - the final check: once every actor is done and the page is at rest,
 *     the copy at its published location.
 * Reads racing the discard (between the madvise call and its return for
 * the CPU, and until uhmm_sync returned for the device) may see either.
 *
 * How the model maps to the code, what it abstracts away, and what spin
 * says: docs/ARCHITECTURE.md, "The model-checked page protocol".
 *
 * -DDISCARD adds the discard (madvise(DONTNEED) of the page by thread 1,
 * then uhmm_sync, then a load).  It found that a device range fault
 * returned, as final, a device page a REMOVE had marked ZAPPED while
 * another thread held it (fixed: rf_snapshot reports such a page empty;
 * -DRF_TAKES_ZAPPED is that bug, kept as a mutation).
 *
 * Mutations run-spin.sh must see caught:
 *   -DSTALE_INSTALL  serve_device ends its invalidation right after the
 *       callback instead of after the page is published (the fault that
 *       invalidate start/end fixed, see the top of notifier.c).  A device
 *       range fault in that window reads "on the device", passes
 *       read_retry, maps the device page, and its atomic is lost.
 *   -DLOST_KICK      the unlocker forgets to kick the service thread.
 *   With -DDISCARD:
 *   -DEARLY_INV_END  the REMOVE's invalidation ends before uhmm's state is
 *       zapped: a device range fault in between returns, as final, the
 *       device page the zap then frees.
 *   -DNO_CAS         publish_unlock stores the word it computed from its
 *       first look instead of compare-exchanging it: a ZAPPED set in
 *       between is lost, and the discarded copy is published.
 *   -DNO_ZAP_DISCARD a ZAPPED system page is unlocked without PG_DISCARD:
 *       a migration that locks it next carries the old data off before
 *       the kernel's zap comes.
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
/* The migrator's uhmm_migrate calls: to the device, home, to the device...
 * -DTO_DEV_TWICE: to the device, to the device again (where the page may
 * be already: nothing moves, no invalidation), home. */
#ifdef TO_DEV_TWICE
#define MIGRATIONS 3
#define TO_DEV(n) (n < 2)
#else
#define TO_DEV(n) (n % 2 == 0)
#endif
#ifndef MIGRATIONS
#define MIGRATIONS 2
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
#if defined(DISCARD) && NCPU < 2
#error "-DDISCARD needs NCPU 2: thread 1 discards"
#endif

/* The page. */
byte loc = CPU;            /* published location: the page word's loc bits */
bool locked = false;       /* PG_LOCKED (same word: publish+unlock is one op) */
bool parked = false;       /* PG_PARKED */
bool zapped = false;       /* PG_ZAPPED */
bool discard = false;      /* PG_DISCARD */
bool mapped = true;        /* present in the CPU page table */

/* The data: sets of writes (bit 0: the initial data; STALE, below).
 * `cpu` is the page in the CPU page table while mapped, else the page
 * moved out of it (by a migration or a grab, until it is published
 * elsewhere or moved back).  The device page and the slot hold garbage
 * until a copy or zeros are put there: STALE too. */
#define STALE 128
byte cpu = 1, dev = STALE, slot = STALE;
byte req = 1;              /* the writes a read must see */
byte pre = 0;              /* the writes the discard erased */
byte nwr = 1;              /* writes so far: the next one's bit */

/* The discard (-DDISCARD): the REMOVE message, the kernel's zap, the
 * discarding thread's uhmm_sync. */
#define RM_NONE    0       /* no madvise yet */
#define RM_POSTED  1       /* queued; madvise sleeps until it is read */
#define RM_READ    2       /* read by the service thread, being handled */
#define RM_HANDLED 3       /* handle_event done */
byte rm = RM_NONE;
bool kzapped = false;      /* the kernel zapped the page: madvise returned */
bool synced = false;       /* and uhmm_sync returned after it */
/* Installs (UFFDIO_COPY/MOVE of data into place) fail EAGAIN while a
 * REMOVE is queued, and the service thread, the only installer, handles
 * what it reads before it installs anything: an install is ordered before
 * the REMOVE's read or after its handling. */
#define CAN_INSTALL (rm == RM_NONE || rm == RM_HANDLED)

/* The checks.  A read of x by the CPU (the zap, and so madvise's return,
 * done) or by the device (uhmm_sync returned too): what is required and
 * nothing the discard erased.  Before any discard: exactly every write. */
#ifndef ONLY_ENTRY_CHECK
#define DATA_OK(x) ((x & pre) == 0 && (x & req) == req)
#else
#define DATA_OK(x) true   /* to see the final check on the entry alone */
#endif
#define CPU_READ_OK(x) (rm == RM_NONE -> x == req : (kzapped -> DATA_OK(x) : true))
#define DEV_READ_OK(x) (rm == RM_NONE -> x == req : (synced -> DATA_OK(x) : true))
/* A write to copy x; required unless it races the discard (CPU stores
 * after madvise returned are required, device ones after uhmm_sync).
 * Before the discard, a copy that misses a write holds data and is stale
 * for ever (until overwritten by a copy): which writes it misses does not
 * matter, only that it holds data the discard will erase.  So it becomes
 * STALE, one value (counted as discarded by the discard), which keeps the
 * states of the checks without a discard as they were with freshness bits. */
#define CANON(y) if :: y != 0 && y != req -> y = STALE :: else -> skip fi
#define WRITE(x, after) \
	x = x | (1 << nwr); \
	if \
	:: rm == RM_NONE -> req = req | (1 << nwr); CANON(cpu); CANON(dev); CANON(slot) \
	:: rm != RM_NONE && after -> req = req | (1 << nwr) \
	:: else -> skip \
	fi; \
	nwr++

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

/* What a reader of the page at rest finds at its published location (an
 * absent system page reads as zeros: a touch faults and zeros are filled). */
#define AT_LOC (loc == CPU -> (mapped -> cpu : 0) : (loc == DEV -> dev : slot))

/* uhmm__page_lock: futex sleep until unlocked, then take it. */
#define LOCK_PAGE	atomic { !locked -> locked = true }

/* uhmm__page_publish_unlock(where): replace the word by compare-exchange,
 * so with the last look at ZAPPED: zapped while held, the copy being
 * published is dropped and the page becomes an empty system page, marked
 * DISCARD (the kernel's zap may still be on its way); else the location is
 * stored, DISCARD kept only if the page stays where it was.  Bump the page
 * seq if the location changed (every fault message read so far goes
 * stale), clear the lock bits, kick the service thread if a fault was
 * parked (eventfd: a pending kick is enough).  Use inside atomic.
 *
 * -DNO_CAS: the word is stored as computed from a first look (PUB_LOOK, a
 * step of its own at the publications of a grab and of a migration to the
 * device), so a ZAPPED set in between is overwritten. */
#ifdef NO_CAS
byte look = 2;             /* the holder's first look: 0, 1; 2: none apart */
#define PUB_LOOK	atomic { look = zapped };
#define ZAPPED_SEEN	(look == 2 -> zapped : look == 1)
#define LOOK_DONE	look = 2
#else
#define PUB_LOOK	/* one step with the store */
#define ZAPPED_SEEN	zapped
#define LOOK_DONE	skip
#endif
#ifdef NO_ZAP_DISCARD
#define ZAP_DISCARD	(discard && loc == CPU)   /* mutation: no DISCARD added */
#else
#define ZAP_DISCARD	true
#endif
inline publish_unlock(where) {
	if
	:: ZAPPED_SEEN ->
		discard = ZAP_DISCARD;
		if
		:: loc != CPU ->
			loc = CPU;
			if :: wf -> wf = false; ws = true :: else -> skip fi;
			if :: pf -> pf = false; ps = true :: else -> skip fi
		:: else -> skip
		fi
	:: else ->
		if
		:: loc != where ->
			loc = where;
			discard = false;
			if :: wf -> wf = false; ws = true :: else -> skip fi;
			if :: pf -> pf = false; ps = true :: else -> skip fi
		:: else -> skip
		fi
	fi;
	zapped = false;
	LOOK_DONE;
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

/* uhmm__page_zap, one step (the service thread's trylock, and the unlock
 * of a page it just took): a free page is taken, a device copy or a
 * reserve slot released, a system page marked DISCARD (the kernel's zap
 * follows); a page another thread holds (or the service thread itself,
 * when the REMOVE is read by a drain during an install) is marked ZAPPED. */
inline page_zap() {
	if
	:: !locked ->
		if :: loc == CPU -> discard = true :: else -> skip fi;
		locked = true;
		publish_unlock(CPU)
	:: locked -> zapped = true
	fi
}

/* handle_event(REMOVE), after the read (rm == RM_READ). */
inline handle_remove() {
#ifndef EARLY_INV_END
	INV_START_THEN(skip);
	atomic { page_zap() };
	atomic { inv_end_body(); rm = RM_HANDLED }
#else
	INV_START_THEN(skip);
	INV_END;                  /* the bug: the mirrors may read again */
	atomic { page_zap(); rm = RM_HANDLED }
#endif
}

/* An install by the service thread (serve_device, serve_revoke): while a
 * REMOVE is queued the ioctl fails EAGAIN and settle() drains it: it is
 * read and handled, the page (held) marked ZAPPED; then the install is
 * dropped.  `stmts` installs and publishes; the page is held. */
#define SERVICE_INSTALL(stmts) \
	do \
	:: atomic { rm == RM_POSTED -> rm = RM_READ }; handle_remove() \
	:: atomic { rm != RM_POSTED -> stmts; break } \
	od

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

/* The install and publication of a page coming home, unless it was
 * discarded meanwhile (install_pages: ZAPPED, dropped; publish_unlock then
 * releases the copy).  Use inside atomic. */
#define INSTALL_FROM(copy) \
	if :: !zapped -> cpu = copy; mapped = true :: else -> skip fi; \
	publish_unlock(CPU)

/* The install, for the migrator: an install request, served by the service
 * thread (serve_requests), waited for. */
#define REQUEST_INSTALL(stmts)	atomic { CAN_INSTALL -> stmts }

/* A device page comes home (serve_device; batch_to_system with the
 * service thread's install): invalidate and fence, copy the device page
 * into a slot, UFFDIO_MOVE it in (DONTWAKE), publish and unlock, wake,
 * end the invalidation.  The lock is held.  INSTALL: SERVICE_INSTALL (the
 * service thread for itself) or REQUEST_INSTALL. */
#ifdef STALE_INSTALL
#define HOME_FROM_DEV(INSTALL) \
	INV_START_THEN(skip); \
	atomic { inv_end_body() };   /* the bug: settles before publishing */ \
	INSTALL(INSTALL_FROM(dev)); \
	wake_all()
#else
#define HOME_FROM_DEV(INSTALL) \
	INV_START_THEN(skip); \
	INSTALL(INSTALL_FROM(dev)); \
	wake_all(); \
	INV_END
#endif

/* A page held exclusively comes back (serve_revoke; uhmm__revoke_range):
 * REVOKE to the holder, which fences; the slot's page is moved back into
 * place, published, unlocked; wake; end.  The lock is held. */
#define REVOKE(INSTALL) \
	INV_START_THEN(skip); \
	INSTALL(INSTALL_FROM(slot)); \
	wake_all(); \
	INV_END

proctype cpu_thread(byte id) {
	byte n = 0;
#ifdef DISCARD
	if
	:: id == 1 ->
		/* madvise(MADV_DONTNEED): the REMOVE is posted, madvise sleeps
		 * until the service thread has read it, then the kernel zaps
		 * the page table, then madvise returns. */
		atomic { rm = RM_POSTED; pre = req | STALE; req = 0 };
		atomic { rm >= RM_READ ->
			if :: mapped -> mapped = false; cpu = 0 :: else -> skip fi;
			kzapped = true };
		atomic { rm == RM_HANDLED -> synced = true }   /* uhmm_sync */
	:: else -> skip
	fi;
#endif
	do
	:: n == CPU_OPS -> break
	:: atomic { n < CPU_OPS && mapped && STORES(id) ->   /* a store */
		WRITE(cpu, kzapped); n++ }
progress_w:	skip
	:: atomic { n < CPU_OPS && mapped && LOADS(id) ->    /* a load */
		assert(CPU_READ_OK(cpu)); n++ }
progress_r:	skip
	:: atomic { n < CPU_OPS && !mapped ->  /* userfault: sleep */
		waiting[id] = true; pending[id] = true };
	   (!waiting[id])                      /* woken: retry */
	od;
	atomic { cpu_done++ }
}

/* serve_zero: fill zeros if the page is absent (EEXIST if present; either
 * way wake); a fill clears DISCARD and ZAPPED (zeros are what a discard
 * leaves).  The fill fails EAGAIN while a REMOVE is queued: drained, the
 * page (held) is marked ZAPPED.  Absent without a discard would mean zeros
 * over the page's data. */
#define ZERO_FILL \
	if \
	:: !mapped -> assert(rm != RM_NONE); cpu = 0; mapped = true; \
		discard = false; zapped = false \
	:: else -> skip \
	fi; \
	publish_unlock(CPU)

/* The service thread serves the messages it has read (handle_msgs) or
 * taken from the parked list (redispatch_parked), one by one: serve_fault.
 * Stale ones first: the other order only adds a wake-up after the page
 * was served, which wakes nobody who would not fault again. */
inline serve_all() {
	do
	:: atomic { ws && !locked -> ws = false };   /* stale: unlock, wake */
	   wake_all()
	:: atomic { ws && locked -> ws = false; ps = true; parked = true }
	:: atomic { !ws && wf && !locked && loc == CPU && rm != RM_POSTED ->
		wf = false; ZERO_FILL };              /* serve_zero */
	   wake_all()
	:: atomic { !ws && wf && !locked && loc == CPU && rm == RM_POSTED ->
		wf = false; locked = true; rm = RM_READ };
	   handle_remove();                           /* serve_zero, drained */
	   atomic { ZERO_FILL };
	   wake_all()
	:: atomic { !ws && wf && !locked && loc == DEV -> wf = false; locked = true };
	   HOME_FROM_DEV(SERVICE_INSTALL)             /* serve_device */
	:: atomic { !ws && wf && !locked && loc == EXCL -> wf = false; locked = true };
	   REVOKE(SERVICE_INSTALL)                    /* serve_revoke */
	:: atomic { !ws && wf && locked -> wf = false; pf = true; parked = true }
	:: atomic { !wf && !ws -> break }
	od
}

/* service_main: poll; read the messages queued: fault messages, each with
 * its page's seq snapshot (one message per page and snapshot: a duplicate
 * would only wake twice), and a REMOVE, handled before the faults of its
 * batch are served; serve them; redispatch the parked faults. */
#if NCPU > 1
#define PENDING (pending[0] || pending[1])
#define TAKE_PENDING pending[0] = false; pending[1] = false
#else
#define PENDING pending[0]
#define TAKE_PENDING pending[0] = false
#endif
proctype service() {
end:	do
	:: atomic { PENDING && rm != RM_POSTED -> TAKE_PENDING; wf = true };
	   serve_all();
	   atomic { wf = pf; ws = ps; pf = false; ps = false };
	   serve_all()
	:: atomic { PENDING && rm == RM_POSTED ->      /* with the REMOVE */
		TAKE_PENDING; wf = true; rm = RM_READ };
	   handle_remove();
	   serve_all();
	   atomic { wf = pf; ws = ps; pf = false; ps = false };
	   serve_all()
	:: atomic { !PENDING && rm == RM_POSTED -> rm = RM_READ };  /* alone */
	   handle_remove()
	:: atomic { kick?_ -> wf = pf; ws = ps; pf = false; ps = false };
	   serve_all()
	od
}

/* An application thread: uhmm_migrate(page, device), then home, ... */
proctype migrator() {
	byte n = 0;
	bool hole;
	do
	:: n == MIGRATIONS -> break
	:: else ->
		LOCK_PAGE;
		if
		:: TO_DEV(n) ->    /* batch_to_device */
			if
			:: loc == CPU ->
				/* UFFDIO_MOVE out; a hole (nothing there) or a
				 * page marked DISCARD becomes a zero device page */
				INV_START_THEN(hole = (!mapped || discard); mapped = false);
				PUB_LOOK
				if
				:: atomic { if :: hole -> dev = 0 :: else -> dev = cpu fi;
					publish_unlock(DEV); hole = false }
				:: atomic { hole ->            /* zeroing failed */
					publish_unlock(CPU); hole = false }
				:: atomic { !hole && CAN_INSTALL ->  /* copy failed: */
					if :: !zapped -> mapped = true :: else -> skip fi;
					publish_unlock(CPU) };         /* restore */
				   wake_all()
				fi;
				INV_END
			:: loc == EXCL ->                              /* K_FROM_EXCL */
				INV_START_THEN(skip);
				PUB_LOOK
				atomic { dev = slot; publish_unlock(DEV) };
				INV_END
			:: loc == DEV ->                               /* K_STAY */
				atomic { publish_unlock(DEV) }
			fi
		:: else ->         /* uhmm__migrate_range_to_system */
			if
			:: loc == DEV -> HOME_FROM_DEV(REQUEST_INSTALL)
			:: loc == EXCL -> REVOKE(REQUEST_INSTALL)
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
 * (uhmm_make_exclusive, grab_batch: a hole or a page marked DISCARD
 * becomes zeros in the slot), then installs what a range fault says with
 * read_begin / range fault / pt_lock + read_retry. */
proctype device() {
	byte n = 0, tries = 0, l;
	bool grab = false;
	do
	:: n == DEV_OPS || GIVE_UP -> break
	:: atomic { n < DEV_OPS && dev_map -> dev_inflight = true };
	   atomic {   /* the atomic, under the unit lock */
		if
		:: dev_target == DEV -> assert(DEV_READ_OK(dev)); WRITE(dev, synced)
		:: else -> assert(DEV_READ_OK(slot)); WRITE(slot, synced)
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
		INV_START_THEN(                            /* UFFDIO_MOVE */
			if :: mapped && !discard -> slot = cpu :: else -> slot = 0 fi;
			mapped = false);
		PUB_LOOK
		atomic { publish_unlock(EXCL); grab = false };
		INV_END
	   :: else -> skip
	   fi;
	   atomic { ninv == 0 -> snap_ok = true;     /* read_begin; range fault */
#ifndef RF_TAKES_ZAPPED
		/* rf_snapshot: a device page marked ZAPPED (its holder's
		 * unlock frees the copy) is reported empty, never final. */
		if :: zapped -> l = CPU :: else -> l = loc fi };
#else
		l = loc };   /* the mutation: the bug 12aa339 fixed */
#endif
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
	/* Everyone done and the page at rest: its copy holds every write
	 * required, nothing discarded; the device's entry, if any, leads to
	 * that copy (not to a device page or slot released). */
	atomic { cpu_done == NCPU && mig_done && dev_done && !locked && ninv == 0 ->
		assert((rm == RM_NONE -> AT_LOC == req : DATA_OK(AT_LOC)));
		assert(!dev_map || dev_target == loc)
	}
}
