# The Debian package etcd-sync_<version>_amd64.deb: CPack's DEB generator over the install rules
# at the end of CMakeLists.txt plus the files made here. scripts/package builds it and runs
# lintian; test/integration/package_test.cpp builds it, unpacks it and runs the binary from it.
#
# Layout (the prefix is /usr):
#   /usr/bin/etcd-sync                          stripped
#   /usr/lib/systemd/system/etcd-sync.service   conf/etcd-sync.service, ExecStart=/usr/bin/etcd-sync
#   /usr/share/doc/etcd-sync/README.md          and copyright (from LICENSE), changelog.gz
#   /usr/share/doc/etcd-sync/examples/          conf/ without conf/debian/
#   /usr/share/man/man1/etcd-sync.1.gz          conf/debian/etcd-sync.1
#   /usr/share/lintian/overrides/etcd-sync      conf/debian/etcd-sync.lintian-overrides (+ .debian12)
# postinst creates the etcd-sync system user and /etc/etcd-sync; postrm purge removes that
# directory when it is empty (conf/debian/postinst, conf/debian/postrm).
#
# The package is built on the Debian release it is for, with that release's dependencies
# (dpkg-shlibdeps). lintian on Debian 12 (2.116) and on Debian 13 shows no error and no warning for
# it, and with --display-info --pedantic only tags explained where they are overridden, in
# conf/debian/etcd-sync.lintian-overrides: hardening-no-bindnow and hardening-no-fortify-functions
# (the build flags are CMakeLists.txt's, shared with the binary every test runs), and on Debian 12
# also package-supports-alternative-init-but-no-init.d-script (a Type=notify service with a
# watchdog has no System V equivalent), in etcd-sync.lintian-overrides.debian12 (Debian 13's
# lintian dropped that tag and rejects an override of it). The unit goes to /usr/lib/systemd/system
# on both: Debian 13's lintian refuses /lib (aliased-location, after the /usr merge), and Debian
# 12's systemd reads both. The package test runs lintian and fails on any tag not overridden.

set(package_dir ${CMAKE_BINARY_DIR}/debian-package)
file(MAKE_DIRECTORY ${package_dir})
set(debian_dir ${CMAKE_SOURCE_DIR}/conf/debian)
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS
  ${CMAKE_SOURCE_DIR}/conf/etcd-sync.service ${CMAKE_SOURCE_DIR}/LICENSE ${debian_dir}/etcd-sync.1)

# Who the package names as its maintainer (the Maintainer: field and the changelog's trailer).
set(ETCD_SYNC_MAINTAINER "etcd-sync maintainers <maintainers@users.noreply.b-seed-34cb9932.example>"
  CACHE STRING "Maintainer of the Debian package: Name <email>")

# The unit as the package installs it: the binary is in /usr/bin, the README in /usr/share/doc.
file(READ ${CMAKE_SOURCE_DIR}/conf/etcd-sync.service unit)
foreach(pair
    "ExecStart=/usr/local/bin/etcd-sync|ExecStart=/usr/bin/etcd-sync"
    "Documentation=file:///usr/local/share/doc/|Documentation=file:///usr/share/doc/")
  string(REPLACE "|" ";" pair "${pair}")
  list(GET pair 0 from)
  list(GET pair 1 to)
  string(FIND "${unit}" "${from}" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "conf/etcd-sync.service has no \"${from}\" to turn into \"${to}\" for the package")
  endif()
  string(REPLACE "${from}" "${to}" unit "${unit}")
endforeach()
file(CONFIGURE OUTPUT ${package_dir}/etcd-sync.service CONTENT "${unit}" @ONLY)

# debian/copyright in the machine-readable format, from LICENSE (MIT, which Debian calls Expat).
file(READ ${CMAKE_SOURCE_DIR}/LICENSE license)
string(REGEX MATCH "Copyright \\(c\\) ([^\n]+)" _ "${license}")
set(copyright_holder "${CMAKE_MATCH_1}")
string(FIND "${license}" "Permission is hereby granted" text_start)
if(copyright_holder STREQUAL "" OR text_start EQUAL -1)
  message(FATAL_ERROR "LICENSE is not the MIT text cmake/packaging.cmake expects")
