/*
 * huge.pml - a Promela model of the split of a device huge page (issue 18:
 * a 2 MiB block on a device as one unit), checked with spin by
 * tests/model/run-spin.sh --huge (ctest: model.spin.huge).
 *
 * The block is two pages, A (0) and B (1), on the device as one unit at
 * the start: one 2 MiB device page (the backend's chunk HUGE, frames 0 and
 * 1), the block's flag naming the device (pstate.c, uhmm__pblk_huge), and
 * the device's page table mapping the block with one 2 MiB entry.  Each
 * page-level step is taken as page.pml checked it (lock, invalidate with
 * the device's fence, copy, publish, unlock); what this model adds is the
 * unit: the flag, the backend's chunk, and the device's entries.  Actors:
 *   - H0: a 4 KiB migration home of A (uhmm_migrate(A, 4K, NULL)).
 *   - H1: a CPU fault on B, the other half of the block, served by
 *     bringing B home; then the CPU stores to B.
 *   Both: lock the page; invalidate it (under pt_lock: a 2 MiB entry is
 *   split into the block's two 4 KiB entries, then the page's entry goes;
 *   the fence is the lane's access being atomic with it: the lane holds
 *   its unit lock from translation to the end of the access); copy the
 *   device frame home; publish, whose drop_copy splits the unit first
 *   (uhmm__huge_split: CAS of the flag to SPLITTING, the backend's split
 *   of the chunk, flag 0; a thread that finds SPLITTING waits for it) and
 *   then releases the page's frame (order 0: only a SPLIT chunk's frame
 *   may be freed so); unlock; invalidate end.
 *   - the device's lane: DEV_OPS atomics on A or B through its entries
 *     (the 2 MiB one or the page's); a miss goes to its fault thread.
 *   - the device's fault thread: read_begin (waits for the notifier's
 *     sequence to be even), a range fault's snapshot of both pages (HUGE
 *     when the flag names the device and both are on it), pt_lock and
 *     read_retry, then installs one 2 MiB entry (HUGE) or the 4 KiB
 *     entries of the pages on the device.
 *
 * Data are sets of writes (one bit a write: bit 0 the initial data, bit 1
 * the CPU's store to B, bit 2 the lane's atomics).  Checked: a lane access
 * through an entry finds the page on the device, in a frame allocated to
 * it, not being moved (no access after the invalidation's fence); the
 * backend never frees a frame of a HUGE chunk as a 4 KiB page, nor splits
 * a chunk that is not HUGE; at the end, every page's copy at its location
 * holds its every write, the flag is clear (both pages left), the chunk is
 * free, no entry is left; every thread ends (no deadlock).
 *
 * Mutations run-spin.sh must see caught:
 *   -DNO_SPLIT_WAIT  a page that finds another page's split in progress
 *       (SPLITTING) releases its frame without waiting: a 4 KiB free of a
 *       frame of a chunk still HUGE.
 *   -DNO_PT_SPLIT    an invalidation of one page of a 2 MiB entry leaves
 *       the entry: the lane accesses the page after the fence, while it is
 *       copied home (and its atomic is lost).
 */

#define A 0
#define B 1
#define NP 2

#define HUGE 0
#define SPLIT 1
#define FREE 2

#define DEVICE 1
#define SPLITTING 2

#ifndef DEV_OPS
#define DEV_OPS 2
#endif

bit lock[NP];
bit ondev[NP] = 1;          /* the page's location: device (1) or system */
bit moving[NP];             /* invalidated, not yet published */
byte devdata[NP] = 1;       /* the device frame's data */
byte cpudata[NP];           /* the system copy's data */
byte writes[NP] = 1;        /* every write made to the page (ghost) */

byte hflag = DEVICE;        /* the block's flag */
byte chunk = HUGE;          /* the backend's chunk */
bit falloc[NP];             /* SPLIT: frame i allocated */

bit pt_huge = 1;            /* the device's 2 MiB entry */
bit pte[NP];                /* its 4 KiB entries */
byte seq;                   /* the notifier's sequence: odd while invalidating */
byte ninv;                  /* invalidations in progress */

