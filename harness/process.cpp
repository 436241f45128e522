#include "harness/process.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>

#include "harness/spawn.hpp"

namespace iolab {

namespace {

using Clock = std::chrono::steady_clock;

// Parses "listening on HOST:PORT ..." (HOST may be "[v6]").
bool parse_listening(const std::string& line, std::string& host, uint16_t& port) {
    const std::string prefix = "listening on ";
    if (line.rfind(prefix, 0) != 0) {
        return false;
    }
    std::string addr = line.substr(prefix.size());
    addr = addr.substr(0, addr.find(' '));
    size_t colon = addr.rfind(':');
    if (colon == std::string::npos) {
        return false;
    }
    host = addr.substr(0, colon);
    if (host.size() > 1 && host.front() == '[') {
        host = host.substr(1, host.size() - 2);
    }
    int p = std::atoi(addr.c_str() + colon + 1);
    if (p <= 0 || p > 65535) {
        return false;
    }
    port = static_cast<uint16_t>(p);
    return true;
}

// SIGKILL to `pid` and everything below it, the tree read before the first signal.
void kill_tree(pid_t pid) {
    for (pid_t p : process_tree(pid)) {
        ::kill(p, SIGKILL);
    }
}

}  // namespace

ServerProcess::ServerProcess(ServerProcess&& o) noexcept {
    *this = std::move(o);
}

ServerProcess& ServerProcess::operator=(ServerProcess&& o) noexcept {
    if (this != &o) {
        if (pid_ > 0 && exit_code_ == -2) {
            kill_tree(pid_);
            ::waitpid(pid_, nullptr, 0);
        }
        pid_ = std::exchange(o.pid_, -1);
        state_ = o.state_;
        reason_ = std::move(o.reason_);
        host_ = std::move(o.host_);
        port_ = o.port_;
        stdout_ = std::move(o.stdout_);
        stderr_ = std::move(o.stderr_);
        exit_code_ = o.exit_code_;
    }
    return *this;
}

ServerProcess::~ServerProcess() {
    if (pid_ > 0 && exit_code_ == -2) {
        kill_tree(pid_);
        ::waitpid(pid_, nullptr, 0);
    }
}

ServerProcess ServerProcess::start(const Variant& v, const std::vector<std::string>& extra,
                                   std::chrono::milliseconds deadline, long fd_limit) {
    std::vector<std::string> args = v.args;
    args.insert(args.end(), extra.begin(), extra.end());
    return start_binary(v.binary, args, deadline, fd_limit);
}

ServerProcess ServerProcess::start_binary(const std::string& binary,
                                          const std::vector<std::string>& args_in,
                                          std::chrono::milliseconds deadline, long fd_limit) {
    ServerProcess p;
    std::vector<std::string> args = args_in;
    bool has_port = false;
    for (const auto& a : args) {
        has_port = has_port || a == "--port" || a.rfind("--port=", 0) == 0;
    }
    if (!has_port) {
        args.push_back("--port");
        args.push_back("0");
    }

    int out[2];
    if (::pipe2(out, O_CLOEXEC) < 0) {
        p.reason_ = std::string("pipe2: ") + std::strerror(errno);
        return p;
    }
    p.stdout_.reset(out[0]);
    Fd child_stdout(out[1]);  // ours closes once the child has its own copy
    p.stderr_.reset(::memfd_create("server-stderr", MFD_CLOEXEC));
    if (!p.stderr_) {
        p.reason_ = std::string("memfd_create: ") + std::strerror(errno);
        return p;
    }
    SpawnSpec spec;
    spec.argv.push_back(binary);
    spec.argv.insert(spec.argv.end(), args.begin(), args.end());
    spec.stdout_fd = child_stdout.get();
    spec.stderr_fd = p.stderr_.get();
    spec.fd_limit = fd_limit;
    try {
        p.pid_ = spawn(spec);
    } catch (const std::exception& e) {
        p.reason_ = e.what();
        return p;
    }
    child_stdout.reset();

    // Read the listening line, with a deadline.
    std::string line;
    auto until = Clock::now() + deadline;
    for (;;) {
        size_t nl = line.find('\n');
        if (nl != std::string::npos) {
            line.resize(nl);
            break;
        }
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now());
        if (left.count() <= 0) {
            p.reason_ = "no listening line within " + std::to_string(deadline.count()) + " ms";
            p.state_ = State::failed;
            return p;
        }
        pollfd pfd{p.stdout_.get(), POLLIN, 0};
        int rc = ::poll(&pfd, 1, static_cast<int>(left.count()));
        if (rc < 0 && errno == EINTR) {
            continue;
        }
        if (rc <= 0) {
            continue;
        }
        char buf[256];
        ssize_t n = ::read(p.stdout_.get(), buf, sizeof buf);
        if (n > 0) {
            line.append(buf, static_cast<size_t>(n));
            continue;
        }
        // EOF before the line: the server exited.
        int code = p.wait(2s);
        std::string text = p.stderr_text();
        while (!text.empty() && text.back() == '\n') {
            text.pop_back();
        }
        if (code == 77) {
            p.state_ = State::cannot_run;
            p.reason_ = text.empty() ? "exit 77 (cannot run here)" : text;
        } else {
            p.state_ = State::failed;
            p.reason_ = "exited " + std::to_string(code) + " before listening: " + text;
        }
        return p;
    }
    if (!parse_listening(line, p.host_, p.port_)) {
        p.reason_ = "unexpected first line: " + line;
        p.state_ = State::failed;
        return p;
    }
    p.state_ = State::running;
    return p;
}

