// The io_uring setup that 09_proactor's server and client share: creating the ring with the best
// flags this kernel accepts, and a ring of provided buffers. Nothing here submits or completes an
// operation; that is the lesson, and it stays in server.cpp and client.cpp.
#pragma once

#include <liburing.h>
#include <sys/mman.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

namespace proactor {

// Thrown when this machine refuses io_uring itself (seccomp in a container, or the sysctl
// kernel.io_uring_disabled): main prints the reason and exits 77.
struct UringRefused : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// io_uring_queue_init with the cheapest completion delivery the kernel has, falling back:
//   SINGLE_ISSUER|DEFER_TASKRUN (6.1): the kernel finishes our completions only when we enter
//     io_uring_enter to wait, in our own thread, instead of interrupting us to do it;
//   COOP_TASKRUN (5.19): no interrupting IPI, the work runs at our next kernel entry;
//   none: the oldest behaviour.
// The completion queue is four times the submission queue: one multishot recv can post many
// completions for one submission.
inline unsigned init_ring(io_uring& ring, unsigned entries) {
    const unsigned tries[] = {IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
                              IORING_SETUP_COOP_TASKRUN, 0};
    int rc = -EINVAL;
    for (unsigned flags : tries) {
        io_uring_params p{};
        p.flags = flags | IORING_SETUP_CQSIZE;
        p.cq_entries = entries * 4;
        rc = io_uring_queue_init_params(entries, &ring, &p);
        if (rc == 0) {
            // Kernel 5.18: register the ring's own fd, so that each io_uring_enter skips the
            // descriptor table lookup. Older kernels refuse; nothing else changes.
            io_uring_register_ring_fd(&ring);
            return flags;
        }
        if (rc == -EPERM || rc == -ENOSYS || rc == -EACCES) {
            throw UringRefused("io_uring_setup refused (" + std::string(strerrorname_np(-rc)) +
                               "): seccomp or kernel.io_uring_disabled forbids io_uring here");
        }
    }
    throw std::system_error(-rc, std::generic_category(), "io_uring_queue_init");
}

// A ring of provided buffers (kernel 5.19): we hand the kernel `count` buffers up front, and a
// recv picks one only when data has actually arrived. A connection that is idle holds no buffer;
// compare one buffer per posted recv, which an idle connection would pin for ever.
class BufferRing {
public:
    static constexpr int kGroup = 0;

    // False when the kernel has no buffer rings: the caller then posts recvs into its own buffers.
    bool setup(io_uring& ring, unsigned count, unsigned size) {
        size_ = size;
        count_ = count;
        size_t ring_bytes = count * sizeof(io_uring_buf);
        void* mem =
            ::mmap(nullptr, ring_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (mem == MAP_FAILED) {
            throw std::system_error(errno, std::generic_category(), "mmap buffer ring");
        }
        br_ = static_cast<io_uring_buf_ring*>(mem);
        io_uring_buf_reg reg{};
        reg.ring_addr = reinterpret_cast<uintptr_t>(br_);
        reg.ring_entries = count;
        reg.bgid = kGroup;
        if (io_uring_register_buf_ring(&ring, &reg, 0) != 0) {
            ::munmap(mem, ring_bytes);
            br_ = nullptr;
            return false;
        }
        storage_.resize(size_t{count} * size);
        io_uring_buf_ring_init(br_);
        for (unsigned bid = 0; bid < count; ++bid) {
            recycle(bid);
        }
        return true;
    }

    bool active() const { return br_ != nullptr; }
    char* data(unsigned bid) { return storage_.data() + size_t{bid} * size_; }

    // Gives buffer `bid` back to the kernel. Until this call the bytes are ours; after it the
    // kernel may fill the buffer with the next connection's data at any moment.
    void recycle(unsigned bid) {
        io_uring_buf_ring_add(br_, data(bid), size_, static_cast<unsigned short>(bid),
                              io_uring_buf_ring_mask(count_), 0);
        io_uring_buf_ring_advance(br_, 1);
    }

private:
    io_uring_buf_ring* br_ = nullptr;
    std::vector<char> storage_;
    unsigned size_ = 0;
    unsigned count_ = 0;
};

}  // namespace proactor
