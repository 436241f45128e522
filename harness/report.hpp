// What iolab measures and how it writes it down, one header per job: the latency histogram
// (harness/histogram.hpp), the machine (harness/machine.hpp), the result rows and their JSON, CSV
// and table (harness/results.hpp), and SVG charts (harness/svg.hpp). docs/measuring.md explains
// every figure.
#pragma once

#include "harness/histogram.hpp"
#include "harness/machine.hpp"
#include "harness/results.hpp"
#include "harness/svg.hpp"
