#include "conn.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include "net.hpp"
#include "trace.hpp"

namespace iolab {

int timeout_ms(std::optional<Clock::time_point> deadline, Clock::time_point now) {
    if (!deadline) {
        return -1;
    }
    auto ms = std::chrono::ceil<std::chrono::milliseconds>(*deadline - now).count();
    return ms < 0 ? 0 : static_cast<int>(ms);
}

void refuse(ServerStats& stats, int conn_fd, std::string_view line) {
    TRACE_IO("send", conn_fd,
             ::send(conn_fd, line.data(), line.size(), MSG_NOSIGNAL | MSG_DONTWAIT));
    ::shutdown(conn_fd, SHUT_WR);
    char sink[4096];
    TRACE_IO("recv", conn_fd, ::recv(conn_fd, sink, sizeof sink, MSG_DONTWAIT));
    ::close(conn_fd);
    stats.refused.fetch_add(1, std::memory_order_relaxed);
}

SpareFd::SpareFd() : fd_(::open("/dev/null", O_RDONLY | O_CLOEXEC)) {
    if (!fd_) {
        throw_errno("open /dev/null (the spare descriptor)");
    }
}

bool SpareFd::refuse_one(int listen_fd, ServerStats& stats) {
    fd_.reset();
    int conn_fd = TRACE_IO("accept4", listen_fd,
                           ::accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
    int accept_errno = errno;
    if (conn_fd >= 0) {
        refuse(stats, conn_fd);
    }
    fd_.reset(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    errno = accept_errno;
    return conn_fd >= 0;
}

}  // namespace iolab
