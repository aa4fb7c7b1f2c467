/*
 * remake.pml - a page UFFDIO_MOVE keeps refusing, taken by copy: one page,
 * checked with spin by tests/model/run-spin.sh --remake (ctest:
 * model.spin.remake).
 *
 * The default is the code's protocol since this round's fifth session, the
 * copy out (migrate.c "refused" and the no-move path; exclusive.c
 * grab_by_copy): R locks, protects, reads, discards the CPU's copy as its
 * own and publishes the bytes elsewhere (a device page, a reserve slot: the
 * page is then *away*, its PTE missing; a fault brings it home).  Nothing
 * is put back.  The publication honours ZAPPED as every unlock does: an
 * application discard made while R held the page drops the copy.
 * -DREMAKE is the protocol before it, the remake (uhmm__remake_present,
 * removed), described next: the copy back in place.
 *
 * A page of a THP once shared with a fork child, which UFFDIO_MOVE keeps
 * refusing, is made again as a page of its own.  The page is in system
 * memory (LOC_CPU), present, with the data W_OLD.  Actors:
 *   - R, the remake (a migration's thread): mincore (a missing page is
 *     left alone); lock the page; keep it only if LOC_CPU and not DISCARD
 *     or ZAPPED (else unlock); write-protect it (UFFDIO_WRITEPROTECT: a
 *     write to it now faults; a missing page has nothing to protect);
 *     read its bytes through /proc/self/mem (a missing page fails the read:
 *     the GUP of /proc/self/mem takes no userfault; then the protection is
 *     removed and the page left as it is); set PG_OWNDISC; MADV_DONTNEED
 *     (the REMOVE posted, R asleep until the service thread reads it, then
 *     the kernel's zap); uhmm__events_wait (until the service thread has
 *     handled what it read: events_busy clear); clear PG_OWNDISC; unless
 *     the page is ZAPPED, UFFDIO_COPY the saved bytes back into the
 *     missing PTE (refused with EAGAIN while an event is posted and not
 *     read, the kernel's mmap_changing: events_wait, again); unlock (the
 *     publication: ZAPPED becomes DISCARD), parked faults re-served.
 *     How the look at ZAPPED and the copy are made: see "The copy back".
 *   - W, a CPU writer: one store.  Present and not protected, it lands;
 *     protected, a write-protect userfault; missing, a missing userfault;
 *     either way W sleeps until woken, then tries again.
 *   - L, a CPU reader: one load, racing all of it (a missing page: a
 *     userfault, as W's).
 *   - D, the application: madvise(DONTNEED) of the page (its REMOVE
 *     posted, D asleep until it is read, then the kernel's zap), then a
 *     load.
 *   - S, the service thread: reads the events in the order they were
 *     posted (events_busy set from the read until they are handled) and
 *     handles each (uhmm__ranges_own_discard / uhmm__page_zap: a held page
 *     marked OWNDISC has the mark consumed, its own REMOVE; a held page
 *     without it is marked ZAPPED; an unheld page in system memory is
 *     marked DISCARD, the zap follows); serves a fault: on a held page
 *     parked until the unlock; else (serve_locked) a write-protect fault
 *     unprotects, a missing page is filled with zeros (not while an event
 *     is posted and unread, mmap_changing: S reads it first), a present
 *     one only woken.  A fill or an unprotect wakes the thread.
 *
 * Data are sets of writes: W_OLD the data before, W_APP W's store.  The
 * ghost `mem` is what a plain anonymous page would hold: W's store adds
 * W_APP when it lands, the kernel's zap of D's discard empties it; the
 * remake's own discard and copy back must be invisible.  Checked: a load
 * reads `mem`, or, while D's madvise is on its way (its REMOVE posted, its
 * zap not yet made), zeros and the stores made since (the discard may
 * take effect early: a page ZAPPED is not copied back); so D's load, after
 * its madvise returned, reads zeros or W's later store, never W_OLD; no
 * store is lost; at the end the page (present: its data; missing: zeros)
 * holds `mem`; nobody asleep for ever (invalid end state).
 *
 * The copy back.  As committed (a3f752d, -DUNBRACKETED), R looks at
 * ZAPPED once, then copies; an EAGAIN makes it wait for the events
 * (events_wait) and copy again without looking again.  spin finds two
 * ways for the old data to come back after D's madvise returned: (1) D's
 * REMOVE posted after the look makes the copy fail with EAGAIN; R waits
 * for it to be handled (ZAPPED now) and copies anyway; (2) the look made,
 * D's REMOVE read (the copy is no more refused: mmap_changing is down),
 * D's zap made, then R's copy lands, before the service thread handled
 * the REMOVE (-DRELOOK, a look again after each EAGAIN, still has (2)).
 * The default is the bracketed copy (the code since 7e85eac): R enters a bracket while no event is
 * between its read and its handling (events_busy clear), the service
 * thread reads no event while R is in it (as events_begin waits for the
 * SIGBUS installers, uhmm__sb_enter), and the look and the copy are made
 * inside it; an EAGAIN leaves it, the event is read and handled, and R
 * enters and looks again.
 *
 * Options: -DNO_D (no application discard), -DNO_W (no writer), -DNO_L (no
 *   reader), -DREMAKE (the remake instead of the copy out), with it
 *   -DUNBRACKETED (the copy back as committed: must fail) and -DRELOOK (a
 *   look at ZAPPED after each EAGAIN; fails too).  The mutations below
 *   apply to the copy out (the default) and to the remake alike.
 * Mutations of the bracketed protocol run-spin.sh must see caught
 * (assertions):
 *   -DEARLY_OWNCLEAR  PG_OWNDISC cleared as soon as madvise returns,
 *       without events_wait: the own REMOVE, handled later, is taken for
 *       the application's, the page ZAPPED and not copied back: data lost.
 *   -DIGNORE_ZAPPED   the copy back (the publication elsewhere) ignores
 *       ZAPPED: the application's discard made meanwhile is undone, the
 *       old data back after it.
 *   -DNO_WP           no write-protection: W's store between the read and
 *       the DONTNEED is lost.
 */