bool ServerProcess::alive() {
    if (pid_ <= 0 || exit_code_ != -2) {
        return false;
    }
    int status = 0;
    pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
        exit_code_ = exit_code(status);
        return false;
    }
    return true;
}

void ServerProcess::signal(int sig) {
    if (pid_ > 0 && exit_code_ == -2) {
        ::kill(pid_, sig);
    }
}

int ServerProcess::wait(std::chrono::milliseconds deadline) {
    if (pid_ <= 0) {
        return -1;
    }
    if (exit_code_ == -2) {
        auto until = Clock::now() + deadline;
        int status = 0;
        for (;;) {
            pid_t r = ::waitpid(pid_, &status, WNOHANG);
            if (r == pid_) {
                exit_code_ = exit_code(status);
                break;
            }
            if (r < 0 && errno != EINTR) {
                exit_code_ = -3;  // not ours to reap (cannot happen: we started it)
                break;
            }
            if (Clock::now() >= until) {
                kill_tree(pid_);
                ::waitpid(pid_, nullptr, 0);
                exit_code_ = -3;  // -3: reaped, but did not exit in time
                break;
            }
            std::this_thread::sleep_for(5ms);
        }
    }
    return exit_code_ == -3 ? -1 : exit_code_;
}

int ServerProcess::stop(std::chrono::milliseconds deadline) {
    signal(SIGTERM);
    return wait(deadline);
}

int ServerProcess::stop_tracee(std::chrono::milliseconds deadline) {
    std::vector<pid_t> tree = process_tree(pid_);
    if (tree.size() < 2) {
        return stop(deadline);  // the server is gone already; the tracer ends by itself
    }
    ::kill(tree[1], SIGTERM);  // strace's one child: the server it started
    return wait(deadline);
}

std::string ServerProcess::stderr_text() const {
    std::string out;
    if (!stderr_) {
        return out;
    }
    char buf[65536];
    off_t off = 0;
    for (;;) {
        ssize_t n = ::pread(stderr_.get(), buf, sizeof buf, off);
        if (n <= 0) {
            break;
        }
        out.append(buf, static_cast<size_t>(n));
        off += n;
    }
    return out;
}

}  // namespace iolab
