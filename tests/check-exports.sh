#!/usr/bin/env bash
# check-exports.sh LIBUHMM LIBDMIRROR INCLUDEDIR MANDIR BINDIR
#
# The exported symbols are exactly the public API, and each has its page:
#  - libuhmm exports the calls of include/uhmm/*.h (version UHMM_0), the
#    three symbols the inline accessors of simdev.h reach, and uhmm's own
#    memory for libuhmm-dmirror (UHMM_PRIVATE): nothing else;
#  - every exported uhmm_* call is declared in a public header and has a
#    section 3 page in MANDIR (man3/NAME.3.gz);
#  - libuhmm-dmirror exports its uhmm_dmirror_* calls and the libc functions
#    it interposes, nothing else;
#  - every program uhmm installs (BINDIR/uhmm-*) has a section 1 page.
# MANDIR "none": the build has no man pages (UHMM_MAN off): pages unchecked.
set -euo pipefail
lib=$1 dm=$2 inc=$3 man=$4 bin=$5
fail=0
bad() { echo "check-exports: $*" >&2; fail=1; }

while read -r sym; do
	name=${sym%%@*}
	ver=${sym#*@}; ver=${ver#@}
	case "$ver:$name" in
	UHMM_0:uhmm__simdev_access | UHMM_0:uhmm__simdev_vec | UHMM_0:uhmm__sd_cur) continue ;;
	UHMM_0:uhmm_[a-z]*) ;;
	UHMM_PRIVATE:uhmm__umem_* | UHMM_PRIVATE:uhmm__lines_*) continue ;;
	UHMM_0:UHMM_0 | UHMM_PRIVATE:UHMM_PRIVATE) continue ;;
	*) bad "libuhmm exports $sym, which is not public API"; continue ;;
	esac
	grep -qE "\\b$name\\(" "$inc"/*.h || bad "libuhmm exports $name, declared in no public header"
	if [ "$man" != none ] && [ ! -e "$man/man3/$name.3.gz" ]; then
		bad "$name has no man page ($man/man3/$name.3.gz)"
	fi
done < <(nm -D --defined-only "$lib" | awk '{ print $3 }')

interposed=" open open64 openat openat64 __open_2 __open64_2 __openat_2 __openat64_2 close dup dup2 dup3 ioctl mmap mmap64 munmap mprotect mremap madvise "
while read -r name; do
	case $name in
	uhmm_dmirror_*)
		if [ "$man" != none ] && [ ! -e "$man/man3/$name.3.gz" ]; then
			bad "$name has no man page"
		fi
		;;
	*) [[ $interposed == *" $name "* ]] || bad "libuhmm-dmirror exports $name" ;;
	esac
done < <(nm -D --defined-only "$dm" | awk '{ print $3 }')

if [ "$man" != none ]; then
	for p in "$bin"/uhmm-*; do
		[ -x "$p" ] && [ -f "$p" ] || continue
		t=$(basename "$p")
		[ -e "$man/man1/$t.1.gz" ] || bad "the program $t has no man page"
	done
	[ -e "$man/man7/uhmm.7.gz" ] || bad "no uhmm(7)"
fi
[ $fail = 0 ] && echo "check-exports: ok"
exit $fail