#define W_OLD 1
#define W_APP 2

#define WQ 0 /* W's fault */
#define DQ 1 /* D's fault */
#define LQ 2 /* L's fault */

/* What a load may read (the ghost, below): the plain page's content
 * `mem`, with any of the `slack` stores; while D's madvise is on its way
 * (between its REMOVE and its zap: win), also zeros with the stores made
 * since (the discard may take effect early). */
#define IN_MEM(v) (((v) & mem) == mem && ((v) & ~(mem | slack)) == 0)
#define READ_OK(v) (IN_MEM(v) || (win && ((v) & ~since) == 0))

#ifdef IGNORE_ZAPPED
#define SEES_ZAPPED false
#else
#define SEES_ZAPPED zapped
#endif

#define EV_OWN 1 /* R's REMOVE */
#define EV_APP 2 /* D's REMOVE */

bit present = 1;      /* the page in the CPU page table */
byte vadata = W_OLD;  /* its data, if present */
bit wp;               /* the PTE is write-protected */
byte mem = W_OLD;     /* ghost: a plain page's content */
bit win;              /* ghost: D's madvise between its REMOVE and its zap */
byte since;           /* ghost: the stores landed since win was set */
byte slack;           /* ghost: stores made during D's madvise, which may
                         have survived its zap (the discard took effect
                         before them) */

bit locked;           /* the page lock */
bit zapped;           /* PG_ZAPPED */
bit discard;          /* PG_DISCARD */
bit owndisc;          /* PG_OWNDISC */

chan evq = [2] of { byte }; /* events posted, not read (FIFO) */
byte mmchg;           /* the kernel's mmap_changing: posted, not read
                         (the number of messages in evq) */
bit rd[3];            /* event e read */
bit busy;             /* events_busy */
bit copying;          /* R inside its bracket (the copy back) */

