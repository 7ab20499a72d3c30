# Writes a man page (cmake -P; CMake side of the build): runs `BIN help --man SECTION`
# and stores its output in OUT, so the pages come from the same command table as --help.
execute_process(COMMAND ${BIN} help --man ${SECTION} OUTPUT_FILE ${OUT}.tmp RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "man.cmake: ${BIN} help --man ${SECTION} failed (${rc})")
endif()
file(RENAME ${OUT}.tmp ${OUT})
