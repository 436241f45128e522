// What the experiments of iolab lessons are built from (lessons_tools.cpp): an iolab subcommand
// run in this process with its tables and progress lines in a log beside the page, the JSON it
// wrote read back, the harness's charts put into the page, a server's traced calls counted, and
// iolab timeline's charts.
#pragma once

#include <nlohmann/json.hpp>

#include <initializer_list>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "harness/svg.hpp"
#include "iolab/lessons.hpp"
#include "iolab/timeline.hpp"

namespace iolab::lesson {

using json = nlohmann::json;

// A number of a result row; -1 where it is missing or null (not measured).
double num(const json& row, const char* key);
// `v` printed with `format`, or "not measured" for a negative value.
std::string text(double v, const char* format);
// a / b as "1.23x", or "not measured".
std::string ratio_text(double a, double b);
// The same two in a Chinese sentence: "未测得" for "not measured".
std::string text_zh(double v, const char* format);
std::string ratio_zh(double a, double b);
// `v` printed with `format` in both languages, for the table of numbers.
Words measured(double v, const char* format);

// The results of one iolab command: its rows, and the variants that could not run.
struct Results {
    json doc;
    int exit_code = 0;
    // The row of `variant` at `conns` connections (and shape), or nullptr.
    const json* row(const std::string& variant, int conns,
                    const std::string& shape = "persistent") const {
        if (!doc.contains("results")) {
            return nullptr;
        }
        for (const json& r : doc["results"]) {
            if (r.value("variant", "") == variant && r.value("conns", -1) == conns &&
                r.value("shape", "persistent") == shape) {
                return &r;
            }
        }
        return nullptr;
    }
    double get(const std::string& variant, int conns, const char* key,
               const std::string& shape = "persistent") const {
        const json* r = row(variant, conns, shape);
        return r ? num(*r, key) : -1;
    }
    // Why a variant has no figures ("unavailable: io_uring refused"), or "".
    std::string skipped(const std::string& variant) const {
        if (doc.contains("skipped")) {
            for (const json& s : doc["skipped"]) {
                if (s.value("variant", "") == variant) {
                    return s.value("status", "") + ": " + s.value("reason", "");
                }
            }
        }
        return "";
    }
};

// The iolab commands, with the lesson's run length; each adds its command line to the lesson and
// writes into the lesson's directory (compare: into its subdirectory `sub`, if given).
struct CompareExtra {
    bool per_request = false;  // --connect-per-request
    std::string sub;           // a subdirectory of the lesson's for the output
    double warmup = -1;        // >= 0: replaces the run's
    double rate = 0;           // > 0: --rate, open loop
};
Results compare(LessonRun& run, Lesson& l, const std::string& models, const std::string& conns,
                const CompareExtra& extra = {});
// iolab scale MODELS --idle IDLE --active ACTIVE. Few active connections make a wait call's cost
// per descriptor show: with many, each call returns many ready ones and they share its cost.
Results idle_sweep(LessonRun& run, Lesson& l, const std::string& models, const std::string& idle,
                   int active);
// The idle sweep's point of `variant` at `idle` idle connections, if it was measured.
const json* idle_point(const Results& r, const std::string& variant, int idle);
Results bench(LessonRun& run, Lesson& l, const std::string& variant, int conns);
// iolab timeline VARIANT --scene SCENE, its chart beside the page and in it.
TimelineResult timeline_of(LessonRun& run, Lesson& l, const std::string& variant,
                           const std::string& scene, Words caption);

// A chart (harness/svg.hpp) beside the page and in it.
void add_chart(LessonRun& run, Lesson& l, const std::string& file, const ChartSpec& spec,
               const std::vector<Series>& series, Words caption);
// A figure a command already drew, from `path`, linked as `relative`.
void add_drawn(Lesson& l, const std::string& path, const std::string& relative, Words caption);
// One series per variant of the row field `key` against connections.
std::vector<Series> series_of(const Results& r, const std::vector<std::string>& variants,
                              const char* key, const std::string& shape = "persistent");
// One bar per (name, value).
std::vector<Series> bars(const std::vector<std::pair<std::string, double>>& values);
// The line under a chart's title: the machine and the pinning.
std::string note_of(const LessonRun& run);

// The server's IO calls while `requests` PINGs go over one connection, counted by name from its
// --trace lines, per request.
struct CallCounts {
    bool ran = false;
    std::string why;
    std::map<std::string, double> per_request;
};
CallCounts traced_calls(const LessonRun& run, const std::string& variant, int requests);
// "recv 1.00, send 1.00", or why nothing was counted.
Words calls_text(const CallCounts& c);
// The calls of these names, per request.
double calls_of(const CallCounts& c, std::initializer_list<const char*> names);

// The futex(2) calls of a variant per request, counted by strace -f -c while `requests` PINGs go
// over four connections in turn (strace, where it is installed, sees every thread, glibc's AIO
// helpers included).
struct FutexCount {
    bool ran = false;
    std::string why;
    double per_request = -1;
    std::string command;  // the strace command line
};
FutexCount futexes(const LessonRun& run, const std::string& variant, int requests);

}  // namespace iolab::lesson
