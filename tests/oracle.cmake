# The NumPy oracle (tests/oracle): it reproduces ROUTING.md §6, then `moec run` must
# match it on every MoE op and every example model, compiled and interpreted.
add_test(NAME oracle.selftest
         COMMAND ${SYSTEM_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/oracle/selftest.py)
foreach(engine interp native)
  add_test(NAME oracle.${engine}
           COMMAND ${SYSTEM_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/oracle/run_oracle.py
                   --moec $<TARGET_FILE:moec> --examples ${PROJECT_SOURCE_DIR}/examples
                   --work ${CMAKE_CURRENT_BINARY_DIR}/oracle-work-${engine} --engine ${engine}
                   ${QUICK_FLAG})
  set_tests_properties(oracle.${engine} PROPERTIES ENVIRONMENT "MOEC_LDFLAGS=${MOEC_LDFLAGS}")
endforeach()
# GW-MoE in training, forward and backward: tests/oracle/gw_ref.py against finite
# differences, then moec's autodiff (interpreter and compiled) against it.
add_test(NAME oracle.gw_backward
         COMMAND ${SYSTEM_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/oracle/check_gw.py
                 --moec $<TARGET_FILE:moec> --work ${CMAKE_CURRENT_BINARY_DIR}/oracle-work-gw ${QUICK_FLAG})
set_tests_properties(oracle.gw_backward PROPERTIES ENVIRONMENT "MOEC_LDFLAGS=${MOEC_LDFLAGS}")
