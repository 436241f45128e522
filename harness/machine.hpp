// The machine a run's figures come from, probed once per run and recorded in results.json
// under "run".
#pragma once

#include <string>

namespace iolab {

struct RunInfo {
    std::string command;     // the iolab command line that produced the results
    std::string started_at;  // UTC, ISO 8601
    std::string kernel;      // uname -sr
    std::string cpu_model;   // /proc/cpuinfo "model name"
    int cores = 0;           // CPUs this process may run on
    std::string io_uring;    // "available", or why not
    std::string pinning;     // which CPUs the server and the load generator ran on
    std::string load;        // the load: shape, payload, duration, warm-up
    std::string syscalls;    // how syscalls were counted: "kernel (...)", or "traced: why"
};
// Fills kernel, cpu_model, cores, io_uring and started_at; the caller adds the rest.
RunInfo describe_machine();

}  // namespace iolab
