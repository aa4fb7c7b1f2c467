# Debian packages with CPack (`cpack -G DEB` in a build directory;
# scripts/packages.sh builds, checks with lintian and installs them):
#
#   libuhmm0          libuhmm.so.0 (the SONAME's number is UHMM_SOVERSION)
#   libuhmm-dmirror0  libuhmm-dmirror.so.0, the /dev/hmm_dmirror shim
#   libuhmm-dev       headers, libuhmm.so and libuhmm.a, pkg-config and CMake
#                     files, man pages of sections 3 and 7
#   uhmm-tools        uhmm-demo, uhmm-bench, uhmm-workloads, uhmm-trace,
#                     uhmm-replay, uhmm-topo, uhmm-stat and their pages
#
# Built for /usr (configure with -DCMAKE_INSTALL_PREFIX=/usr
# -DUHMM_INSTALL_RPATH=OFF, as scripts/packages.sh does).

set(UHMM_PKG_MAINTAINER "uhmm developers <maintainers@users.noreply.h-seed-f5fc1e38.example>")
set(UHMM_DEB_VERSION ${PROJECT_VERSION})

# Every package carries the copyright and a Debian changelog (gzip -9n:
# reproducible) in /usr/share/doc/<package>, as Debian policy asks.
string(TIMESTAMP UHMM_PKG_DATE "%a, %d %b %Y 00:00:00 +0000" UTC)
set(UHMM_PKG_CHANGELOG ${PROJECT_BINARY_DIR}/pkg/changelog)
file(WRITE ${UHMM_PKG_CHANGELOG}
"uhmm (${UHMM_DEB_VERSION}) unstable; urgency=medium\n\n"
"  * Release ${PROJECT_VERSION}: see CHANGELOG.md in the sources.\n\n"
" -- ${UHMM_PKG_MAINTAINER}  ${UHMM_PKG_DATE}\n")
add_custom_command(OUTPUT ${PROJECT_BINARY_DIR}/pkg/changelog.gz
  COMMAND gzip -9n -c ${UHMM_PKG_CHANGELOG} > ${PROJECT_BINARY_DIR}/pkg/changelog.gz
  DEPENDS ${UHMM_PKG_CHANGELOG})
add_custom_target(pkg_changelog ALL DEPENDS ${PROJECT_BINARY_DIR}/pkg/changelog.gz)
file(READ ${PROJECT_SOURCE_DIR}/LICENSE UHMM_LICENSE_TEXT)
string(REPLACE "\n\n" "\n .\n" UHMM_LICENSE_DEB "${UHMM_LICENSE_TEXT}")
string(REGEX REPLACE "\n([^ ])" "\n \\1" UHMM_LICENSE_DEB "${UHMM_LICENSE_DEB}")
file(WRITE ${PROJECT_BINARY_DIR}/pkg/copyright
"Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n"
"Upstream-Name: uhmm\n\n"
"Files: *\n"
"Copyright: 2026 the uhmm developers\n"
"License: Expat\n "
"${UHMM_LICENSE_DEB}")
foreach(comp lib dmirror dev tools)
  if(comp STREQUAL "lib")
    set(pkg libuhmm${UHMM_SOVERSION})
  elseif(comp STREQUAL "dmirror")
    set(pkg libuhmm-dmirror${UHMM_SOVERSION})
  elseif(comp STREQUAL "dev")
    set(pkg libuhmm-dev)
  else()
    set(pkg uhmm-tools)
  endif()
  string(TOUPPER ${comp} COMP)
  set(CPACK_DEBIAN_${COMP}_PACKAGE_NAME ${pkg})
  install(FILES ${PROJECT_BINARY_DIR}/pkg/copyright ${PROJECT_BINARY_DIR}/pkg/changelog.gz
          DESTINATION ${CMAKE_INSTALL_DATAROOTDIR}/doc/${pkg} COMPONENT ${comp})
endforeach()

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME uhmm)
set(CPACK_PACKAGE_VERSION ${UHMM_DEB_VERSION})
set(CPACK_PACKAGE_CONTACT ${UHMM_PKG_MAINTAINER})
set(CPACK_DEBIAN_PACKAGE_MAINTAINER ${UHMM_PKG_MAINTAINER})
set(CPACK_PACKAGE_HOMEPAGE_URL "https://h-seed-f5fc1e38.example/uhmm")
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_ALL lib dmirror dev tools)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
# libuhmm-dmirror needs libuhmm.so.0 of the package built beside it (its
# dependency on libuhmm0 comes from the component's, below).
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS_PRIVATE_DIRS ${PROJECT_BINARY_DIR})
# (Library packages: a shlibs file, and the ldconfig trigger instead of
# maintainer scripts that run ldconfig.)
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS ON)
file(WRITE ${PROJECT_BINARY_DIR}/pkg/triggers "activate-noawait ldconfig\n")
set(CPACK_DEBIAN_LIB_PACKAGE_CONTROL_EXTRA ${PROJECT_BINARY_DIR}/pkg/triggers)
set(CPACK_DEBIAN_DMIRROR_PACKAGE_CONTROL_EXTRA ${PROJECT_BINARY_DIR}/pkg/triggers)
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS_POLICY ">=")
set(CPACK_DEBIAN_ENABLE_COMPONENT_DEPENDS ON)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_LIB_PACKAGE_SECTION libs)
set(CPACK_DEBIAN_DMIRROR_PACKAGE_SECTION libs)
set(CPACK_DEBIAN_DEV_PACKAGE_SECTION libdevel)
set(CPACK_DEBIAN_TOOLS_PACKAGE_SECTION utils)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)
set(CPACK_COMPONENT_LIB_DESCRIPTION
"heterogeneous memory management for Linux processes, in user space
uhmm gives a process one virtual address space shared by the CPU and its
devices: pages migrate to a device's memory and come back when the CPU
touches them (userfaultfd); device page tables mirror the CPU's; device
memory is a cache, evicted under pressure.  A software device (simdev) is
built in.
.
This package contains the shared library.")
set(CPACK_COMPONENT_DMIRROR_DESCRIPTION
"uhmm's /dev/hmm_dmirror shim for programs of the kernel's HMM tests
Programs written for the Linux kernel's HMM test driver (lib/test_hmm.c,
/dev/hmm_dmirror0..3) run unchanged with LD_PRELOAD=libuhmm-dmirror.so.0,
on uhmm's software devices.
.
This package contains the shared library.")
set(CPACK_COMPONENT_DEV_DESCRIPTION
"heterogeneous memory management in user space - development files
uhmm gives a process one virtual address space shared by the CPU and its
devices.
.
This package contains the headers, the link libraries, pkg-config and
CMake files, and the manual pages of every call.")
set(CPACK_COMPONENT_TOOLS_DESCRIPTION
"heterogeneous memory management in user space - tools
uhmm-demo, uhmm-bench (benchmarks against baselines), uhmm-topo (the devices
and their links as a matrix), uhmm-workloads (a
suite of device workloads with oversubscription), uhmm-trace and
uhmm-replay (traces and their replay against policies), uhmm-stat (a
running program's devices, rates and residency, watched from outside).")
set(CPACK_COMPONENT_DEV_DEPENDS lib dmirror)
set(CPACK_COMPONENT_DMIRROR_DEPENDS lib)
set(CPACK_COMPONENT_TOOLS_DEPENDS lib)
include(CPack)
