/*
 * cohdiscard.pml - an application discard of a coherent page in place,
 * racing migrations of the page (src/core/page.c uhmm__page_zap and
 * uhmm__page_publish_unlock, coherent.c, migrate.c), one page, checked
 * with spin by tests/model/run-spin.sh --coherent (ctest:
 * model.spin.coherent).  coherent.pml models the reclaim's populate; this
 * is the discard step of 6f6024b.
 *
 * The page starts in place on a coherent device (LOC_COH: the device
 * frame's page mapped at the page's address, the CPU reading and writing
 * it without a fault), unheld, with the data W_OLD.  Actors:
 *   - D, the application: madvise(DONTNEED) of the page (its REMOVE
 *     posted, D asleep until the service thread reads it, then the
 *     kernel's zap of whatever is present at the address), then a load.
 *   - W, a CPU writer: one store, racing all of it (present: it lands, in
 *     place for LOC_COH; missing: a userfault, W asleep until woken, then
 *     again).
 *   - M, migrations of the page (coherent reclaim or eviction,
 *     uhmm_migrate home or to a device), MIGS of them, each to a device or
 *     home as it happens: the page lock (waits for the holder); LOC_COH is
 *     reclaimed first (UFFDIO_MOVE of the page at its address into its
 *     frame; a missing page leaves the frame a hole, zeros), which leaves
 *     a device page (LOC_DEV); home, a device page is installed at the
 *     address by the service thread (between events: before the read of
 *     an event, whose zap follows, or after its handling; not if ZAPPED);
 *     to a device, a system page is moved into a frame (UFFDIO_MOVE), and
 *     a DISCARD one is a hole (zeros: its zap may be on its way); a move
 *     of a page is refused while an event is posted and unread (the
 *     kernel's mmap_changing: M tries again).  The publication: ZAPPED,
 *     an empty system page with DISCARD (the copy dropped); else the new
 *     place.
 *   - S, the service thread: reads the REMOVE and handles it before any
 *     fault read later (uhmm__page_zap: a held page marked ZAPPED; a free
 *     device page freed, an empty system page; a free page in the CPU
 *     page table, system memory or coherent in place, marked DISCARD and
 *     published as a system page, the DISCARD kept); serves a fault: on a
 *     held page parked until the unlock; on a free one (serve_locked) a
 *     missing system page filled with zeros (DISCARD cleared), a device
 *     page brought home, a coherent page found missing (the kernel zapped
 *     it) published an empty system page and the thread woken to fault
 *     again, a present page only woken; a fill or a move waits for an
 *     event posted to be read.
 *
 * Data are sets of writes: W_OLD the data before, W_APP W's store.  The
 * ghost `mem` is what a plain page would hold: W's store adds W_APP when
 * it lands, the kernel's zap of D's discard empties it.  Checked: a load
 * reads `mem`, or, while D's madvise is on its way (its REMOVE posted, its
 * zap not made), zeros and the stores made since (the discard may take
 * effect early); so D's load, after madvise returned, reads zeros or W's
 * later store, never W_OLD; at the end no page both on a device and
 * present at its address, the page holds `mem`; nobody asleep for ever.
 *
 * Options: -DNO_W (no writer), -DMIGS=n (n migrations, default 2).
 * Mutation run-spin.sh must see caught (an assertion):
 *   -DNO_COH_DISCARD   the unheld coherent page is published a system page
 *       without DISCARD: uhmm__page_zap does not mark it (before 6f6024b),
 *       or the publication drops the mark (loc changed; the handling is
 *       one step here, so the two are the same): a migration to a device
 *       between the REMOVE's read and its zap carries the old data off, the
 *       zap finds the address empty, and a load after madvise returned
 *       brings the discarded data back.
 */

#define W_OLD 1
#define W_APP 2

#define L_COH 0
#define L_DEV 1
#define L_CPU 2

#define WQ 0 /* W's fault */
#define DQ 1 /* D's fault */

#ifndef MIGS
#define MIGS 2
#endif

/* What a load may read (the ghost, below): the plain page's content
 * `mem`, with any of the `slack` stores; while D's madvise is on its way
 * (between its REMOVE and its zap: win), also zeros with the stores made
 * since (the discard may take effect early). */
#define IN_MEM(v) (((v) & mem) == mem && ((v) & ~(mem | slack)) == 0)
#define READ_OK(v) (IN_MEM(v) || (win && ((v) & ~since) == 0))


bit present = 1;      /* the page at its address (the CPU page table) */
byte vadata = W_OLD;  /* its data, if present */
byte framedata;       /* the data in the device frame (LOC_DEV) */
byte loc = L_COH;
byte mem = W_OLD;     /* ghost: a plain page's content */
bit win;              /* ghost: D's madvise between its REMOVE and its zap */
byte since;           /* ghost: the stores landed since win was set */
byte slack;           /* ghost: stores made during D's madvise, which may
                         have survived its zap (the discard took effect
                         before them) */

bit locked;           /* the page lock */
bit zapped;           /* PG_ZAPPED */
bit discard;          /* PG_DISCARD */

byte rm;              /* D's REMOVE: 0 none, 1 posted, 2 read, 3 handled */

