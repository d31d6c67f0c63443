# troupe_add_proto(<target> ROOT <dir> PROTOS <files relative to ROOT>... [GRPC])
# Generates C++ (and with GRPC, gRPC service stubs) into the build directory
# at build time and compiles them into a static library.
if(NOT TARGET gRPC::grpc++)
  find_package(Protobuf REQUIRED)
  find_package(gRPC CONFIG REQUIRED)
endif()
find_program(TROUPE_GRPC_CPP_PLUGIN grpc_cpp_plugin REQUIRED)

function(troupe_add_proto target)
  cmake_parse_arguments(P "GRPC" "ROOT" "PROTOS;IMPORT_DIRS" ${ARGN})
  set(out ${CMAKE_CURRENT_BINARY_DIR}/generated)
  file(MAKE_DIRECTORY ${out})
  set(sources)
  set(import_args -I${P_ROOT})
  foreach(dir ${P_IMPORT_DIRS})
    list(APPEND import_args -I${dir})
  endforeach()
  foreach(proto ${P_PROTOS})
    string(REGEX REPLACE "\\.proto$" "" stem ${proto})
    set(generated ${out}/${stem}.pb.cc ${out}/${stem}.pb.h)
    set(plugin_args)
    if(P_GRPC)
      list(APPEND generated ${out}/${stem}.grpc.pb.cc ${out}/${stem}.grpc.pb.h)
      set(plugin_args --grpc_out=${out} --plugin=protoc-gen-grpc=${TROUPE_GRPC_CPP_PLUGIN})
    endif()
    add_custom_command(
      OUTPUT ${generated}
      COMMAND protobuf::protoc ${import_args} --cpp_out=${out} ${plugin_args}
              ${P_ROOT}/${proto}
      DEPENDS ${P_ROOT}/${proto} protobuf::protoc
      COMMENT "protoc ${proto}")
    list(APPEND sources ${generated})
  endforeach()
  add_library(${target} STATIC ${sources})
  set_target_properties(${target} PROPERTIES POSITION_INDEPENDENT_CODE ON)
  # Generated code is not ours to warn about.
  target_compile_options(${target} PRIVATE -w)
  target_include_directories(${target} PUBLIC $<BUILD_INTERFACE:${out}>)
  target_link_libraries(${target} PUBLIC protobuf::libprotobuf)
  if(P_GRPC)
    target_link_libraries(${target} PUBLIC gRPC::grpc++)
  endif()
endfunction()
