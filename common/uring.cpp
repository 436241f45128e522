#include "uring.hpp"

#include <sys/mman.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <system_error>

namespace iolab {

int report_unavailable(std::string_view program, const UringUnavailable& e) {
    std::fprintf(stderr, "%.*s: %s\n", static_cast<int>(program.size()), program.data(), e.what());
    return 77;
}

namespace {

// The ring exists but cannot serve the model: take it down again, then say why.
[[noreturn]] void unusable(io_uring& ring, const std::string& why) {
    io_uring_queue_exit(&ring);
    throw UringUnavailable(why);
}

}  // namespace

UringFeatures init_uring(io_uring& ring, unsigned sq_entries,
                         std::initializer_list<io_uring_op> ops) {
    const unsigned tries[] = {
        IORING_SETUP_SUBMIT_ALL | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
        IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN,
        0,
    };
    UringFeatures found;
    io_uring_params p{};
    int rc = -EINVAL;
    for (unsigned flags : tries) {
        p = io_uring_params{};
        p.flags = flags | IORING_SETUP_CQSIZE;
        p.cq_entries = 4 * sq_entries;
        rc = io_uring_queue_init_params(sq_entries, &ring, &p);
        found.setup_flags = flags;
        if (rc != -EINVAL) {
            break;  // -EINVAL: a flag this kernel does not know yet; try the next setup
        }
    }
    if (rc == -EPERM || rc == -EACCES || rc == -ENOSYS) {
        throw UringUnavailable("io_uring_setup refused (" + std::string(strerrorname_np(-rc)) +
                               "): seccomp or kernel.io_uring_disabled forbids io_uring here");
    }
    if (rc < 0) {
        throw std::system_error(-rc, std::generic_category(), "io_uring_setup");
    }
    if (!(p.features & IORING_FEAT_NODROP)) {
        unusable(ring,
                 "this kernel's io_uring may drop completions (no IORING_FEAT_NODROP: "
                 "Linux 5.5 or later is needed)");
    }
    if (!(p.features & IORING_FEAT_EXT_ARG)) {
        unusable(ring,
                 "this kernel's io_uring_enter takes no timeout (no IORING_FEAT_EXT_ARG: "
                 "Linux 5.11 or later is needed)");
    }
    io_uring_probe* probe = io_uring_get_probe_ring(&ring);
    if (probe == nullptr) {
        unusable(ring, "this kernel's io_uring has no opcode probe (Linux 5.6 or later is needed)");
    }
    for (io_uring_op op : ops) {
        if (!io_uring_opcode_supported(probe, op)) {
            io_uring_free_probe(probe);
            unusable(ring, "this kernel's io_uring lacks opcode " + std::to_string(op) +
                               " (see enum io_uring_op in liburing/io_uring.h)");
        }
    }
    // The probe lists opcodes, not the flags that make an accept or a recv multishot. Each
    // arrived in the same release as an opcode: multishot accept with IORING_OP_SOCKET (5.19),
    // multishot recv with IORING_OP_SEND_ZC (6.0). A kernel that has the opcode but not the
    // flag still answers the first multishot SQE with -EINVAL, and the models fall back then.
    found.multishot_accept = io_uring_opcode_supported(probe, IORING_OP_SOCKET);
    found.multishot_recv = io_uring_opcode_supported(probe, IORING_OP_SEND_ZC);
    io_uring_free_probe(probe);
    io_uring_register_ring_fd(&ring);  // before 5.18 this fails, and nothing else changes
    return found;
}

BufferRing::~BufferRing() {
    if (br_ != nullptr) {
        ::munmap(br_, mapped_);
    }
}

bool BufferRing::setup(io_uring& ring, unsigned count, unsigned size) {
    // One mapping: the ring of buffer descriptors first (the kernel wants it page-aligned), then
    // the buffers. count must be a power of two.
    size_t ring_bytes = count * sizeof(io_uring_buf);
    size_t bytes = ring_bytes + static_cast<size_t>(count) * size;
    void* mem = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) {
        throw std::system_error(errno, std::generic_category(), "mmap (the buffer ring)");
    }
    io_uring_buf_reg reg{};
    reg.ring_addr = reinterpret_cast<uintptr_t>(mem);
    reg.ring_entries = count;
    reg.bgid = kGroup;
    if (io_uring_register_buf_ring(&ring, &reg, 0) != 0) {
        ::munmap(mem, bytes);
        return false;  // before 5.19
    }
    br_ = static_cast<io_uring_buf_ring*>(mem);
    mapped_ = bytes;
    bufs_ = static_cast<char*>(mem) + ring_bytes;
    count_ = count;
    size_ = size;
    io_uring_buf_ring_init(br_);
    for (unsigned i = 0; i < count; ++i) {
        io_uring_buf_ring_add(br_, data(i), size, static_cast<unsigned short>(i),
                              io_uring_buf_ring_mask(count), static_cast<int>(i));
    }
    io_uring_buf_ring_advance(br_, static_cast<int>(count));
    return true;
}

void BufferRing::recycle(unsigned bid) {
    // Written into the ring's next free descriptor; advancing the tail publishes it to the
    // kernel (a release store, no system call).
    io_uring_buf_ring_add(br_, data(bid), size_, static_cast<unsigned short>(bid),
                          io_uring_buf_ring_mask(count_), 0);
    io_uring_buf_ring_advance(br_, 1);
}

}  // namespace iolab
