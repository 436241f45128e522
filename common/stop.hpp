// Graceful stop on SIGINT and SIGTERM. main() calls install_stop_handlers() itself; nothing in
// common installs a handler behind a model's back.
//
// The handler is installed without SA_RESTART, so a thread blocked in accept(2) or recv(2) in the
// thread that takes the signal returns EINTR and can look at stop_requested(). For loops that
// wait in select/poll/epoll, stop_fd() is the read end of a self-pipe that becomes readable when a
// stop signal arrives: add it to the wait set like any socket.
#pragma once

namespace iolab {

void install_stop_handlers();
bool stop_requested();
int stop_fd();

}  // namespace iolab
