/*
 * page.pml - a Promela model of uhmm's per-page protocol, checked with spin.
 *
 * One managed page, two CPU threads, the fault-service thread, a migrating
 * application thread, and a device with a mirror (TLB entry) that does
 * atomics.  Data is a counter: every write (CPU store, device atomic) adds
 * one at the page's current location and to `version`; every CPU read
 * asserts that the page it maps holds `version`.  A lost update (hard
 * point 2: a write that slips past a copy) breaks the assertion.  (While
 * the service thread installs a page, it is mapped a moment before its
 * location says so, as in the code: CPU accesses in that moment are to the
 * right data.)
 *
 * How the model maps to the code (docs/ARCHITECTURE.md, "Model"):
 *   locked            the PG_LOCKED bit (page.c); blocking lock = futex
 *                     wait (uhmm__page_lock), service thread = trylock
 *   parked / kick     PG_PARKED + the eventfd kick (service.c: park,
 *                     redispatch_parked; page.c: after_unlock)
 *   mapped            the page is present in the CPU page table; UFFDIO_MOVE
 *                     out = mapped false, install = mapped true
 *   loc               LOC_CPU / LOC_DEV / LOC_EXCL in the page word
 *   seq (odd/even)    the notifier sequence (notifier.c): start makes it
 *                     odd and runs the device's callback, end makes it even
 *   dev_map           the device's page-table/TLB entry (simdev mmu.c)
 *   dev_inflight      a lane inside an access to device memory or an EXCL
 *                     slot, holding its unit lock: the fence waits for it
 *   waiting[i]        CPU thread i asleep in a userfault; a wake (UFFDIO_WAKE
 *                     or the install's wake) clears it; the thread re-runs
 *                     its access and faults again if the page is absent
 *
 * Checks (tests/model/run-spin.sh):
 *   safety:   assertions (no lost update, no access to an absent page) and
 *             invalid end states (deadlock), exhaustive
 *   liveness: non-progress cycles (livelock): with the migrator and the
 *             device doing a bounded number of operations, every CPU
 *             thread keeps completing accesses (progress labels)
 *
 * Set -DSTALE_INSTALL (run-spin.sh --bug) to model the fault fixed by
 * invalidate start/end: the sequence goes even right after the callback
 * instead of after the page is published; spin then finds a device write
 * that is lost (the device maps the page mid-copy).
 */

#define CPU  0
#define DEV  1
#define EXCL 2

#ifndef NCPU
#define NCPU 2
#endif
#ifndef CPU_OPS
#define CPU_OPS 1   /* accesses per CPU thread */
#endif
#ifndef MIGRATIONS
#define MIGRATIONS 2   /* to the device and back */
#endif
#define DEV_OPS 1
#ifndef DEV_TRIES
#define DEV_TRIES 2  /* device fault resolutions at most */
#endif

byte loc = CPU;
bool mapped = true;
byte cpu_val = 0, dev_val = 0, slot_val = 0;
byte version = 0;

bool locked = false;
byte nparked = 0;
chan kick = [1] of { bit };

byte seq = 0;            /* odd: an invalidation is in progress */
bool dev_map = false;
byte dev_target = DEV;
bool dev_inflight = false;

bool waiting[2];   /* NCPU <= 2 */
chan faults = [2] of { byte };
byte cpu_done = 0;

/* Unlock: wake the service thread if a fault was parked (eventfd: a kick
 * already pending is enough). */
inline unlock_page() {
	atomic {
		locked = false;
		if
		:: nparked > 0 && nfull(kick) -> kick!1  /* room: kick */
		:: nparked > 0 && full(kick) -> skip     /* a kick is pending */
		:: nparked == 0 -> skip
		fi
	}
}

/* Invalidation start: sequence odd, the device drops its entry and fences
 * (waits for the access in flight). */
inline inv_start() {
	seq++;
	dev_map = false;
	(!dev_inflight)
}
inline inv_end() {
	seq++
}

