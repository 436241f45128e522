// A file descriptor that closes itself. Move-only, and never converts to int by itself, so every
// syscall in a model still reads `::recv(c.fd.get(), ...)` with the descriptor in plain view.
#pragma once

#include <unistd.h>

#include <utility>

namespace iolab {

class Fd {
public:
    Fd() = default;
    explicit Fd(int fd) : fd_(fd) {}
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
    Fd(Fd&& other) noexcept : fd_(other.release()) {}
    Fd& operator=(Fd&& other) noexcept {
        if (this != &other) {
            reset(other.release());
        }
        return *this;
    }
    ~Fd() { reset(); }

    int get() const { return fd_; }
    bool valid() const { return fd_ >= 0; }
    explicit operator bool() const { return valid(); }

    // Gives up ownership without closing.
    int release() { return std::exchange(fd_, -1); }

    // Closes the current descriptor (if any) and takes ownership of `fd`. close(2) is not retried
    // on EINTR: on Linux the descriptor is already released when close returns.
    void reset(int fd = -1) {
        if (fd_ >= 0) {
            ::close(fd_);
        }
        fd_ = fd;
    }

private:
    int fd_ = -1;
};

}  // namespace iolab
