#include "iolab/commands.hpp"
namespace iolab {
int run_demo(const DemoOptions&) {
    return 2;
}
}  // namespace iolab
