// What 09_proactor_client still takes from here: the ring setup, which is common/uring.hpp now
// (shared with this directory's server and with 07_aio_uring), under the names the client uses.
#pragma once

#include <liburing.h>

#include "common/uring.hpp"

namespace proactor {

using UringRefused = iolab::UringUnavailable;

// The client reads stdin, sends and receives: the ring, with those opcodes probed.
inline void init_ring(io_uring& ring, unsigned entries) {
    iolab::init_uring(ring, entries, {IORING_OP_READ, IORING_OP_SEND, IORING_OP_RECV});
}

}  // namespace proactor
