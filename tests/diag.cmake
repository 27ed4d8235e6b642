# The bad-input corpus (tests/diag): exact messages, exit status, nothing half-written.
add_test(NAME diag.corpus
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/diag/run.sh $<TARGET_FILE:moec>)
