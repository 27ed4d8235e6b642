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
