# Runs the compiler with -fsyntax-only on SOURCE and prints its output.
# Called by ctest (tests/sagas/CMakeLists.txt): the compile-fail tests pass
# when that output matches the static_assert they expect; the control test
# requires a clean compile (EXPECT=compiles).
string(REPLACE "|" ";" includes "${INCLUDES}")
string(REPLACE "|" ";" definitions "${DEFINITIONS}")
string(REPLACE "|" ";" options "${OPTIONS}")
set(args)
foreach(dir IN LISTS includes)
  if(dir)
    list(APPEND args "-I${dir}")
  endif()
endforeach()
foreach(def IN LISTS definitions)
  if(def)
    list(APPEND args "-D${def}")
  endif()
endforeach()
list(APPEND args ${options})
execute_process(
  COMMAND "${CXX}" -std=c++20 -fsyntax-only ${args} "${SOURCE}"
  RESULT_VARIABLE rc
  OUTPUT_VARIABLE out
  ERROR_VARIABLE err)
message("${out}${err}")
if(EXPECT STREQUAL "compiles")
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${SOURCE} must compile but did not")
  endif()
  message("compiled cleanly")
elseif(rc EQUAL 0)
  message(FATAL_ERROR "${SOURCE} compiled, but it must be rejected")
endif()
