// Socket helpers whose bodies are the same in every model: listen, connect, address formatting,
// non-blocking mode, and the blocking read/write loops that handle EINTR and short transfers.
// Setup failures throw std::system_error naming what was attempted ("bind 127.0.0.1:9005").
#pragma once

#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <system_error>

#include "fd.hpp"

namespace iolab {

// Throws std::system_error(errno, what).
[[noreturn]] void throw_errno(const std::string& what);

// A numeric IPv4 or IPv6 address and a port, in the form bind(2) and connect(2) take: a
// sockaddr_in or sockaddr_in6 in `storage`, `len` its size. Every socket iolab opens is addressed
// through parse_address, the servers' listen and the harness's clients alike.
struct SocketAddress {
    sockaddr_storage storage{};
    socklen_t len = 0;
    int family() const { return storage.ss_family; }
    const sockaddr* get() const { return reinterpret_cast<const sockaddr*>(&storage); }
};
// Parses an IPv4 ("127.0.0.1") or IPv6 ("::1") literal; no name lookup. Throws
// std::system_error(EINVAL) "WHAT: 'HOST' is not a numeric IPv4 or IPv6 address" otherwise.
SocketAddress parse_address(const std::string& host, uint16_t port, const std::string& what);
// "127.0.0.1:9005", or "[::1]:9005" for IPv6: the host and port as error messages name them.
std::string host_port(const std::string& host, uint16_t port);

// socket + SO_REUSEADDR + bind + listen(SOMAXCONN) on an IPv4 or IPv6 literal address.
// `flags` go to socket(2) (e.g. SOCK_NONBLOCK). `reuse_port` sets SO_REUSEPORT too.
Fd listen_tcp(const std::string& host, uint16_t port, int flags = 0, bool reuse_port = false);

// Blocking connect to host:port; throws on failure.
Fd connect_tcp(const std::string& host, uint16_t port);

// The port a bound socket ended up on (useful after binding port 0).
uint16_t local_port(int fd);

// "127.0.0.1:9005" or "[::1]:9005" for a socket's local or peer address.
std::string local_address(int fd);
std::string peer_address(int fd);
std::string format_address(const sockaddr* sa);

// O_NONBLOCK on; throws on failure (a setup failure in every model that uses it).
void set_nonblocking(int fd);

// TCP_NODELAY on: a request/reply protocol wants each reply sent now, not coalesced (Nagle).
void set_nodelay(int fd);

// Blocking write of all `len` bytes, looping over short writes and EINTR. MSG_NOSIGNAL on
// sockets, so a vanished peer is an EPIPE return, not a SIGPIPE. Returns 0, or -errno.
int write_all(int fd, const void* data, size_t len);
inline int write_all(int fd, std::string_view s) {
    return write_all(fd, s.data(), s.size());
}

// One blocking read(2), retried on EINTR. Returns bytes (0 = EOF) or -errno.
long read_some(int fd, void* buf, size_t len);

// Blocking read of exactly `len` bytes; returns bytes read (less than len only at EOF) or -errno.
long read_full(int fd, void* buf, size_t len);

}  // namespace iolab

namespace iolab {

// The close that lets a peer read our last words. close(2) on a socket with unread input makes
// the kernel send RST, and a RST can destroy data the peer has not read yet (the ERR line we just
// sent). So: shut down our write side (FIN after the data), then read and discard what the peer
// still sends until it closes or `ms` milliseconds pass, then close. For blocking sockets only.
void shutdown_and_drain(Fd& fd, int ms);

// SO_RCVTIMEO and SO_SNDTIMEO: a blocking recv/send gives up with EAGAIN after `seconds`.
void set_io_timeouts(int fd, double seconds);

}  // namespace iolab
