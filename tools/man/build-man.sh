#!/bin/sh
# build-man.sh SRCDIR OUTDIR VERSION - the man pages: section 3 from the
# public headers (hdr2scd.py), sections 1 and 7 from docs/man/*.scd, all
# rendered by scdoc(1) into OUTDIR/man1, man3, man7, gzip'ed.
set -eu
src=$1 out=$2 version=$3
rm -rf "$out/scd" "$out/man1" "$out/man3" "$out/man7"
mkdir -p "$out/scd" "$out/man1" "$out/man3" "$out/man7"
python3 "$src/tools/man/hdr2scd.py" "$out/scd" "$version" "$src"/include/uhmm/*.h >/dev/null
for f in "$out"/scd/*.3.scd "$src"/docs/man/*.scd; do
	base=$(basename "$f" .scd)
	sec=${base##*.}
	# The version on every page's footer (sections 1 and 7 say "uhmm").
	sed "1s/\"uhmm\" \"uhmm manual\"/\"uhmm $version\" \"uhmm manual\"/" "$f" |
		scdoc > "$out/man$sec/$base"
done
for f in "$out"/scd/*.3.so; do
	[ -e "$f" ] || continue
	cp "$f" "$out/man3/$(basename "$f" .so)"
done
# Compressed, as installed pages are (man(1) reads them so; -n: the same
# bytes from the same text, whatever the time).
gzip -9nf "$out"/man1/* "$out"/man3/* "$out"/man7/*
