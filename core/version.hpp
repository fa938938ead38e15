// The project's version, from CMake's project(VERSION): written into run.json and printed by
// --version.
#pragma once

namespace moelab {

const char* moelab_version();  // "0.1.0"

}  // namespace moelab
