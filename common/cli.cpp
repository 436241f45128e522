#include "cli.hpp"

#include <CLI/CLI.hpp>

#include <iostream>

namespace iolab {

CommandLine::CommandLine(std::string name, std::string description)
    : name_(std::move(name)), app_(std::make_unique<CLI::App>(std::move(description), name_)) {}

CommandLine::~CommandLine() = default;

void CommandLine::add_server_options(ServerOptions& opt) {
    CLI::App& app = *app_;
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

void CommandLine::add_client_options(ClientOptions& opt) {
    app_->add_option("--host", opt.host, "Server address")->capture_default_str();
    app_->add_option("--port", opt.port, "Server port")
        ->capture_default_str()
        ->check(CLI::Range(1, 65535));
}

template <typename T>
void CommandLine::add_option(const std::string& name, T& value, const std::string& help,
                             std::type_identity_t<T> lo, std::type_identity_t<T> hi) {
    app_->add_option(name, value, help)->capture_default_str()->check(CLI::Range(lo, hi));
}

template void CommandLine::add_option<int>(const std::string&, int&, const std::string&, int, int);
template void CommandLine::add_option<unsigned long>(const std::string&, unsigned long&,
                                                     const std::string&, unsigned long,
                                                     unsigned long);
template void CommandLine::add_option<unsigned long long>(const std::string&, unsigned long long&,
                                                          const std::string&, unsigned long long,
                                                          unsigned long long);
template void CommandLine::add_option<double>(const std::string&, double&, const std::string&,
                                              double, double);

void CommandLine::add_option(const std::string& name, std::string& value, const std::string& help,
                             std::initializer_list<const char*> allowed, bool required) {
    std::vector<std::string> set(allowed.begin(), allowed.end());
    CLI::Option* o = app_->add_option(name, value, help)->check(CLI::IsMember(set));
    if (required) {
        o->required();
    } else {
        o->capture_default_str();
    }
}

void CommandLine::add_flag(const std::string& name, bool& value, const std::string& help) {
    app_->add_flag(name, value, help);
}

int CommandLine::parse(int argc, char** argv) {
    return parse_command_line(*app_, argc, argv);
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

}  // namespace iolab
