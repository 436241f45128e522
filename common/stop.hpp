// Graceful stop on SIGINT and SIGTERM. main() calls install_stop_handlers() itself; nothing in
// common installs a handler behind a model's back.
//
// The handler is installed without SA_RESTART, so a thread blocked in accept(2) or recv(2) in the
// thread that takes the signal returns EINTR and can look at stop_requested(). For loops that
// wait in select/poll/epoll, stop_fd() is the read end of a self-pipe that becomes readable when a
// stop signal arrives: add it to the wait set like any socket.
//
// A blocking model has a race that EINTR alone cannot close: a signal that lands after the loop
// looked at stop_requested() but before it entered accept(2) or recv(2) is handled, and then the
// call blocks anyway, forever. So a blocking model also registers the sockets it may block on
// with wake_on_stop(): the handler shuts each of them down (shutdown(2) is async-signal-safe).
// A shutdown is a state of the socket, not an event, so it cannot be missed: an accept(2) on a
// shut-down listening socket fails with EINVAL at once, a recv(2) returns 0. Register, then check
// stop_requested(), then block.
#pragma once

namespace iolab {

void install_stop_handlers();
bool stop_requested();
int stop_fd();

// Up to kWakeSlots sockets at a time (a blocking model needs its listening socket and the one
// connection it serves). forget_on_stop() before the socket is closed.
inline constexpr int kWakeSlots = 8;
void wake_on_stop(int fd);
void forget_on_stop(int fd);

}  // namespace iolab