bit fq[3];            /* a fault message of W / D / L, not yet read */
bit wpf[3];           /* ... a write-protect fault */
bit waiting[3];       /* W / D / L asleep in a userfault */
bit parked[3];        /* its message parked on the page lock */

bit away;             /* the page lives elsewhere (copy out): PTE missing */
byte awaydata;        /* ... its data there */

bit r_done, w_done, d_done, l_done;

/* Post event e and sleep until it is read, then the kernel's zap. */
inline dontneed(e)
{
	atomic {
		evq!e; mmchg++;
		if
		:: e == EV_APP -> win = 1; since = 0
		:: else -> skip
		fi
	};
	rd[e] == 1;
	atomic {
		present = 0; vadata = 0; wp = 0;
		if
		:: e == EV_APP -> mem = 0; slack = since; win = 0
		:: else -> skip
		fi
	}
}

/* The publication (page unlock): ZAPPED becomes DISCARD; parked faults
 * are re-served by S once it sees the page free. */
inline unlock()
{
	atomic {
		if
		:: zapped -> discard = 1
		:: else -> skip
		fi;
		zapped = 0;
		owndisc = 0;
		locked = 0
	}
}

proctype R()
{
	byte buf;
	if
	:: atomic { !present -> skip }; goto done   /* mincore: not there */
	:: atomic { present -> skip }
	fi;
	atomic { !locked -> locked = 1 };
	if
	:: atomic { (discard || zapped) -> skip }; unlock(); goto done
	:: atomic { !(discard || zapped) -> skip }
	fi;
#ifndef NO_WP
	atomic {
		if
		:: present -> wp = 1
		:: else -> skip /* a missing page: nothing to protect */
		fi
	};
#endif
	/* pread of /proc/self/mem */
	if
	:: atomic { present -> buf = vadata }
	:: atomic { !present -> wp = 0 }; unlock(); goto done /* EIO, unprotected */
	fi;
	owndisc = 1;
	dontneed(EV_OWN);
#ifndef EARLY_OWNCLEAR
	busy == 0;             /* uhmm__events_wait */
#endif
	owndisc = 0;
#ifndef REMAKE
	/* The copy out: published elsewhere with the bytes read; a page
	 * ZAPPED while held is published DISCARD, the copy dropped. */
	atomic {
		if
		:: SEES_ZAPPED -> discard = 1
		:: else -> away = 1; awaydata = buf
		fi;
		zapped = 0;
		owndisc = 0;
		locked = 0
	};
	goto done;
#endif
#ifdef UNBRACKETED
	/* As committed: the look at ZAPPED, then copy_back, whose EAGAIN
	 * retries (after events_wait) look no more (-DRELOOK: they do). */
	if
	:: atomic { SEES_ZAPPED -> skip }    /* the application discarded it */
	:: atomic { !SEES_ZAPPED -> skip } ->
		do
		:: atomic { mmchg == 0 -> assert(!present); present = 1; vadata = buf }; break
		:: atomic { mmchg != 0 -> skip }; busy == 0 /* EAGAIN: events_wait */
#ifdef RELOOK
			; if
			:: atomic { SEES_ZAPPED -> skip }; break
			:: atomic { !SEES_ZAPPED -> skip }
			fi
#endif
		od
	fi;
#else
	/* The bracket: entered while no event is between its read and its
	 * handling (events_busy clear); no event is read until it is left
	 * (S's read waits for it, as events_begin waits for the SIGBUS
	 * installers).  The look at ZAPPED and the copy inside it. */
	do
	:: atomic { busy == 0 -> copying = 1 };
		if
		:: atomic { SEES_ZAPPED -> copying = 0 }; break
		:: atomic { !SEES_ZAPPED && mmchg == 0 ->
			assert(!present); present = 1; vadata = buf; copying = 0 }; break
		:: atomic { !SEES_ZAPPED && mmchg != 0 -> copying = 0 }; /* EAGAIN */
			mmchg == 0 || busy == 1 /* S reads it: events_wait, again */
		fi
	od;
#endif
	unlock();
done:
	r_done = 1
}

