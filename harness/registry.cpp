#include "harness/registry.hpp"

#include <unistd.h>

#include <algorithm>
#include <climits>
#include <sstream>

namespace iolab {

namespace {

struct Row {
    const char* name;
    const char* binary;
    const char* args;
    const char* traits;
};

const Row kRows[] = {
#include "registry_table.inc"
};

std::vector<std::string> split(const std::string& s, char sep) {
    std::vector<std::string> out;
    std::stringstream in(s);
    std::string word;
    while (std::getline(in, word, sep)) {
        if (!word.empty()) {
            out.push_back(word);
        }
    }
    return out;
}

}  // namespace

bool Variant::has(const std::string& trait) const {
    return std::find(traits.begin(), traits.end(), trait) != traits.end();
}

std::vector<Variant> registry(const std::string& bin_dir, Rows rows) {
    std::vector<Variant> out;
    for (const Row& r : kRows) {
        Variant v{r.name, bin_dir + "/" + r.binary, split(r.args, ' '), split(r.traits, ',')};
        if (rows == Rows::with_yardsticks || !v.has("yardstick")) {
            out.push_back(std::move(v));
        }
    }
    std::sort(out.begin(), out.end(),
              [](const Variant& a, const Variant& b) { return a.name < b.name; });
    return out;
}

void PrintTo(const Variant& v, std::ostream* os) {
    *os << v.name;
}

std::string self_dir() {
    char path[PATH_MAX];
    ssize_t n = ::readlink("/proc/self/exe", path, sizeof path - 1);
    if (n <= 0) {
        return ".";
    }
    std::string s(path, static_cast<size_t>(n));
    return s.substr(0, s.rfind('/'));
}

}  // namespace iolab
