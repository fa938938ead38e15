#include "version.hpp"

namespace moelab {

const char* moelab_version() { return MOELAB_VERSION; }  // set by core/CMakeLists.txt

}  // namespace moelab
