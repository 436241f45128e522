#include "harness/results.hpp"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <system_error>
#include <type_traits>
#include <variant>

#include <nlohmann/json.hpp>

namespace iolab {

namespace {

// ---------------------------------------------------------------------------------------------
// The fields of a row

using Value = std::variant<std::string, long long, double, bool>;

template <auto Member>
Value get(const PointResult& r) {
    const auto& v = r.*Member;
    using T = std::decay_t<decltype(v)>;
    if constexpr (std::is_same_v<T, std::string> || std::is_same_v<T, bool> ||
                  std::is_same_v<T, double>) {
        return v;
    } else {
        return static_cast<long long>(v);
    }
}

// How a field is written in each output.
enum class Kind {
    text,            // a string; CSV quotes it when it holds a comma, a quote or a newline
    text_or_null,    // the same, but "" is null in JSON
    count,           // an integer, written as it is everywhere (pss_kib's -1 too)
    count_or_blank,  // an integer, -1 empty in CSV and "-" in the table (JSON keeps -1)
    number,          // to `decimals` places; negative: not measured, null / empty / "-"
    flag,            // true or false
};

// The field's column in the text table: its place from the left (0: not in the table), its
// heading, and the text of its cell when the kind's default will not do.
struct Column {
    int place = 0;
    const char* heading = "";
    std::string (*cell)(const PointResult&) = nullptr;
    bool per_request_only = false;  // shown only when some row connects per request
};

struct Field {
    const char* name;  // JSON member and CSV column
    Value (*value)(const PointResult&);
    Kind kind;
    int decimals = 0;
    Column column = {};
};

// 123456 -> "123456", 12.345 -> "12.3", missing -> "-".
std::string cell(double v, int decimals = 1) {
    if (v < 0 || !std::isfinite(v)) {
        return "-";
    }
    char text[32];
    std::snprintf(text, sizeof text, "%.*f", v >= 1000 ? 0 : decimals, v);
    return text;
}

std::string mode_cell(const PointResult& r) {
    std::string mode = r.mode == "open" ? "open@" + cell(r.rate, 0) : r.mode;
    return r.shape == "per-request" ? mode + " new-conn" : mode;
}
std::string syscalls_cell(const PointResult& r) {
    return cell(r.syscalls_per_req, 2) + (r.syscalls_source == "traced" ? "t" : "");
}
std::string uring_cell(const PointResult& r) {
    return r.uring_ops_per_req == 0 ? "0" : cell(r.uring_ops_per_req, 2);
}
std::string client_cell(const PointResult& r) {
    return cell(r.client_cpu_pct, 0) + (r.client_bound ? "!" : "");
}
std::string wrong_cell(const PointResult& r) {
    return r.wrong > 0 ? std::to_string(r.wrong) + " BUG" : "0";
}

// Every field of a row, in the order of the CSV's columns, which is also the JSON's. Scripts read
// CSV columns by position: a new field goes just before first_error, never between two others.
// docs/measuring.md says what each one means.
const Field kFields[] = {
    {"variant", get<&PointResult::variant>, Kind::text, 0, {1, "variant"}},
    {"conns", get<&PointResult::conns>, Kind::count, 0, {2, "conns"}},
    {"payload", get<&PointResult::payload>, Kind::count},
    {"mode", get<&PointResult::mode>, Kind::text, 0, {3, "mode", mode_cell}},
    {"rate", get<&PointResult::rate>, Kind::number, 0},
    {"duration_s", get<&PointResult::duration_s>, Kind::number, 3},
    {"requests", get<&PointResult::requests>, Kind::count},
    {"req_per_s", get<&PointResult::req_per_s>, Kind::number, 0, {4, "req/s"}},
    {"p50_us", get<&PointResult::p50_us>, Kind::number, 1, {5, "p50"}},
    {"p99_us", get<&PointResult::p99_us>, Kind::number, 1, {6, "p99"}},
    {"p999_us", get<&PointResult::p999_us>, Kind::number, 1, {7, "p99.9"}},
    {"max_us", get<&PointResult::max_us>, Kind::number, 1},
    {"server_cpu_us_per_req",
     get<&PointResult::server_cpu_us_per_req>,
     Kind::number,
     2,
     {8, "cpu/req"}},
    {"syscalls_per_req",
     get<&PointResult::syscalls_per_req>,
     Kind::number,
     2,
     {9, "sys/req", syscalls_cell}},
    {"threads", get<&PointResult::threads>, Kind::count, 0, {11, "threads"}},
    {"rss_kib", get<&PointResult::rss_kib>, Kind::count, 0, {12, "rss KiB"}},
    {"rss_per_conn_kib", get<&PointResult::rss_per_conn_kib>, Kind::number, 2, {13, "KiB/conn"}},
    {"ctx_switches_voluntary", get<&PointResult::ctx_switches_voluntary>, Kind::count},
    {"ctx_switches_involuntary", get<&PointResult::ctx_switches_involuntary>, Kind::count},
    {"client_cpu_pct",
     get<&PointResult::client_cpu_pct>,
     Kind::number,
     1,
     {14, "client %", client_cell}},
    {"client_bound", get<&PointResult::client_bound>, Kind::flag},
    {"errors", get<&PointResult::errors>, Kind::count},
    {"not_sent", get<&PointResult::not_sent>, Kind::count},
    {"conns_connected", get<&PointResult::conns_connected>, Kind::count},
    {"shape", get<&PointResult::shape>, Kind::text},
    {"processes", get<&PointResult::processes>, Kind::count},
    {"pss_kib", get<&PointResult::pss_kib>, Kind::count},
    {"accepts_per_s",
     get<&PointResult::accepts_per_s>,
     Kind::number,
     0,
     {20, "accepts/s", nullptr, true}},
    {"time_wait",
     get<&PointResult::time_wait>,
     Kind::count_or_blank,
     0,
     {21, "TIME_WAIT", nullptr, true}},
    {"syscalls_source", get<&PointResult::syscalls_source>, Kind::text_or_null},
    {"uring_ops_per_req",
     get<&PointResult::uring_ops_per_req>,
     Kind::number,
     2,
     {10, "uring/req", uring_cell}},
    {"answered", get<&PointResult::answered>, Kind::count, 0, {15, "answered"}},
    {"refused", get<&PointResult::refused>, Kind::count, 0, {16, "refused"}},
    {"unanswered", get<&PointResult::unanswered>, Kind::count, 0, {17, "no reply"}},
    {"wrong", get<&PointResult::wrong>, Kind::count, 0, {18, "WRONG", wrong_cell}},
    {"lost", get<&PointResult::lost>, Kind::count, 0, {19, "lost"}},
    {"first_error", get<&PointResult::first_error>, Kind::text},
};

bool missing(double v) {
    return v < 0 || !std::isfinite(v);
}

std::string fixed(double v, int decimals) {
    char text[64];
    std::snprintf(text, sizeof text, "%.*f", decimals, v);
    return text;
}

nlohmann::ordered_json json_of(const Field& f, const PointResult& r) {
    Value v = f.value(r);
    switch (f.kind) {
        case Kind::text:
            return std::get<std::string>(v);
        case Kind::text_or_null:
            if (std::get<std::string>(v).empty()) {
                return nullptr;
            }
            return std::get<std::string>(v);
        case Kind::count:
        case Kind::count_or_blank:
            return std::get<long long>(v);
        case Kind::number: {
            double d = std::get<double>(v);
            if (missing(d)) {
                return nullptr;
            }
            if (f.decimals == 0) {
                return std::llround(d);
            }
            // The value of the text the CSV shows, so that the two files agree to the digit.
            return std::strtod(fixed(d, f.decimals).c_str(), nullptr);
        }
        case Kind::flag:
            return std::get<bool>(v);
    }
    return nullptr;
}

std::string csv_quoted(const std::string& s) {
    if (s.find_first_of(",\"\n") == std::string::npos) {
        return s;
    }
    std::string out = "\"";
    for (char ch : s) {
        out += ch == '"' ? std::string("\"\"") : std::string(1, ch == '\n' ? ' ' : ch);
    }
    return out + "\"";
}

std::string csv_of(const Field& f, const PointResult& r) {
    Value v = f.value(r);
    switch (f.kind) {
        case Kind::text:
        case Kind::text_or_null:
            return csv_quoted(std::get<std::string>(v));
        case Kind::count:
            return std::to_string(std::get<long long>(v));
        case Kind::count_or_blank:
            return std::get<long long>(v) < 0 ? "" : std::to_string(std::get<long long>(v));
        case Kind::number:
            return missing(std::get<double>(v)) ? "" : fixed(std::get<double>(v), f.decimals);
        case Kind::flag:
            return std::get<bool>(v) ? "true" : "false";
    }
    return "";
}

std::string cell_of(const Field& f, const PointResult& r) {
    if (f.column.cell != nullptr) {
        return f.column.cell(r);
    }
    Value v = f.value(r);
    switch (f.kind) {
        case Kind::text:
        case Kind::text_or_null:
            return std::get<std::string>(v);
        case Kind::count:
            return std::to_string(std::get<long long>(v));
        case Kind::count_or_blank:
            return std::get<long long>(v) < 0 ? "-" : std::to_string(std::get<long long>(v));
        case Kind::number:
            return cell(std::get<double>(v), f.decimals);
        case Kind::flag:
            return std::get<bool>(v) ? "yes" : "no";
    }
    return "";
}

// The table's columns, left to right.
std::vector<const Field*> table_columns(bool per_request) {
    std::vector<const Field*> out;
    for (const Field& f : kFields) {
        if (f.column.place > 0 && (per_request || !f.column.per_request_only)) {
            out.push_back(&f);
        }
    }
    std::sort(out.begin(), out.end(),
              [](const Field* a, const Field* b) { return a->column.place < b->column.place; });
    return out;
}

}  // namespace

std::string results_json(const RunInfo& info, const std::vector<PointResult>& rows,
                         const std::vector<Skipped>& skipped, const std::string& extra) {
    nlohmann::ordered_json doc;
    doc["run"] = {{"command", info.command}, {"started_at", info.started_at},
                  {"kernel", info.kernel},   {"cpu_model", info.cpu_model},
                  {"cores", info.cores},     {"io_uring", info.io_uring},
                  {"pinning", info.pinning}, {"load", info.load},
                  {"syscalls", nullptr}};
    if (!info.syscalls.empty()) {
        doc["run"]["syscalls"] = info.syscalls;
    }
    doc["results"] = nlohmann::ordered_json::array();
    for (const PointResult& r : rows) {
        nlohmann::ordered_json row;
        for (const Field& f : kFields) {
            row[f.name] = json_of(f, r);
        }
        doc["results"].push_back(std::move(row));
    }
    doc["skipped"] = nlohmann::ordered_json::array();
    for (const Skipped& s : skipped) {
        doc["skipped"].push_back({{"variant", s.variant},
                                  {"status", s.unavailable ? "unavailable" : "failed"},
                                  {"reason", s.reason}});
    }
    if (!extra.empty()) {
        nlohmann::ordered_json more =
            nlohmann::ordered_json::parse("{" + extra + "}", nullptr, /*allow_exceptions=*/false);
        if (more.is_discarded()) {
            throw std::invalid_argument("results_json: extra members do not parse: " + extra);
        }
        for (auto& [key, value] : more.items()) {
            doc[key] = value;
        }
    }
    // A server's bytes can reach first_error; what is not UTF-8 is written as U+FFFD.
    return doc.dump(2, ' ', false, nlohmann::ordered_json::error_handler_t::replace) + "\n";
}

std::string results_csv(const std::vector<PointResult>& rows) {
    std::string out;
    for (const Field& f : kFields) {
        out += (out.empty() ? "" : ",") + std::string(f.name);
    }
    out += '\n';
    for (const PointResult& r : rows) {
        bool first = true;
        for (const Field& f : kFields) {
            out += (first ? "" : ",") + csv_of(f, r);
            first = false;
        }
        out += '\n';
    }
    return out;
}

std::string results_table(const std::vector<PointResult>& rows,
                          const std::vector<Skipped>& skipped) {
    bool per_request = false, any_bound = false, any_traced = false, any_kernel = false;
    uint64_t refused = 0, unanswered = 0, wrong = 0, lost = 0;
    for (const PointResult& r : rows) {
        per_request = per_request || r.shape == "per-request";
        any_bound = any_bound || r.client_bound;
        any_traced = any_traced || r.syscalls_source == "traced";
        any_kernel = any_kernel || r.syscalls_source == "kernel";
        refused += r.refused;
        unanswered += r.unanswered;
        wrong += r.wrong;
        lost += r.lost;
    }
    std::vector<const Field*> columns = table_columns(per_request);
    std::vector<std::vector<std::string>> t(1);
    for (const Field* f : columns) {
        t[0].push_back(f->column.heading);
    }
    for (const PointResult& r : rows) {
        t.emplace_back();
        for (const Field* f : columns) {
            t.back().push_back(cell_of(*f, r));
        }
    }
    std::vector<size_t> width(columns.size(), 0);
    for (const auto& row : t) {
        for (size_t i = 0; i < row.size(); ++i) {
            width[i] = std::max(width[i], row[i].size());
        }
    }
    std::ostringstream o;
    for (const auto& row : t) {
        for (size_t i = 0; i < row.size(); ++i) {
            // Names left-aligned, numbers right-aligned.
            if (columns[i]->kind == Kind::text) {
                o << row[i] << std::string(width[i] - row[i].size(), ' ');
            } else {
                o << std::string(width[i] - row[i].size(), ' ') << row[i];
            }
            o << (i + 1 < row.size() ? "  " : "\n");
        }
    }
    o << "\np50, p99, p99.9: latency in us; cpu/req: us of server CPU (its whole process tree)\n";
    if (any_kernel) {
        o << "sys/req: every system call of the server's threads and processes, counted by the "
             "kernel (tracepoint raw_syscalls:sys_enter); uring/req: io_uring completions "
             "(io_uring:io_uring_complete)\n";
    }
    if (any_traced) {
        o << "t  counted by the server itself (its TRACE_IO calls, STATS syscalls=), because "
             "the kernel refused its tracepoint: calls inside libraries and helper threads are "
             "missing\n";
    }
    if (refused > 0) {
        o << "refused: connections turned away with ERR server busy or ERR server full, then "
             "closed: the model's documented limit, not a fault\n";
    }
    if (unanswered > 0) {
        o << "no reply: requests still unanswered 500 ms after the window (a serial server's "
             "waiting clients, a stalled one's queue)\n";
    }
    if (lost > 0) {
        o << "lost: connections that failed to connect, or were reset or closed before a reply\n";
    }
    if (wrong > 0) {
        o << "BUG: a reply byte differed from what was asked for. No model teaches that: it is a "
             "bug in the server\n";
    }
    for (const PointResult& r : rows) {
        if (r.wrong > 0 || r.lost > 0) {
            o << (r.wrong > 0 ? "  BUG " : "  lost ") << r.variant << " at " << r.conns
              << " conns: " << r.first_error.substr(0, 160) << "\n";
        }
    }
    if (any_bound) {
        o << "! the load generator was 90% busy or more at this point: the figure is the "
             "client's limit, not the server's\n";
    }
    for (const Skipped& s : skipped) {
        o << s.variant << ": " << (s.unavailable ? "unavailable here" : "FAILED") << ": "
          << s.reason << "\n";
    }
    return o.str();
}

void write_text_file(const std::string& path, const std::string& text) {
    std::filesystem::path parent = std::filesystem::path(path).parent_path();
    if (!parent.empty()) {
        std::error_code ec;
        std::filesystem::create_directories(parent, ec);
        if (ec) {
            throw std::system_error(ec, "mkdir " + parent.string());
        }
    }
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << text;
    out.flush();
    if (!out) {
        throw std::system_error(errno ? errno : EIO, std::generic_category(), "write " + path);
    }
}

}  // namespace iolab
