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

void add_server_options(CLI::App& app, ServerOptions& opt) {
    app.add_option("--host", opt.host, "Address to bind (numeric IPv4 or IPv6)")
        ->capture_default_str();
    app.add_option("--port", opt.port, "Port to listen on; 0 picks any free port")
        ->capture_default_str()
        ->check(CLI::Range(0, 65535));
    app.add_option_function<std::string>(
           "--mode",
           [&opt](const std::string& m) { opt.mode = (m == "echo") ? Mode::echo : Mode::qa; },
           "qa: question-answer lines (default); echo: every byte back")
        ->transform(CLI::IsMember({"qa", "echo"}, CLI::ignore_case))
        ->option_text("qa|echo")
        ->default_str("qa");
    app.add_option("--max-line", opt.max_line, "Longest QA request line in bytes")
        ->capture_default_str()
        ->check(CLI::Range(size_t{1}, size_t{1} << 20));
    app.add_option("--max-conns", opt.max_conns,
                   "Connections held at once; more get ERR server full")
        ->capture_default_str()
        ->check(CLI::Range(1, 1000000));
    app.add_option("--idle-timeout", opt.idle_timeout,
                   "Close a connection silent for this many seconds; 0 = never")
        ->capture_default_str()
        ->check(CLI::Range(0.0, 86400.0));
    app.add_option("--request-timeout", opt.request_timeout,
                   "Close a connection whose request line is not complete this many seconds "
                   "after its first byte (slowloris); 0 = never")
        ->capture_default_str()
        ->check(CLI::Range(0.0, 86400.0));
    app.add_flag("--trace", opt.trace, "Print every IO call to stderr (format in README.md)");
}

void add_client_options(CLI::App& app, ClientOptions& opt) {
    app.add_option("--host", opt.host, "Server address")->capture_default_str();
    app.add_option("--port", opt.port, "Server port")
        ->capture_default_str()
        ->check(CLI::Range(1, 65535));
}

int parse_command_line(CLI::App& app, int argc, char** argv) {
    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp&) {
        std::cout << app.help();
        return 0;
    } catch (const CLI::CallForAllHelp&) {
        std::cout << app.help("", CLI::AppFormatMode::All);
        return 0;
    } catch (const CLI::ParseError& e) {
        std::string what = e.what();
        for (char& ch : what) {
            if (ch == '\n') {
                ch = ' ';
            }
        }
        std::cerr << app.get_name() << ": " << what << " (see --help)\n";
        return 2;
    }
    return -1;
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
