# The native backend (tests/native): every op and every example compiled at -O0 and -O3
# against the interpreter, the generated API from C and C++, run-time misuse, and what
# the emitted code looks like on x86-64 and AArch64.
set(NATIVE_ENV "MOEC_LDFLAGS=${MOEC_LDFLAGS}")
add_test(NAME native.ops
         COMMAND ${SYSTEM_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/native/diff_ops.py $<TARGET_FILE:moec>
                 ${QUICK_FLAG})
add_test(NAME native.examples
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/native/examples.sh $<TARGET_FILE:moec>
                 ${PROJECT_SOURCE_DIR}/examples ${QUICK_FLAG})
# --weight-dtype=f16|bf16 on every example: dumps, native against the interpreter,
# external weights, accuracy against f32, misuse.
add_test(NAME native.weight_dtype
         COMMAND ${SYSTEM_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/native/weight_dtype.py
                 $<TARGET_FILE:moec> ${PROJECT_SOURCE_DIR}/examples ${QUICK_FLAG})
set_tests_properties(native.weight_dtype PROPERTIES ENVIRONMENT "${NATIVE_ENV}")
# ONNX models in: .onnx files (written with python3-onnx) in every command, against
# NumPy in the interpreter and natively, and `moec import`.
add_test(NAME native.onnx
         COMMAND ${SYSTEM_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/native/onnx_import.py $<TARGET_FILE:moec>
                 ${QUICK_FLAG})
set_tests_properties(native.onnx PROPERTIES ENVIRONMENT "${NATIVE_ENV}")
# ONNX's own node tests for every op moec has (libonnx-testdata), with the list of those
# that cannot pass yet.
add_test(NAME native.onnx_node_tests
         COMMAND ${SYSTEM_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/native/onnx_node_tests.py
                 $<TARGET_FILE:moec> ${QUICK_FLAG})
set_tests_properties(native.onnx_node_tests PROPERTIES ENVIRONMENT "${NATIVE_ENV}")
# com.microsoft.MoE: the same file in onnxruntime-node (tests/ort) and in moec.
add_test(NAME native.onnx_moe
         COMMAND ${SYSTEM_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/native/onnx_moe.py $<TARGET_FILE:moec>
                 ${QUICK_FLAG})
set_tests_properties(native.onnx_moe PROPERTIES ENVIRONMENT "${NATIVE_ENV}")
# The dot-product kernels where the host has them: bf16 weights against the interpreter
# on activations rounded to bf16, int8 / int4 against NumPy's int8-activation model.
add_test(NAME native.dot_kernels
         COMMAND ${SYSTEM_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/native/dot_kernels.py $<TARGET_FILE:moec>)
set_tests_properties(native.dot_kernels PROPERTIES ENVIRONMENT "${NATIVE_ENV}")
# int8 / int4 weights: dumps, native against the interpreter, external files, files that
# hold quantized tensors against NumPy's dequantization, accuracy bounds, errors.
add_test(NAME native.quantized_weights
         COMMAND ${SYSTEM_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/native/quantized_weights.py
                 $<TARGET_FILE:moec> ${PROJECT_SOURCE_DIR}/examples ${QUICK_FLAG})
set_tests_properties(native.quantized_weights PROPERTIES ENVIRONMENT "${NATIVE_ENV}")
# AArch64: the runtime cross-compiled, mixtral_block with every weight storage built for
# aarch64-linux-gnu and run under qemu-user, against the interpreter.
add_test(NAME native.aarch64
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/native/aarch64.sh $<TARGET_FILE:moec>
                 ${PROJECT_SOURCE_DIR} ${QUICK_FLAG})
add_test(NAME native.abi
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/native/abi.sh $<TARGET_FILE:moec> $<TARGET_FILE:moert>)
add_test(NAME native.targets
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/native/targets.sh $<TARGET_FILE:moec>)
set_tests_properties(native.ops native.examples native.abi native.targets
                     PROPERTIES ENVIRONMENT "${NATIVE_ENV}")
# Training: compiled vs interpreted steps with both optimizers, and a loss that falls.
add_test(NAME native.train COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/native/train.sh $<TARGET_FILE:moec>
                                   ${QUICK_FLAG})
set_tests_properties(native.train PROPERTIES ENVIRONMENT "${NATIVE_ENV}")
# Fusion: fused and unfused pipelines agree bit for bit, natively at -O0 and -O3 and in
# the interpreter, at 1, 2 and 3 threads, on every example and each fused pattern.
add_test(NAME native.fusion
         COMMAND ${SYSTEM_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/native/fusion.py $<TARGET_FILE:moec>
                 ${PROJECT_SOURCE_DIR}/examples ${QUICK_FLAG})
set_tests_properties(native.fusion PROPERTIES ENVIRONMENT "${NATIVE_ENV}")
# -v: the phases of build, compile and run, in order, on stderr (docs/cli.md).
add_test(NAME native.verbose
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/native/verbose.sh $<TARGET_FILE:moec>
                 ${PROJECT_SOURCE_DIR}/examples)
set_tests_properties(native.verbose PROPERTIES ENVIRONMENT "${NATIVE_ENV}")
