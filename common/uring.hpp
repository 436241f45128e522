// The io_uring setup that 07_aio_uring and 09_proactor (server and client) share, written once:
// the ring created with the cheapest way of finishing completions that this kernel offers, a
// probe of what the kernel can do, a ring of provided buffers, and the one exception for "io_uring
// is refused or unusable here". Nothing in this file prepares, submits or completes an operation:
// that is the lesson, and it stays in each model's own file.
#pragma once

#include <liburing.h>

#include <initializer_list>
#include <stdexcept>
#include <string_view>

namespace iolab {

// io_uring cannot be used on this machine: a seccomp filter (a container runtime's default
// profile) or the sysctl kernel.io_uring_disabled refuses io_uring_setup(2), or the kernel lacks
// something the model needs. main turns it into one line on stderr and exit 77 (the contract's
// "cannot run here"), with report_unavailable().
class UringUnavailable : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// Prints "PROGRAM: WHY" on one line of stderr; returns 77.
int report_unavailable(std::string_view program, const UringUnavailable& e);

// What init_uring found the kernel able to do.
struct UringFeatures {
    unsigned setup_flags = 0;       // the IORING_SETUP_* choice the kernel accepted (see below)
    bool multishot_accept = false;  // one accept SQE, a CQE per connection (5.19)
    bool multishot_recv = false;    // one recv SQE, a CQE per arrival of data (6.0)
    bool defer_taskrun() const { return (setup_flags & IORING_SETUP_DEFER_TASKRUN) != 0; }
};

// Creates `ring` with `sq_entries` submission entries and four times as many completion entries
// (one multishot SQE can post many CQEs), with the first of these setups the kernel accepts:
//   SINGLE_ISSUER | DEFER_TASKRUN (6.1): the kernel does our operations' remaining work (the copy
//     of received bytes, posting the CQE) only when this thread enters io_uring_enter to wait,
//     instead of interrupting the thread whenever data arrives;
//   COOP_TASKRUN (5.19): no interrupt either; the work waits for our next entry into the kernel;
//   neither: the kernel interrupts the thread (an IPI) to run that work at once.
// The first two also set SUBMIT_ALL (5.18): an SQE that fails at submission does not stop the
// ones behind it.
// It requires IORING_FEAT_NODROP (5.5: completions that find the CQ full wait in a kernel list
// instead of being lost) and IORING_FEAT_EXT_ARG (5.11: io_uring_enter takes a timeout), probes
// (io_uring_get_probe) that every opcode in `ops` is there and which multishot operations are,
// and registers the ring's own descriptor (5.18, optional: each io_uring_enter skips the
// descriptor table lookup).
// Throws UringUnavailable when the machine refuses io_uring or lacks any of that, and
// std::system_error for any other failure of io_uring_setup.
UringFeatures init_uring(io_uring& ring, unsigned sq_entries,
                         std::initializer_list<io_uring_op> ops);

// A ring of provided buffers (5.19), buffer group kGroup: `count` buffers of `size` bytes handed
// to the kernel up front. A recv SQE with IOSQE_BUFFER_SELECT names no buffer; the kernel takes
// one from this ring only when data has arrived, and the CQE says which one (IORING_CQE_F_BUFFER
// set, the buffer id above IORING_CQE_BUFFER_SHIFT). So a connection that is idle holds no
// buffer at all. When the ring is empty, a recv completes with -ENOBUFS instead.
class BufferRing {
public:
    static constexpr int kGroup = 0;

    BufferRing() = default;
    BufferRing(const BufferRing&) = delete;
    BufferRing& operator=(const BufferRing&) = delete;
    ~BufferRing();

    // Registers the ring with the kernel (the probe for buffer rings) and hands it every buffer.
    // False when the kernel has no buffer rings: the caller then receives into buffers of its own.
    bool setup(io_uring& ring, unsigned count, unsigned size);
    bool active() const { return br_ != nullptr; }
    unsigned size() const { return size_; }

    // The buffer a CQE delivered its bytes into; it is ours until recycle(bid).
    static unsigned bid(const io_uring_cqe* cqe) { return cqe->flags >> IORING_CQE_BUFFER_SHIFT; }
    char* data(unsigned bid) const { return bufs_ + static_cast<size_t>(bid) * size_; }
    // Gives buffer `bid` back: from now on the kernel may fill it with any connection's data.
    void recycle(unsigned bid);

private:
    io_uring_buf_ring* br_ = nullptr;
    char* bufs_ = nullptr;
    size_t mapped_ = 0;
    unsigned count_ = 0;
    unsigned size_ = 0;
};

}  // namespace iolab