proctype W()
{
	do
	:: atomic { present && !wp -> vadata = vadata | W_APP; mem = mem | W_APP;
		     since = since | W_APP }; break
	:: atomic { present && wp -> fq[WQ] = 1; wpf[WQ] = 1; waiting[WQ] = 1 };
	   waiting[WQ] == 0
	:: atomic { !present -> fq[WQ] = 1; wpf[WQ] = 0; waiting[WQ] = 1 };
	   waiting[WQ] == 0
	od;
	w_done = 1
}

proctype D()
{
	dontneed(EV_APP);      /* madvise(DONTNEED) returned */
	do
	:: atomic { present -> assert(IN_MEM(vadata)); mem = vadata; slack = 0 }; break
	:: atomic { !present -> fq[DQ] = 1; wpf[DQ] = 0; waiting[DQ] = 1 };
	   waiting[DQ] == 0
	od;
	d_done = 1
}

proctype L()
{
	do
	:: atomic { present -> assert(READ_OK(vadata));
		     if
		     :: !win -> mem = vadata; slack = 0 /* seen: the content */
		     :: else -> skip
		     fi }; break
	:: atomic { !present -> fq[LQ] = 1; wpf[LQ] = 0; waiting[LQ] = 1 };
	   waiting[LQ] == 0
	od;
	l_done = 1
}

/* Serve the fault of thread i, read now (or parked until now). */
inline serve(i)
{
	atomic {
		if
		:: locked -> parked[i] = 1
		:: else ->
			if
			:: wpf[i] -> wp = 0 /* unprotected (serve_locked) */
			:: else -> skip
			fi;
			if
			:: !present && away -> present = 1; vadata = awaydata; away = 0 /* home */
			:: !present && !away -> present = 1; vadata = 0; discard = 0 /* zero fill */
			:: else -> skip /* EEXIST */
			fi;
			waiting[i] = 0
		fi
	}
}

proctype S()
{
	byte e;
	do
	:: atomic { mmchg > 0 && !copying -> evq?e; mmchg--; rd[e] = 1; busy = 1 };
		atomic {               /* handled (page_zap) */
			if
			:: locked && owndisc -> owndisc = 0 /* its own: consumed */
			:: locked && !owndisc -> zapped = 1
			:: !locked -> discard = 1; away = 0 /* the zap follows; elsewhere: freed */
			fi;
			busy = 0
		}
	/* a fill waits for the events posted (settle) */
	:: atomic { fq[WQ] && (locked || present || mmchg == 0) -> fq[WQ] = 0 }; serve(WQ)
	:: atomic { fq[DQ] && (locked || present || mmchg == 0) -> fq[DQ] = 0 }; serve(DQ)
	:: atomic { !locked && parked[WQ] && (present || mmchg == 0) -> parked[WQ] = 0 }; serve(WQ)
	:: atomic { !locked && parked[DQ] && (present || mmchg == 0) -> parked[DQ] = 0 }; serve(DQ)
	:: atomic { fq[LQ] && (locked || present || mmchg == 0) -> fq[LQ] = 0 }; serve(LQ)
	:: atomic { !locked && parked[LQ] && (present || mmchg == 0) -> parked[LQ] = 0 }; serve(LQ)
	:: atomic { r_done && w_done && d_done && l_done && mmchg == 0 -> break }
	od
}

init
{
	atomic {
		run S(); run R();
#ifndef NO_W
		run W();
#else
		w_done = 1;
#endif
#ifndef NO_L
		run L();
#else
		l_done = 1;
#endif
#ifndef NO_D
		run D()
#else
		d_done = 1
#endif
	};
	(r_done && w_done && d_done && l_done && _nr_pr == 1);
	assert(!locked);
	assert(IN_MEM(present -> vadata : (away -> awaydata : 0)))
}
