# install.cmake: `cmake --install` layout and the Debian package (set-up side, CMake).
# Included from CMakeLists.txt. Paths follow GNUInstallDirs and are decided at install
# time from CMAKE_INSTALL_PREFIX (so `cmake --install build --prefix /usr` and DESTDIR both
# hold): prefix /usr puts the configuration in /etc/tstats and the state in /var/lib/tstats,
# any other prefix P in P/etc/tstats and P/var/lib/tstats (/opt/X: /etc/opt/X, /var/opt/X).
include(GNUInstallDirs)
set(TSTATS_SYSCONFDIR "" CACHE PATH "Absolute directory of config.lua and tstats.env (default: from the prefix, /etc/tstats for /usr)")
set(TSTATS_SYSTEMD_UNITDIR "lib/systemd/system" CACHE PATH "systemd unit directory, relative to the prefix or absolute")

if(TARGET tstats)
  install(TARGETS tstats RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
endif()

# The stock Lua, for reference and for overriding through script_dir.
install(DIRECTORY ${CMAKE_SOURCE_DIR}/lua/ DESTINATION ${CMAKE_INSTALL_DATADIR}/tstats/lua)
# Examples: operator scripts (`tstats script FILE`), the default config, the secrets file.
install(DIRECTORY ${CMAKE_SOURCE_DIR}/lua/scripts/ DESTINATION ${CMAKE_INSTALL_DOCDIR}/examples/scripts)
install(FILES ${CMAKE_SOURCE_DIR}/config.lua ${CMAKE_SOURCE_DIR}/packaging/tstats.env
        DESTINATION ${CMAKE_INSTALL_DOCDIR}/examples)
install(FILES ${CMAKE_SOURCE_DIR}/README.md DESTINATION ${CMAKE_INSTALL_DOCDIR})
file(GLOB TS_DOC_FILES ${CMAKE_SOURCE_DIR}/docs/*.md)
install(FILES ${TS_DOC_FILES} DESTINATION ${CMAKE_INSTALL_DOCDIR})

# Everything whose path depends on the prefix in the GNU way (etc, var, the unit's paths),
# and the man pages, which the command-line module generates into ${CMAKE_BINARY_DIR}/man
# (tstats.1, tstats-<cmd>.1, tstats.conf.5, flat or in manN/ folders): whatever is there
# when installing is installed; none yet is said, not an error.
if(TARGET man)
  set(TS_MAN_BY_TARGET 1)   # the man page target installs its own pages
else()
  set(TS_MAN_BY_TARGET 0)
endif()
install(CODE "
  set(TS_MAN_BY_TARGET ${TS_MAN_BY_TARGET})
  set(TS_SRC \"${CMAKE_SOURCE_DIR}\")
  set(TS_BIN_DIR \"${CMAKE_BINARY_DIR}\")
  set(TS_SYSCONFDIR_OVERRIDE \"${TSTATS_SYSCONFDIR}\")
  set(TS_BINDIR_REL \"${CMAKE_INSTALL_BINDIR}\")
  set(TS_MANDIR_REL \"${CMAKE_INSTALL_MANDIR}\")
  set(TS_UNITDIR_REL \"${TSTATS_SYSTEMD_UNITDIR}\")
")
install(SCRIPT ${CMAKE_SOURCE_DIR}/cmake/install_etc.cmake)

# ---- Debian package: cpack -G DEB (from the build tree; no downloads) ----
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME tstats)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "tstats developers <tstats@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "Lua-scriptable Traffic Stats for Apache Traffic Control CDNs")
set(CPACK_PACKAGE_DESCRIPTION "tstats polls the Traffic Monitors of ATC CDNs, writes their stats to InfluxDB 1.x
and computes the daily summaries, drop-in compatible with ATC's Traffic Stats.")
# The install script lays out /etc and /var from the prefix: let it see /usr, staged by DESTDIR.
set(CPACK_SET_DESTDIR ON)
set(CPACK_INSTALL_PREFIX /usr)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
# Loaded with require() at run time (not linked), and used by the maintainer scripts.
set(CPACK_DEBIAN_PACKAGE_DEPENDS "lua-cjson, adduser")
set(CPACK_DEBIAN_PACKAGE_SUGGESTS "influxdb, postgresql-client")
# The package's own files are laid out for prefix /usr: /etc/tstats, /usr/lib/systemd/system.
set(TS_DEB_SYSCONFDIR /etc/tstats)
set(TS_SYSCONFDIR ${TS_DEB_SYSCONFDIR})
configure_file(${CMAKE_SOURCE_DIR}/packaging/debian/conffiles.in ${CMAKE_BINARY_DIR}/debian/conffiles @ONLY)
foreach(s postinst prerm postrm)
  file(COPY ${CMAKE_SOURCE_DIR}/packaging/debian/${s} DESTINATION ${CMAKE_BINARY_DIR}/debian
       FILE_PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ GROUP_EXECUTE WORLD_READ WORLD_EXECUTE)
endforeach()
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${CMAKE_BINARY_DIR}/debian/conffiles ${CMAKE_BINARY_DIR}/debian/postinst
    ${CMAKE_BINARY_DIR}/debian/prerm ${CMAKE_BINARY_DIR}/debian/postrm)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
include(CPack)
