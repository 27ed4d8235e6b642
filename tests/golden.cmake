# Golden IR dumps: every pass of the default pipeline on small models (tests/golden).
add_test(NAME golden.dumps
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/golden/run.sh $<TARGET_FILE:moec>)
