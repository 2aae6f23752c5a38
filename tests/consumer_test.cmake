# The installed package, used as an outside project would (ctest runs this with cmake -P):
# install the build into a fresh prefix, configure examples/consumer against it with
# find_package(trflow), build it and run it.
#   -DBUILD_DIR=<trflow build> -DSOURCE_DIR=<repository> -DWORK_DIR=<scratch> -DCXX=<compiler>
file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")
function(step)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "failed (${rc}): ${ARGN}\n${out}\n${err}")
  endif()
  message(STATUS "${out}")
endfunction()
step(${CMAKE_COMMAND} --install "${BUILD_DIR}" --prefix "${WORK_DIR}/prefix")
foreach(f lib/cmake/trflow/trflowConfig.cmake lib/cmake/trflow/trflowConfigVersion.cmake include/flows/flow.hpp
          include/autodiff/tape.hpp include/nn/module.hpp bin/trflow)
  if(NOT EXISTS "${WORK_DIR}/prefix/${f}")
    message(FATAL_ERROR "the install has no ${f}")
  endif()
endforeach()
step(${CMAKE_COMMAND} -S "${SOURCE_DIR}/examples/consumer" -B "${WORK_DIR}/build" -G Ninja
     -DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix -DCMAKE_CXX_COMPILER=${CXX})
step(${CMAKE_COMMAND} --build "${WORK_DIR}/build")
step("${WORK_DIR}/build/consumer")
file(REMOVE_RECURSE "${WORK_DIR}")
