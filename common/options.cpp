#include "options.hpp"

#include <cstdio>
#include <iostream>

#include "net.hpp"
#include "trace.hpp"

namespace iolab {

ServerOptions server_defaults(int model_number) {
    ServerOptions opt;
    opt.port = static_cast<uint16_t>(9000 + model_number);
    return opt;
}

ClientOptions client_defaults(int model_number) {
    ClientOptions opt;
    opt.port = static_cast<uint16_t>(9000 + model_number);
    return opt;
}

void announce_listening(int listen_fd, std::string_view model, const ServerOptions& opt) {
    if (opt.trace) {
        trace::enable();
    }
    std::printf("listening on %s model=%.*s\n", local_address(listen_fd).c_str(),
                static_cast<int>(model.size()), model.data());
    std::fflush(stdout);
}

int report_setup_failure(std::string_view program, const std::exception& e) {
    std::cerr << program << ": " << e.what() << "\n";
    return 1;
}

}  // namespace iolab
