# The NumPy oracle (tests/oracle): it reproduces ROUTING.md §6, then `moec run` must
# match it on every MoE op and every example model, compiled and interpreted.
add_test(NAME oracle.selftest
         COMMAND ${SYSTEM_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/oracle/selftest.py)
foreach(engine interp native)
  add_test(NAME oracle.${engine}
           COMMAND ${SYSTEM_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/oracle/run_oracle.py
                   --moec $<TARGET_FILE:moec> --examples ${PROJECT_SOURCE_DIR}/examples
                   --work ${CMAKE_CURRENT_BINARY_DIR}/oracle-work-${engine} --engine ${engine})
  set_tests_properties(oracle.${engine} PROPERTIES ENVIRONMENT "MOEC_LDFLAGS=${MOEC_LDFLAGS}")
endforeach()
