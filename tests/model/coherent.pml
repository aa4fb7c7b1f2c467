/*
 * coherent.pml - a Promela model of the reclaim of a coherent page that a
 * fork child shares, racing an application discard of the page (issue 19,
 * the torture's hang), checked with spin by tests/model/run-spin.sh
 * --coherent (ctest: model.spin.coherent).
 *
 * The page starts in place on a coherent device (LOC_COH: present at its
 * address, its frame's slot a hole), shared copy-on-write with a fork
 * child, and held by R, a reclaim (uhmm__coh_reclaim, coherent.c): the
 * mirrors are told, the page lock is R's from the start.  Actors:
 *   - R: "not in place" (mincore): the frame is zeros; else UFFDIO_MOVE of
 *     the page into its frame: a present private page moves, a hole moves
 *     nothing (the frame's slot stays a hole: zeros), a present shared one
 *     is refused (EBUSY): then, unless the page is seen discarded (ZAPPED,
 *     or not in place: the look of 7bc8ee7), populate(): PG_POPULATE set
 *     under coh_pop_lock, MADV_POPULATE_WRITE (a present page: the write
 *     breaks the sharing; a missing one: a userfault, R asleep until woken,
 *     then again), PG_POPULATE cleared under the lock; and the move again.
 *     Then the publication: ZAPPED, an empty system page (the frame
 *     dropped); else LOC_DEV with the frame; unlocked, parked faults
 *     re-dispatched.
 *   - T: the application: madvise(DONTNEED) of the page (the REMOVE posted,
 *     T asleep until the service thread reads it, then the kernel's zap),
 *     and, after madvise returned, maybe a store (a missing page: a
 *     userfault, T asleep until woken, then again; a present shared one is
 *     copied on write by the kernel).
 *   - S: the service thread: reads the REMOVE and handles it before any
 *     fault read later (uhmm__page_zap: a held page marked ZAPPED; a free
 *     one on a device freed; in system memory nothing to do, the zap
 *     follows); serves a fault: on a held page, a missing fault on a page
 *     in populate is filled with zeros and ZAPPED cleared
 *     (uhmm__coh_serve_populate; a present one: just the wake), else
 *     parked until the unlock; on a free page, what serve_locked does (a
 *     device page brought home, a missing system page zero-filled, a
 *     present one only woken).  A fill wakes every thread asleep at the
 *     address.
 *
 * Data are sets of writes: bit 0 the data before the discard, bit 1 T's
 * store after it.  Checked at the end (every thread done): no page both on
 * the device and present at its address; a CPU load then reads T's store
 * if T made one, zeros otherwise (the discard erased the old data, the
 * store after it survives); no thread asleep for ever (invalid end state:
 * the hang).
 *
 * Mutations run-spin.sh must see caught:
 *   -DNO_SERVE    the service thread parks every fault on a held page (the
 *       code before the fix): R's populate waits for a fault nobody
 *       serves, an invalid end state.
 *   -DNO_UNZAP    the fill leaves ZAPPED: the publication drops the page
 *       R moved out, with T's store in it.
 *   -DNO_POPLOCK  the look at PG_POPULATE and the fill are two steps (and
 *       R changes the flag without the lock): a fill lands after R moved
 *       the page out, zeros present at an address whose page is on the
 *       device.
 */

#define W_OLD 1
#define W_APP 2

#define L_COH 0
#define L_DEV 1
#define L_CPU 2

#define RQ 0 /* R's populate */
#define TQ 1 /* T's store */

bit present = 1;       /* the page at its address (the CPU page table) */
bit shared = 1;        /* a fork child shares it: UFFDIO_MOVE says EBUSY */
byte vadata = W_OLD;   /* the data of the page at its address, if present */
byte framedata;        /* the data in the frame, once moved back */
byte loc = L_COH;
bit locked = 1;        /* R holds the page */
bit zapped;            /* PG_ZAPPED */
bit populate;          /* PG_POPULATE */
bit poplock;           /* uhmm_ctx.coh_pop_lock */

bit fq[2];             /* a fault message of R / T, not yet read */
bit waiting[2];        /* R / T asleep in a userfault */
bit parked[2];         /* its message parked on the page lock */

byte rm;               /* the REMOVE: 0 none, 1 posted, 2 read */
bit wrote;             /* T made its store */
bit r_done, t_done;

inline wake_all()
{
	waiting[RQ] = 0;
	waiting[TQ] = 0
}

inline pop_lock()
{
#ifndef NO_POPLOCK
	atomic { poplock == 0 -> poplock = 1 }
#else
	skip
#endif
}

