/*
 * readmostly.pml - read-mostly duplication and its collapse (src/core/dup.c),
 * one page, checked with spin (tests/model/run-spin.sh --readmostly).
 *
 * The page stays in system memory; devices get read-only duplicates of it.
 * Actors:
 *   - the CPU thread: W stores to the page.  A store lands at once while
 *     the page is not write-protected; protected, it faults: a message to
 *     the service thread, then the thread sleeps until the protection is
 *     removed (UFFDIO_WRITEPROTECT's clear wakes it) and tries again.
 *   - the service thread (serve_locked): locks the page (waits for the
 *     holder: a parked fault), collapses the duplicates if PG_DUP is set,
 *     or removes a protection left without them, unlocks.
 *   - device d (1..NDEV): DUPS times, its read fault: a duplication
 *     (dup_batch: lock, write-protect, copy the CPU page into its frame,
 *     record it, PG_DUP, unlock), then its range fault (read_begin, the
 *     snapshot: its frame if PG_DUP and it has one, install under the
 *     page-table lock if read_retry says nothing changed), then an access
 *     through its entry.  Device 2 may instead write (-DDEV_WRITE): a
 *     migration with UHMM_MIGRATE_MOVE collapses first (lock, collapse),
 *     then the page is the device's to write.
 * Collapse (collapse_held): invalidation start (sequence odd, every
 * device's entry to the page removed, their accesses fenced: an access is
 * one step here), the frames freed, PG_DUP cleared, the protection removed
 * (the CPU store may go on), invalidation end.
 *
 * The property: an access through a device's entry reads the CPU page's
 * current data (a duplicate is never stale while a device can reach it),
 * and at the end the page holds every store.
 *
 * With -DDISCARD, an application madvise(MADV_DONTNEED) of the page
 * races them all: its REMOVE, handled by the service thread, is an
 * invalidation (every device's entry removed) around uhmm__page_zap: a
 * page nobody holds loses its duplicates there and then (and the kernel's
 * zap empties the CPU page); a page held is only marked ZAPPED, and its
 * holder's unlock drops the duplicates (uhmm__dup_drop_inv: a second
 * invalidation first, since the REMOVE's is over and a range fault since
 * may have installed an entry to a duplicate).  The madvise "returns"
 * (uhmm_sync) once the mark is gone.  Accesses while it is set may read
 * the old data (a read racing the discard), never a freed frame; after
 * it, the current data.
 *
 * With -DDISCARD -DFILL, a fill of zeros (filler: serve_zero, a CPU
 * fault's zero-around window) may hold the page when the REMOVE marks it:
 * it fills the missing page and clears the mark (uhmm__page_unzap), which
 * drops the duplicates first, invalidating (they are of the discarded
 * data, and the unlock no longer sees a discard).
 *
 * Mutations (must fail with an assertion):
 *   -DLATE_PROTECT     the duplication copies the page before it
 *                      write-protects it: a CPU store during duplication
 *                      lands after the copy and the device reads the old
 *                      data (the store is lost to it)
 *   -DEARLY_UNPROTECT  the collapse removes the protection before the
 *                      invalidation (the order the service thread had in
 *                      no-move mode before dup.c's first commit): the CPU
 *                      store lands while a device still reads its stale
 *                      duplicate
 *   -DDISCARD -DZAP_UNLOCK_NO_INV  the holder's unlock of a page ZAPPED
 *                      while held frees its duplicates without an
 *                      invalidation of its own (the code before this
 *                      check): a device range fault between the REMOVE's
 *                      invalidation and the unlock installed an entry to a
 *                      duplicate, and the device reads the freed frame
 *   -DDISCARD -DFILL -DUNZAP_KEEPS_DUP  a fill of zeros that held the page when
 *                      the REMOVE marked it clears the mark and keeps the
 *                      duplicates (the code before uhmm__page_unzap
 *                      dropped them): the unlock sees no discard, keeps
 *                      PG_DUP, and a device reads the discarded data
 */

#ifndef NDEV
#define NDEV 2
#endif
#ifndef W
#define W 2
#endif
#ifndef DUPS
#define DUPS 2
#endif

byte cpu_data = 0;          /* the CPU page: stores so far */
bool locked = false;        /* the page lock */
bool dupbit = false;        /* PG_DUP */
bool wp = false;            /* the CPU page is write-protected */
bool dup_valid[NDEV + 1];   /* device d holds a duplicate (frame) */
byte dup_data[NDEV + 1];    /* ... with this data */
bool pte[NDEV + 1];         /* device d's entry leads to its duplicate */
byte nseq = 0;              /* notifier sequence: odd while invalidating */
byte ninv = 0;            /* invalidations under way (nested: the
                             * sequence moves at the first start and the
                             * last end, notifier.c) */
byte stores = 0;            /* CPU stores done */
bool dev_wrote = false;
bool woke = false;          /* the faulting CPU thread was woken */
bool zapped = false;        /* PG_ZAPPED: discarded while held */
byte wiped = 0;             /* stores the discard wiped out */

chan fault = [1] of { bit };

inline lock_page() {
	atomic { !locked -> locked = true }
}

/* uhmm__invalidate_start: every device's entry removed (and fenced). */
inline inv_start() {
	atomic {
		if
		:: ninv == 0 -> nseq++
		:: else -> skip
		fi;
		ninv++;
		pte[1] = false;
		pte[2] = false
	}
}

