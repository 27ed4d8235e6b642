# Every example model passes `moec check`, and `moec dump --after=all --verify-each`
# shows each pass of the default pipeline (a "# after PASS" header per pass).
file(GLOB EXAMPLE_MODELS CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/examples/*/model.json)
foreach(model ${EXAMPLE_MODELS})
  get_filename_component(dir ${model} DIRECTORY)
  get_filename_component(name ${dir} NAME)
  add_test(NAME examples.${name}.check COMMAND moec check ${model})
  add_test(NAME examples.${name}.dump_all
           COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/examples_dump.sh $<TARGET_FILE:moec> ${model})
endforeach()

# The GW-MoE fine-tuning demo end to end (pre-training, two fine-tunings, evaluation,
# the table and the gnuplot plot): it fails if any step does. The release run only: its
# time is in the compiled training steps, which are not instrumented, and moec's path
# for a training build is native.train's under the sanitizers.
if(NOT MOEC_SANITIZE)
  add_test(NAME examples.gw_finetune.demo
           COMMAND ${SYSTEM_PYTHON} ${PROJECT_SOURCE_DIR}/examples/gw_finetune/demo.py
                   --moec $<TARGET_FILE:moec> --out ${CMAKE_CURRENT_BINARY_DIR}/gw_demo)
  set_tests_properties(examples.gw_finetune.demo PROPERTIES ENVIRONMENT
                       "MOEC_LDFLAGS=${MOEC_LDFLAGS}")
endif()