byte done;

inline invalidate_start(i)
{
	atomic {
		ninv++;
		seq = (ninv == 1 -> seq + 1 : seq); /* odd from the first */
		/* pt_lock: the device removes the page's entries */
#ifndef NO_PT_SPLIT
		if
		:: pt_huge -> pt_huge = 0; pte[A] = 1; pte[B] = 1
		:: else -> skip
		fi;
#endif
		pte[i] = 0;
		moving[i] = 1
	}
}

inline invalidate_end()
{
	atomic {
		ninv--;
		seq = (ninv == 0 -> seq + 1 : seq)
	}
}

/* drop_copy of page i's frame: split the unit first, then free. */
inline release_frame(i)
{
	bit won = 0;
	do
	:: atomic { hflag == DEVICE -> hflag = SPLITTING; won = 1 }; break
	:: atomic { hflag == 0 -> skip }; break
#ifdef NO_SPLIT_WAIT
	:: atomic { hflag == SPLITTING -> skip }; break
#endif
	od;
	if
	:: won ->
		atomic {
			assert(chunk == HUGE);
			chunk = SPLIT; falloc[A] = 1; falloc[B] = 1
		};
		hflag = 0
	:: else -> skip
	fi;
	/* the backend's free of one 4 KiB frame */
	atomic {
		assert(chunk == SPLIT && falloc[i]);
		falloc[i] = 0;
		if
		:: !falloc[A] && !falloc[B] -> chunk = FREE
		:: else -> skip
		fi
	}
}

proctype Home(byte i)
{
	atomic { lock[i] == 0 -> lock[i] = 1 };
	invalidate_start(i);
	cpudata[i] = devdata[i];          /* copy home */
	release_frame(i);                 /* publish: drop_copy */
	atomic { ondev[i] = 0; moving[i] = 0 };
	lock[i] = 0;                      /* unlock */
	invalidate_end();
	if
	:: i == B ->
		/* The CPU's store that faulted, once the page is home. */
		atomic { lock[B] == 0 && !ondev[B] -> cpudata[B] = cpudata[B] | 2;
			 writes[B] = writes[B] | 2 }
	:: else -> skip
	fi;
	done++
}

/* The lane: atomics through its entries; a miss asks the fault thread. */
bit want_fault;
proctype Lane()
{
	byte n = 0;
	byte j;
	do
	:: n < DEV_OPS ->
		if
		:: j = A
		:: j = B
		fi;
		atomic {
			if
			:: pt_huge || pte[j] ->
				assert(ondev[j] && !moving[j]);
				assert(chunk == HUGE || (chunk == SPLIT && falloc[j]));
				devdata[j] = devdata[j] | 4;
				writes[j] = writes[j] | 4
			:: else -> want_fault = 1
			fi
		};
		n++
	:: else -> break
	od;
	done++
}

proctype Fault()
{
	byte s;
	bit h, d0, d1;
	do
	:: want_fault ->
		want_fault = 0;
		/* read_begin: waits while invalidations run */
		atomic { (seq % 2) == 0 -> s = seq };
		/* range fault snapshot */
		d0 = ondev[A]; d1 = ondev[B];
		h = hflag == DEVICE && d0 && d1;
		atomic {
			if
			:: seq == s ->
				if
				:: h -> pt_huge = 1; pte[A] = 0; pte[B] = 0
				:: else -> pte[A] = d0; pte[B] = d1
				fi
			:: else -> skip /* retry: the lane faults again */
			fi
		}
	:: done == 3 -> break
	od
}

init
{
	atomic {
		run Home(A);
		run Home(B);
		run Lane();
		run Fault()
	};
	(done == 3 && _nr_pr == 1); /* every other thread ended */
	/* the end state */
	assert(!ondev[A] && !ondev[B]);
	assert(cpudata[A] == writes[A] && cpudata[B] == writes[B]);
	assert(hflag == 0 && chunk == FREE);
	assert(!pt_huge && !pte[A] && !pte[B])
}
