#include "iolab/commands.hpp"
namespace iolab {
int run_scale(const ScaleOptions&, const std::string&) {
    return 2;
}
}  // namespace iolab