bit fq[2];            /* a fault message of W / D, not yet read */
bit waiting[2];       /* W / D asleep in a userfault */
bit parked[2];        /* its message parked on the page lock */

bit m_done, w_done, d_done;

/* The service thread installs between events: not while one is posted
 * and unread (mmap_changing refuses it), nor between a read and its
 * handling (the service thread is busy with it). */
#define BETWEEN_EVENTS (rm == 0 || rm == 3)

proctype M()
{
	byte n;
	do
	:: n < MIGS ->
		n++;
		atomic { !locked -> locked = 1 };
		if
		:: atomic { loc == L_COH && rm != 1 ->  /* reclaim: out of place */
			if
			:: present -> framedata = vadata; present = 0
			:: else -> framedata = 0 /* a hole */
			fi;
			loc = L_DEV }
		:: atomic { loc != L_COH -> skip }
		fi;
		if
		:: skip -> /* home */
			if
			:: atomic { loc == L_DEV && BETWEEN_EVENTS ->
				if
				:: !zapped -> assert(!present); present = 1; vadata = framedata
				:: else -> skip
				fi;
				loc = L_CPU }
			:: atomic { loc == L_CPU -> skip }
			fi
		:: skip -> /* to a device */
			if
			:: atomic { loc == L_CPU && rm != 1 ->
				if
				:: discard -> framedata = 0 /* a hole */
				:: !discard && present -> framedata = vadata
				:: !discard && !present -> framedata = 0
				fi;
				present = 0;
				loc = L_DEV }
			:: atomic { loc == L_DEV -> skip }
			fi
		fi;
		atomic {                        /* the publication */
			if
			:: zapped ->
				if
				:: loc == L_DEV -> loc = L_CPU /* the copy dropped */
				:: else -> skip
				fi;
				discard = 1
			:: !zapped && loc == L_DEV -> discard = 0
			:: !zapped && loc == L_CPU -> skip /* (stays: DISCARD kept) */
			fi;
			zapped = 0;
			locked = 0
		}
	:: else -> break
	od;
	m_done = 1
}

proctype W()
{
	do
	:: atomic { present -> vadata = vadata | W_APP; mem = mem | W_APP;
		     since = since | W_APP }; break
	:: atomic { !present -> fq[WQ] = 1; waiting[WQ] = 1 };
	   waiting[WQ] == 0
	od;
	w_done = 1
}

proctype D()
{
	atomic { rm = 1; win = 1; since = 0 };  /* madvise(DONTNEED): posted */
	rm >= 2;                                /* read: the kernel zaps */
	atomic { present = 0; vadata = 0; mem = 0; slack = since; win = 0 };
	do
	:: atomic { present -> assert(IN_MEM(vadata)); mem = vadata; slack = 0 }; break
	:: atomic { !present -> fq[DQ] = 1; waiting[DQ] = 1 };
	   waiting[DQ] == 0
	od;
	d_done = 1
}

/* Serve the fault of thread i, read now (or parked until now). */
inline serve(i)
{
	atomic {
		if
		:: locked -> parked[i] = 1
		:: !locked && present -> waiting[i] = 0
		:: !locked && !present && loc == L_CPU ->
			present = 1; vadata = 0; discard = 0; waiting[i] = 0
		:: !locked && !present && loc == L_DEV ->
			present = 1; vadata = framedata; loc = L_CPU; discard = 0;
			waiting[i] = 0
		:: !locked && !present && loc == L_COH ->
			loc = L_CPU; waiting[i] = 0 /* the frame goes; again */
		fi
	}
}

proctype S()
{
	do
	:: atomic { rm == 1 -> rm = 2 };       /* read the REMOVE ... */
		atomic {                       /* ... and handle it (page_zap) */
			if
			:: locked -> zapped = 1
			:: !locked && loc == L_DEV -> loc = L_CPU; discard = 0
			:: !locked && loc == L_CPU -> discard = 1 /* the zap follows */
			:: !locked && loc == L_COH ->
#ifndef NO_COH_DISCARD
				discard = 1;   /* kept by the publication */
#endif
				loc = L_CPU    /* the zap follows */
			fi;
			rm = 3
		}
	:: atomic { fq[WQ] && (locked || present || rm != 1) -> fq[WQ] = 0 }; serve(WQ)
	:: atomic { fq[DQ] && (locked || present || rm != 1) -> fq[DQ] = 0 }; serve(DQ)
	:: atomic { !locked && parked[WQ] && (present || rm != 1) -> parked[WQ] = 0 }; serve(WQ)
	:: atomic { !locked && parked[DQ] && (present || rm != 1) -> parked[DQ] = 0 }; serve(DQ)
	:: atomic { m_done && w_done && d_done && rm == 3 -> break }
	od
}

init
{
	byte seen;
	atomic {
		run S(); run M(); run D();
#ifndef NO_W
		run W()
#else
		w_done = 1
#endif
	};
	(m_done && w_done && d_done && _nr_pr == 1);
	assert(!(loc == L_DEV && present));
	if
	:: present -> seen = vadata
	:: !present && loc == L_DEV -> seen = framedata
	:: !present && loc != L_DEV -> seen = 0
	fi;
	assert(IN_MEM(seen))
}
