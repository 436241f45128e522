// A latency histogram with percentiles: what every latency figure of iolab is read from.
// docs/measuring.md says how the percentiles are taken.
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace iolab {

// Latencies in nanoseconds, in log-linear buckets: exact below 128 ns, then 64 buckets per power
// of two, so a percentile is within 1.6% of the true value whatever the range (1 us .. 10 s) and
// the memory is fixed (~30 KiB) however many requests are recorded.
class Histogram {
public:
    Histogram();
    void record(uint64_t ns);
    void merge(const Histogram& other);
    void clear();

    uint64_t count() const { return count_; }
    uint64_t min() const { return count_ ? min_ : 0; }
    uint64_t max() const { return max_; }
    double mean() const { return count_ ? sum_ / static_cast<double>(count_) : 0; }
    // Nearest rank: the smallest recorded value v such that at least q (0..1] of all values are
    // <= v, to within its bucket (the bucket's upper edge, never more than max()). 0 when empty.
    uint64_t percentile(double q) const;
    // Non-empty buckets as (upper edge in ns, count), in increasing order: for distribution charts.
    std::vector<std::pair<uint64_t, uint64_t>> buckets() const;

    static size_t bucket_of(uint64_t ns);
    static uint64_t bucket_upper(size_t index);

private:
    std::vector<uint64_t> counts_;
    uint64_t count_ = 0;
    uint64_t min_ = 0;
    uint64_t max_ = 0;
    double sum_ = 0;
};

}  // namespace iolab