inline wake_all() {
	atomic { waiting[0] = false; waiting[1] = false }
}

proctype cpu_thread(byte id) {
	byte n = 0, v;
	do
	:: n == CPU_OPS -> break
	:: else ->
		if
		:: atomic { mapped -> cpu_val++; version++ } ;
		   n++
progress_w:	   skip
		:: atomic { mapped -> assert(cpu_val == version) } ;
		   n++
progress_r:	   skip
		:: atomic { !mapped -> waiting[id] = true; faults!id } ;
		   (!waiting[id])   /* asleep until woken, then retry */
		fi
	od;
	atomic { cpu_done++ }
}

/* What the service thread does with one fault message. */
inline dispatch() {
	if
	:: atomic { !locked -> locked = true } ->
		if
		:: mapped -> skip                      /* stale: already served */
		:: !mapped && loc == DEV ->
			inv_start();
#ifdef STALE_INSTALL
			inv_end();   /* the bug: settles before publishing */
#endif
			cpu_val = dev_val;             /* copy engine */
			mapped = true; loc = CPU;      /* install + publish */
#ifndef STALE_INSTALL
			inv_end()
#endif
		:: !mapped && loc == EXCL ->
			inv_start();                   /* REVOKE: holder fences */
			cpu_val = slot_val;
			mapped = true; loc = CPU;
			inv_end()
		fi;
		unlock_page();
		wake_all()
	:: atomic { locked -> nparked++ }          /* park: never sleep */
	fi
}

proctype service() {
	byte id;
	byte k;
end:	do
	:: faults?id -> dispatch()
	:: kick?_ ->
		atomic { k = nparked; nparked = 0 };
		do
		:: k == 0 -> break
		:: k > 0 -> k--; dispatch()
		od
	od
}

/* An application thread migrating the page to the device and back. */
proctype migrator() {
	byte n = 0;
	do
	:: n == MIGRATIONS -> break
	:: else ->
		atomic { !locked -> locked = true };   /* futex lock */
		if
		:: loc == CPU ->
			inv_start();
			mapped = false;                /* UFFDIO_MOVE out first */
			if
			:: dev_val = cpu_val; loc = DEV   /* copy, publish */
			:: mapped = true                  /* copy failed: restore */
			fi;
			inv_end()
		:: loc == DEV ->
			inv_start();
			cpu_val = dev_val;
			mapped = true; loc = CPU;
			inv_end()
		:: loc == EXCL -> skip
		fi;
		unlock_page();
		wake_all();
		n++
	od
}

/* The device: atomics through its mirror (dev_map, to dev_target); a miss
 * is resolved by its fault thread (make exclusive when the page is in
 * system memory) and installed with the read_begin / read_retry pattern:
 * the snapshot of where the page is counts only if the sequence did not
 * move. */
proctype device() {
	byte n = 0, s, l, tries = 0;
	do
	:: n == DEV_OPS || tries == DEV_TRIES -> break
	:: atomic { n < DEV_OPS && dev_map -> dev_inflight = true };
		atomic {   /* the atomic, where the mapping points */
			if
			:: dev_target == DEV -> dev_val++
			:: dev_target == EXCL -> slot_val++
			fi;
			version++
		};
		dev_inflight = false;
		n++
	:: atomic { n < DEV_OPS && !dev_map && tries < DEV_TRIES -> tries++ };
		atomic { !locked -> locked = true };
		if
		:: loc == CPU ->
			inv_start();           /* EXCLUSIVE */
			mapped = false;        /* UFFDIO_MOVE into the slot */
			slot_val = cpu_val;
			loc = EXCL;
			inv_end()
		:: else -> skip
		fi;
		unlock_page();
		atomic { (seq % 2 == 0) -> s = seq };   /* read_begin */
		l = loc;                                 /* range fault */
		atomic {                                 /* pt_lock + read_retry */
			if
			:: seq == s && l != CPU -> dev_map = true; dev_target = l
			:: else -> skip
			fi
		}
	od
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
	}
}
