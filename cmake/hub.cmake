# hub_module(NAME SOURCES ... DEPS ...): one static library per source folder.
function(hub_module name)
  cmake_parse_arguments(M "" "" "SOURCES;DEPS" ${ARGN})
  add_library(${name} STATIC ${M_SOURCES})
  target_include_directories(${name} PUBLIC ${PROJECT_SOURCE_DIR}/src)
  target_link_libraries(${name} PUBLIC ${M_DEPS})
endfunction()

# hub_test(NAME SOURCES ... DEPS ...): one GoogleTest binary per module, registered with ctest.
function(hub_test name)
  if(NOT HUB_BUILD_TESTS)
    return()
  endif()
  cmake_parse_arguments(T "" "" "SOURCES;DEPS" ${ARGN})
  add_executable(${name} ${T_SOURCES})
  target_link_libraries(${name} PRIVATE ${T_DEPS} GTest::gtest GTest::gtest_main)
  include(GoogleTest)
  # The binary name prefixes each test ("hub_registry_tests.suite.case"), so `ctest -R registry`
  # selects a module's tests whatever its suites are called.
  gtest_discover_tests(${name} TEST_PREFIX "${name}." DISCOVERY_MODE PRE_TEST PROPERTIES LABELS unit)
endfunction()