inline pop_unlock()
{
#ifndef NO_POPLOCK
	poplock = 0
#else
	skip
#endif
}

proctype R()
{
	bit again;
	if
	:: atomic { !present -> framedata = 0 }; goto publish /* zapped already */
	:: atomic { present -> skip }
	fi;
	do
	:: atomic { present && !shared -> framedata = vadata; present = 0 }; break
	:: atomic { !present -> framedata = 0 }; break /* a hole: nothing moved */
	:: atomic { present && shared -> skip } ->     /* -EBUSY */
		assert(!again); /* one populate makes it private */
		if
		:: atomic { (zapped || !present) -> framedata = 0 }; break
		:: atomic { (!zapped && present) -> skip }
		fi;
		pop_lock();
		populate = 1;
		pop_unlock();
		do
		:: atomic { present -> shared = 0 }; break /* the write: private now */
		:: atomic { !present -> fq[RQ] = 1; waiting[RQ] = 1 };
		   waiting[RQ] == 0 /* asleep in the userfault, then again */
		od;
		pop_lock();
		populate = 0;
		pop_unlock();
		again = 1
	od;
publish:
	atomic {
		if
		:: zapped -> loc = L_CPU /* the frame dropped: an empty system page */
		:: else -> loc = L_DEV
		fi;
		zapped = 0;
		locked = 0
	};
	r_done = 1
}

proctype T()
{
	rm = 1;                                /* madvise(DONTNEED): REMOVE posted */
	rm == 2;                               /* read: the kernel zaps */
	atomic { present = 0; vadata = 0 };
	if
	:: skip ->                             /* a store after madvise returned */
		do
		:: atomic { present -> vadata = vadata | W_APP; shared = 0; wrote = 1 }; break
		:: atomic { !present -> fq[TQ] = 1; waiting[TQ] = 1 };
		   waiting[TQ] == 0
		od
	:: skip
	fi;
	t_done = 1
}

/* Serve the fault of thread i, read now. */
inline serve(i)
{
	if
	:: atomic { locked && !populate -> parked[i] = 1 }
#ifndef NO_SERVE
	:: atomic { locked && populate -> skip } ->
#ifdef NO_POPLOCK
		/* the flag seen; the fill is a step of its own */
		atomic {
			if
			:: !present -> present = 1; vadata = 0; shared = 0; zapped = 0
			:: else -> skip /* EEXIST */
			fi;
			wake_all()
		}
#else
		atomic { poplock == 0 -> poplock = 1 };
		atomic {
			if
			:: populate && locked && !present ->
				present = 1; vadata = 0; shared = 0;
#ifndef NO_UNZAP
				zapped = 0;
#endif
				wake_all()
			:: populate && locked && present -> wake_all() /* EEXIST */
			:: !(populate && locked) -> parked[i] = 1 /* as usual */
			fi
		};
		poplock = 0
#endif
#else
	:: atomic { locked && populate -> parked[i] = 1 }
#endif
	:: atomic {
		!locked ->
		if
		:: present -> skip
		:: !present && loc == L_DEV -> present = 1; vadata = framedata; loc = L_CPU
		:: !present && loc != L_DEV -> present = 1; vadata = 0
		fi;
		wake_all()
	   }
	fi
}

proctype S()
{
	do
	:: atomic { rm == 1 -> rm = 2 };       /* read the REMOVE ... */
		atomic {                       /* ... and handle it, before any fault read later */
			if
			:: locked -> zapped = 1
			:: !locked && loc == L_DEV -> loc = L_CPU /* the device copy freed */
			:: !locked && loc != L_DEV -> skip       /* the zap follows */
			fi
		}
	:: atomic { fq[RQ] -> fq[RQ] = 0 }; serve(RQ)
	:: atomic { fq[TQ] -> fq[TQ] = 0 }; serve(TQ)
	:: atomic { !locked && parked[RQ] -> parked[RQ] = 0 }; serve(RQ)
	:: atomic { !locked && parked[TQ] -> parked[TQ] = 0 }; serve(TQ)
	:: atomic { r_done && t_done && rm != 1 -> break }
	od
}

init
{
	byte seen;
	atomic { run R(); run T(); run S() };
	(r_done && t_done && _nr_pr == 1);
	assert(!(loc == L_DEV && present));
	if
	:: present -> seen = vadata
	:: !present && loc == L_DEV -> seen = framedata
	:: !present && loc != L_DEV -> seen = 0
	fi;
	assert(seen == (wrote -> W_APP : 0))
}
