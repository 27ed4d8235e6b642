# The NumPy oracle (tests/oracle): it reproduces ROUTING.md §6, then `moec run` must
# match it on every MoE op and every example model.
add_test(NAME oracle.selftest
         COMMAND ${SYSTEM_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/oracle/selftest.py)
add_test(NAME oracle.moec
         COMMAND ${SYSTEM_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/oracle/run_oracle.py
                 --moec $<TARGET_FILE:moec> --examples ${PROJECT_SOURCE_DIR}/examples
                 --work ${CMAKE_CURRENT_BINARY_DIR}/oracle-work)
