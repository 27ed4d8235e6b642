# Golden IR dumps (tests/golden, driven by golden/run.sh): for every case below and
# every pass of the pipeline, `moec dump CASE.json --after=PASS` must print exactly
# CASE.PASS.txt. Files are listed, not globbed: a case without a file for some pass is
# a configure error, so no pass goes unchecked by accident.
set(GOLDEN_CASES canon composite fold moe_two names train)
set(GOLDEN_PASSES infer-shapes verify expand-moe canonicalize fold-constants dce)
set(GOLDEN_DOTS fold.fold-constants fold.final) # CASE.PASS.dot, --format=dot
set(GOLDEN_DIR ${CMAKE_CURRENT_SOURCE_DIR}/golden)

foreach(case ${GOLDEN_CASES})
  foreach(pass ${GOLDEN_PASSES})
    if(NOT EXISTS ${GOLDEN_DIR}/${case}.${pass}.txt)
      message(FATAL_ERROR "golden case ${case} has no expected dump ${case}.${pass}.txt")
    endif()
    add_test(NAME golden.${case}.${pass}
             COMMAND bash ${GOLDEN_DIR}/run.sh $<TARGET_FILE:moec> ${case} ${pass})
  endforeach()
endforeach()

# Fusion passes: the graph before (dce) and after each fusion pass (CASE.passes).
set(GOLDEN_FUSION ffn.dce ffn.fuse-gate-dispatch ffn.fuse-expert-ffn ffn.fuse-elementwise)
foreach(check ${GOLDEN_FUSION})
  string(REPLACE "." ";" parts ${check})
  list(GET parts 0 case)
  list(GET parts 1 pass)
  add_test(NAME golden.${check}
           COMMAND bash ${GOLDEN_DIR}/run.sh $<TARGET_FILE:moec> ${case} ${pass})
endforeach()

foreach(dot ${GOLDEN_DOTS})
  string(REPLACE "." ";" parts ${dot})
  list(GET parts 0 case)
  list(GET parts 1 pass)
  add_test(NAME golden.${dot}.dot
           COMMAND bash ${GOLDEN_DIR}/run.sh $<TARGET_FILE:moec> ${case} ${pass} dot)
endforeach()

add_test(NAME golden.fold.dump-dir
         COMMAND bash ${GOLDEN_DIR}/run.sh $<TARGET_FILE:moec> fold dump-dir)

# gw-specialize: a GW model in inference is the top-k model, dump and object alike.
add_test(NAME golden.gw-specialize
         COMMAND bash ${GOLDEN_DIR}/gw_specialize.sh $<TARGET_FILE:moec>)