endif()
string(SUBSTRING "${license}" ${text_start} -1 license_text)
string(STRIP "${license_text}" license_text)
string(REPLACE "\n\n" "\n.\n" license_text "${license_text}")
string(REPLACE "\n" "\n " license_text "${license_text}")
file(CONFIGURE OUTPUT ${package_dir}/copyright @ONLY CONTENT
"Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: etcd-sync

Files: *
Copyright: ${copyright_holder}
License: Expat
 ${license_text}
")

# A native package's changelog: one entry for the version being packaged. Its date honours
# SOURCE_DATE_EPOCH (scripts/package sets it to the last commit's time), so the .deb is
# reproducible.
string(TIMESTAMP changelog_date "%a, %d %b %Y %H:%M:%S +0000" UTC)
file(CONFIGURE OUTPUT ${package_dir}/changelog @ONLY CONTENT
"etcd-sync (${PROJECT_VERSION}) unstable; urgency=medium

  * Built from the etcd-sync source tree at version ${PROJECT_VERSION}; the
    changes are in its git history.

 -- ${ETCD_SYNC_MAINTAINER}  ${changelog_date}
")

# Debian wants both compressed with gzip -9 and without a timestamp (-n).
foreach(pair "${package_dir}/changelog|changelog.gz" "${debian_dir}/etcd-sync.1|etcd-sync.1.gz")
  string(REPLACE "|" ";" pair "${pair}")
  list(GET pair 0 from)
  list(GET pair 1 to)
  execute_process(COMMAND gzip -9 -n -c INPUT_FILE ${from} OUTPUT_FILE ${package_dir}/${to}
                  RESULT_VARIABLE gzip_status)
  if(NOT gzip_status EQUAL 0)
    message(FATAL_ERROR "gzip ${from} failed: ${gzip_status}")
  endif()
endforeach()

# Strip as dh_strip does: CPack's plain `strip` keeps the .comment section (compiler versions),
# which lintian reports as binary-has-unneeded-section.
install(CODE "
  if(CMAKE_INSTALL_DO_STRIP)
    execute_process(COMMAND \"${CMAKE_OBJCOPY}\" --remove-section=.comment
                            \"\$ENV{DESTDIR}\${CMAKE_INSTALL_PREFIX}/bin/etcd-sync\"
                    RESULT_VARIABLE objcopy_status)
    if(NOT objcopy_status EQUAL 0)
      message(FATAL_ERROR \"objcopy --remove-section=.comment on etcd-sync failed: \${objcopy_status}\")
    endif()
  endif()")
install(FILES ${package_dir}/etcd-sync.service DESTINATION /usr/lib/systemd/system)
install(FILES ${package_dir}/copyright ${package_dir}/changelog.gz DESTINATION share/doc/etcd-sync)
install(FILES ${package_dir}/etcd-sync.1.gz DESTINATION share/man/man1)
# The overrides for the Debian release this build runs on (its VERSION_ID in /etc/os-release).
cmake_host_system_information(RESULT debian_release QUERY DISTRIB_VERSION_ID)
file(READ ${debian_dir}/etcd-sync.lintian-overrides overrides)
if(debian_release VERSION_LESS 13)
  file(READ ${debian_dir}/etcd-sync.lintian-overrides.debian12 overrides_debian12)
  string(APPEND overrides "\n${overrides_debian12}")
endif()
file(CONFIGURE OUTPUT ${package_dir}/etcd-sync.lintian-overrides CONTENT "${overrides}" @ONLY)
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS
  ${debian_dir}/etcd-sync.lintian-overrides ${debian_dir}/etcd-sync.lintian-overrides.debian12)
install(FILES ${package_dir}/etcd-sync.lintian-overrides DESTINATION share/lintian/overrides
        RENAME etcd-sync)

# --- CPack -------------------------------------------------------------------------------------
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME etcd-sync)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_VENDOR "The etcd-sync authors")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)  # etcd-sync_<version>_<arch>.deb
set(CPACK_DEBIAN_PACKAGE_MAINTAINER "${ETCD_SYNC_MAINTAINER}")
set(CPACK_DEBIAN_PACKAGE_SECTION database)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
# Shared-library dependencies come from dpkg-shlibdeps (libpq5, libgrpc++1.51, ...); the postinst
# needs adduser.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS adduser)
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA ${debian_dir}/postinst ${debian_dir}/postrm)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "keeps etcd and PostgreSQL in sync in both directions")
# The extended description; CPack puts the summary above it as the synopsis.
set(CPACK_DEBIAN_PACKAGE_DESCRIPTION
"etcd-sync mirrors every revision of the etcd (v3 API) keys under a prefix
into the PostgreSQL table etcd, and applies the changes applications write
into the outbox table etcd_wal to etcd, with revision-based conflict
detection. It runs as a systemd service (etcd-sync.service).")
include(CPack)
