#!/usr/bin/env bash
# packages.sh [BUILDDIR] - build uhmm's Debian packages (cpack -G DEB;
# cmake/packaging.cmake), check them with lintian (an error fails), install
# them into a throw-away root with dpkg (dpkg-deb -x where dpkg cannot run:
# not root), then build a program against the installed files with
# pkg-config and with CMake's find_package, run it, run a tool and read a
# manual page, all from that root.
set -euo pipefail
cd "$(dirname "$0")/.."
b=${1:-build-pkg}
cmake -S . -B "$b" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_INSTALL_PREFIX=/usr \
	-DUHMM_INSTALL_RPATH=OFF -DUHMM_BUILD_TESTS=OFF -DUHMM_WERROR=ON >/dev/null
cmake --build "$b" -j2 >/dev/null
rm -f "$b"/*.deb
(cd "$b" && cpack -G DEB >/dev/null)
debs=("$b"/*.deb)
if [ ${#debs[@]} -ne 4 ]; then
	echo "packages.sh: expected 4 packages, got: ${debs[*]}" >&2
	exit 1
fi
echo "packages: ${debs[*]##*/}"
# Errors fail; warnings are printed.
lintian --tag-display-limit 0 --fail-on error "${debs[@]}" 2>&1 | grep -v 'root privileges' || true
lintian --fail-on error "${debs[@]}" >/dev/null 2>&1

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
if [ "$(id -u)" = 0 ]; then
	# A dpkg database of its own; --unpack: the files and the database,
	# no maintainer scripts (they would run ldconfig on this machine).
	mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates"
	: > "$root/var/lib/dpkg/status"
	dpkg --root="$root" --admindir="$root/var/lib/dpkg" --force-depends \
		--force-script-chrootless --unpack "${debs[@]}" >/dev/null
	dpkg --root="$root" --admindir="$root/var/lib/dpkg" -l | grep -E '^.U +(libuhmm0|libuhmm-dmirror0|libuhmm-dev|uhmm-tools) '
else
	for d in "${debs[@]}"; do dpkg-deb -x "$d" "$root"; done
fi

multiarch=$(gcc -print-multiarch)
libdir="$root/usr/lib/$multiarch"
export LD_LIBRARY_PATH="$libdir"
# pkg-config (the .pc file is relocatable).
PKG_CONFIG_PATH="$libdir/pkgconfig" pkg-config --modversion uhmm
cc -o "$root/pc-smoke" tests/install/smoke.c \
	$(PKG_CONFIG_PATH="$libdir/pkgconfig" pkg-config --cflags --libs uhmm)
"$root/pc-smoke"
# CMake's find_package.
cmake -S tests/install -B "$root/cmake-smoke" -DCMAKE_PREFIX_PATH="$root/usr" >/dev/null
cmake --build "$root/cmake-smoke" >/dev/null
"$root/cmake-smoke/smoke"
# A tool, and the shim preloaded into a program.
"$root/usr/bin/uhmm-demo" --size 8 >/dev/null
LD_PRELOAD="$libdir/libuhmm-dmirror.so.0" true
# A manual page, if man is here.
if command -v man >/dev/null; then
	man -l "$root/usr/share/man/man3/uhmm_migrate.3.gz" 2>/dev/null | grep -q 'uhmm_migrate'
	man -l "$root/usr/share/man/man1/uhmm-bench.1.gz" 2>/dev/null | grep -q 'uhmm-bench'
fi
echo "packages.sh: ok"
