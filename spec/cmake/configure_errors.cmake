# The build's own checks (CMake side, run by ctest `cmake_configure_errors` as
# `cmake -DTREE=<source tree> -DWORK=<scratch dir> [-DGENERATOR=..] -P` this file).
# Copies the tree's build inputs into WORK and configures copies of it: the intact
# copy must configure; with one listed source removed (a module's, a C test's, the
# simulator's, the oracle's), with a module linking a target nobody defined, or with
# pkg-config unable to find a required library, the configure must fail and name
# what is missing. libmicrohttpd missing fails with or without the simulator: tstats'
# own HTTP listener (/metrics, /health, the status page) is built on it too.
if(NOT TREE OR NOT WORK)
  message(FATAL_ERROR "usage: cmake -DTREE=DIR -DWORK=DIR -P configure_errors.cmake")
endif()
set(gen_args)
if(GENERATOR)
  set(gen_args -G "${GENERATOR}")
endif()
file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK})
set(failures 0)

# copy_tree(DST): the files a configure reads (sources are only checked for existence).
function(copy_tree dst)
  file(MAKE_DIRECTORY ${dst})
  file(COPY ${TREE}/CMakeLists.txt ${TREE}/config.lua DESTINATION ${dst})
  foreach(d cmake include src lua tools packaging spec/c spec/bench spec/oracle spec/cmake)
    get_filename_component(parent ${dst}/${d} DIRECTORY)
    file(MAKE_DIRECTORY ${parent})
    file(COPY ${TREE}/${d} DESTINATION ${parent})
  endforeach()
endfunction()

# expect(NAME OK|FAIL PATTERN SRC [ENV...] -- [CMAKE ARGS...])
function(expect name want pattern src)
  set(envs)
  set(args)
  set(in_args OFF)
  foreach(a ${ARGN})
    if(a STREQUAL "--")
      set(in_args ON)
    elseif(in_args)
      list(APPEND args ${a})
    else()
      list(APPEND envs ${a})
    endif()
  endforeach()
  execute_process(COMMAND ${CMAKE_COMMAND} -E env ${envs} ${CMAKE_COMMAND} ${gen_args} -S ${src} -B ${src}/build ${args}
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  set(all "${out}${err}")
  set(ok ON)
  if(want STREQUAL "OK" AND NOT rc EQUAL 0)
    set(ok OFF)
  elseif(want STREQUAL "FAIL" AND rc EQUAL 0)
    set(ok OFF)
  endif()
  if(ok AND pattern AND NOT all MATCHES "${pattern}")
    set(ok OFF)
  endif()
  if(ok)
    message(STATUS "ok   ${name} (configure exit ${rc})")
  else()
    message(STATUS "FAIL ${name}: wanted ${want} matching '${pattern}', configure exit ${rc}:\n${all}")
    math(EXPR f "${failures} + 1")
    set(failures ${f} PARENT_SCOPE)
  endif()
endfunction()

# The intact tree configures; otherwise every failure below would prove nothing.
copy_tree(${WORK}/intact)
expect("intact tree configures" OK "" ${WORK}/intact --)

# One listed source missing at a time.
foreach(f src/lp.c src/api.c src/main.c spec/c/test_scan.c tools/sim/tm.c spec/oracle/scan_yajl.c
          spec/bench/bench_pipeline.c)
  string(MAKE_C_IDENTIFIER "${f}" id)
  copy_tree(${WORK}/missing_${id})
  file(REMOVE ${WORK}/missing_${id}/${f})
  string(REPLACE "." "\\." fre "${f}")
  expect("without ${f}" FAIL "source ${fre} does not exist" ${WORK}/missing_${id} --)
endforeach()

# A module that links a module nobody defined (a typo, or a module dropped from the list).
copy_tree(${WORK}/bad_lib)
file(APPEND ${WORK}/bad_lib/CMakeLists.txt "ts_module(ts_probe SOURCES src/buf.c LIBS ts_base ts_no_such_module)\n")
expect("module linking an undefined target" FAIL "ts_probe links ts_no_such_module, which is not a target" ${WORK}/bad_lib --)

# Libraries found through pkg-config: a directory holding the system's .pc files
# (symlinked) except the one left out stands in for a machine without it.
execute_process(COMMAND pkg-config --variable pc_path pkg-config OUTPUT_VARIABLE pc_path OUTPUT_STRIP_TRAILING_WHITESPACE)
string(REPLACE ":" ";" pc_dirs "${pc_path}")
function(pc_dir_without dst lib)
  file(MAKE_DIRECTORY ${dst})
  foreach(d ${pc_dirs})
    file(GLOB pcs ${d}/*.pc)
    foreach(pc ${pcs})
      get_filename_component(n ${pc} NAME)
      if(NOT n STREQUAL "${lib}.pc" AND NOT EXISTS ${dst}/${n})
        file(CREATE_LINK ${pc} ${dst}/${n} SYMBOLIC)
      endif()
    endforeach()
  endforeach()
endfunction()
pc_dir_without(${WORK}/pc_no_mhd libmicrohttpd)
pc_dir_without(${WORK}/pc_no_curl libcurl)
copy_tree(${WORK}/no_mhd)
expect("no libmicrohttpd, simulator on" FAIL "libmicrohttpd" ${WORK}/no_mhd PKG_CONFIG_LIBDIR=${WORK}/pc_no_mhd --)
copy_tree(${WORK}/no_mhd_nosim)
expect("no libmicrohttpd, -DTS_SIM=OFF" FAIL "libmicrohttpd" ${WORK}/no_mhd_nosim PKG_CONFIG_LIBDIR=${WORK}/pc_no_mhd -- -DTS_SIM=OFF)
copy_tree(${WORK}/no_curl)
expect("no libcurl" FAIL "libcurl" ${WORK}/no_curl PKG_CONFIG_LIBDIR=${WORK}/pc_no_curl -- -DTS_SIM=OFF)

if(failures GREATER 0)
  message(FATAL_ERROR "${failures} configure check(s) failed")
endif()
file(REMOVE_RECURSE ${WORK})
message(STATUS "all configure checks passed")
