#include "harness/histogram.hpp"

#include <algorithm>
#include <cmath>

namespace iolab {

namespace {
constexpr size_t kExact = 128;  // values below this have a bucket each
constexpr size_t kSub = 64;     // buckets per power of two above it
constexpr size_t kBuckets = kExact + (64 - 7) * kSub;
}  // namespace

Histogram::Histogram() : counts_(kBuckets, 0) {}

size_t Histogram::bucket_of(uint64_t v) {
    if (v < kExact) {
        return static_cast<size_t>(v);
    }
    int m = 63 - __builtin_clzll(v);  // 2^m <= v < 2^(m+1), m >= 7
    uint64_t top = v >> (m - 6);      // the 7 leading bits: 64..127
    return kExact + static_cast<size_t>(m - 7) * kSub + static_cast<size_t>(top - 64);
}

uint64_t Histogram::bucket_upper(size_t i) {
    if (i < kExact) {
        return i;
    }
    size_t j = i - kExact;
    int m = static_cast<int>(j / kSub) + 7;
    uint64_t top = j % kSub + 64;
    return ((top + 1) << (m - 6)) - 1;
}

void Histogram::record(uint64_t ns) {
    counts_[bucket_of(ns)]++;
    if (count_ == 0 || ns < min_) {
        min_ = ns;
    }
    max_ = std::max(max_, ns);
    sum_ += static_cast<double>(ns);
    ++count_;
}

void Histogram::merge(const Histogram& o) {
    if (o.count_ == 0) {
        return;
    }
    for (size_t i = 0; i < kBuckets; ++i) {
        counts_[i] += o.counts_[i];
    }
    min_ = count_ == 0 ? o.min_ : std::min(min_, o.min_);
    max_ = std::max(max_, o.max_);
    sum_ += o.sum_;
    count_ += o.count_;
}

void Histogram::clear() {
    std::fill(counts_.begin(), counts_.end(), 0);
    count_ = min_ = max_ = 0;
    sum_ = 0;
}

uint64_t Histogram::percentile(double q) const {
    if (count_ == 0) {
        return 0;
    }
    q = std::clamp(q, 0.0, 1.0);
    uint64_t rank = static_cast<uint64_t>(std::ceil(q * static_cast<double>(count_)));
    rank = std::clamp<uint64_t>(rank, 1, count_);
    uint64_t seen = 0;
    for (size_t i = 0; i < kBuckets; ++i) {
        seen += counts_[i];
        if (seen >= rank) {
            return std::clamp(bucket_upper(i), min_, max_);
        }
    }
    return max_;
}

std::vector<std::pair<uint64_t, uint64_t>> Histogram::buckets() const {
    std::vector<std::pair<uint64_t, uint64_t>> out;
    for (size_t i = 0; i < kBuckets; ++i) {
        if (counts_[i] != 0) {
            out.emplace_back(bucket_upper(i), counts_[i]);
        }
    }
    return out;
}

}  // namespace iolab