inline inv_end() {
	atomic {
		ninv--;
		if
		:: ninv == 0 -> nseq++
		:: else -> skip
		fi
	}
}

/* The duplicates go: frames freed, PG_DUP cleared. */
inline drop_dups() {
	dup_valid[1] = false;
	dup_valid[2] = false;
	dupbit = false
}

/* uhmm__page_publish_unlock: a page ZAPPED while held loses its
 * duplicates (uhmm__dup_drop_inv: invalidation, then the frames). */
inline unlock_page() {
	do
	:: zapped ->
#ifndef ZAP_UNLOCK_NO_INV
		inv_start();
#endif
		drop_dups();
#ifndef ZAP_UNLOCK_NO_INV
		inv_end();
#endif
		/* the mark goes with the lock (one compare-and-swap) */
		atomic { zapped = false; locked = false };
		break
	:: atomic { !zapped -> locked = false };
		break
	od
}

/* collapse_held: the caller holds the page. */
inline collapse() {
#ifdef EARLY_UNPROTECT
	atomic { wp = false; woke = true };
#endif
	inv_start();
	dup_valid[1] = false;
	dup_valid[2] = false;
	dupbit = false;
#ifndef EARLY_UNPROTECT
	atomic { wp = false; woke = true };
#endif
	inv_end()
}

proctype cpu()
{
	byte i = 0;
	do
	:: i < W ->
		if
		:: atomic { !wp -> cpu_data++; stores++ }; i++
		:: atomic { wp -> fault ! 1 };
		   /* asleep until woken (the protection removed, or the
		    * fault served): then the store is tried again */
		   atomic { woke -> woke = false }
		fi
	:: else -> break
	od
}

proctype service()
{
	bit m;
end:	do
	:: fault ? m ->
		lock_page();
		if
		:: dupbit -> collapse()
		:: !dupbit && wp -> wp = false
		:: else -> skip
		fi;
		unlock_page();
		woke = true /* the fill finds the page there: EEXIST wakes */
	od
}

proctype device(byte d)
{
	byte k = 0, s, tmp;
	bool ent;
	do
	:: k < DUPS ->
		k++;
#ifdef DEV_WRITE
		if
		:: d == 2 && !dev_wrote ->
			/* a write: uhmm_migrate(MOVE) collapses, then the page
			 * is the device's (its own copy, written) */
			lock_page();
			if
			:: dupbit -> collapse()
			:: else -> skip
			fi;
			cpu_data++;
			dev_wrote = true;
			unlock_page();
			goto next
		:: else -> skip
		fi;
#endif
		/* dup_batch */
		lock_page();
		if
		:: !dup_valid[d] ->
#ifndef LATE_PROTECT
			wp = true;
#endif
			tmp = cpu_data;
#ifdef LATE_PROTECT
			wp = true;
#endif
			dup_data[d] = tmp;
			dup_valid[d] = true;
			dupbit = true
		:: else -> skip
		fi;
		unlock_page();
		/* range fault: read_begin, snapshot, install if not stale */
		atomic { (nseq % 2) == 0 -> s = nseq };
		ent = dupbit && dup_valid[d];
		atomic {
			if
			:: ent && nseq == s -> pte[d] = true
			:: else -> skip
			fi
		};
		/* an access through the entry (if any): never a freed frame;
		 * the current data unless a discard is under way */
		atomic {
			if
			:: pte[d] -> assert(dup_valid[d] && (zapped || dup_data[d] == cpu_data))
			:: else -> skip
			fi
		};
#ifdef DEV_WRITE
next:		skip
#endif
	:: else -> break
	od
}

#if defined(DISCARD) && defined(FILL)
/* A fill of zeros (service.c, serve_zero: a neighbour in a CPU fault's
 * zero-around window, or the faulting page): it locks the page, and fills
 * it only if it is missing, i.e. after the kernel's zap (here: once the
 * REMOVE has marked it ZAPPED while this fill held it).  Zeros in place,
 * uhmm__page_unzap clears the mark; the duplicates, of the discarded
 * data, go there first (uhmm__dup_drop_inv), since the unlock no longer
 * sees a discard. */
proctype filler()
{
	lock_page();
	if
	:: zapped ->
#ifndef UNZAP_KEEPS_DUP
		inv_start();
		drop_dups();
		inv_end();
#endif
		zapped = false
	:: else -> skip
	fi;
	unlock_page()
}
#endif

#ifdef DISCARD
/* madvise(MADV_DONTNEED): the REMOVE handled (service.c: invalidation
 * start, uhmm__ranges_zap, invalidation end), then uhmm_sync waits for
 * the holder's unlock. */
proctype discard()
{
	inv_start();
	atomic {
		/* the kernel's zap of the CPU page */
		wiped = wiped + cpu_data;
		cpu_data = 0;
		if
		:: !locked -> drop_dups() /* trylock: uhmm__page_zap unlocks it */
		:: else -> zapped = true
		fi
	};
	inv_end();
	!zapped
}
#endif

init {
	atomic {
		run service();
		run cpu();
		run device(1);
		run device(2);
#ifdef DISCARD
		run discard();
#ifdef FILL
		run filler();
#endif
#endif
	};
	/* every actor but the service thread done: the page holds every
	 * store (the CPU's W, and the device's) but those discarded */
	(_nr_pr == 2);
	assert(cpu_data + wiped == W + (dev_wrote -> 1 : 0))
}
