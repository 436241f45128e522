// The tools every experiment of iolab lessons is built from: running an iolab subcommand in this
// process with its output in a log, reading back the JSON it wrote, charts, traced call counts and
// timelines.

#include "iolab/lessons_tools.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "harness/clients.hpp"
#include "iolab/commands.hpp"
#include "iolab/lab.hpp"

namespace iolab::lesson {

namespace {
// An experiment's tables and progress lines go to its log beside the page (log.txt), so that the
// terminal shows one line per claim; the log keeps everything the commands printed.
class OutputTo {
public:
    explicit OutputTo(const std::string& path) {
        std::filesystem::create_directories(std::filesystem::path(path).parent_path());
        std::fflush(stdout);
        std::fflush(stderr);
        saved_out_ = ::fcntl(STDOUT_FILENO, F_DUPFD_CLOEXEC, 3);
        saved_err_ = ::fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 3);
        int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd >= 0) {
            ::dup2(fd, STDOUT_FILENO);
            ::dup2(fd, STDERR_FILENO);
            ::close(fd);
        }
    }
    ~OutputTo() {
        std::fflush(stdout);
        std::fflush(stderr);
        ::dup2(saved_out_, STDOUT_FILENO);
        ::dup2(saved_err_, STDERR_FILENO);
        ::close(saved_out_);
        ::close(saved_err_);
    }
    OutputTo(const OutputTo&) = delete;
    OutputTo& operator=(const OutputTo&) = delete;

private:
    int saved_out_ = -1;
    int saved_err_ = -1;
};

json read_json(const std::string& path) {
    std::ifstream in(path);
    json doc = json::parse(in, nullptr, /*allow_exceptions=*/false);
    return doc.is_discarded() ? json::object() : doc;
}

}  // namespace

// A number of a result row; -1 where it is missing or null (not measured).
double num(const json& row, const char* key) {
    auto it = row.find(key);
    return it == row.end() || !it->is_number() ? -1 : it->get<double>();
}

std::string text(double v, const char* format) {
    if (v < 0) {
        return "not measured";
    }
    char out[64];
    std::snprintf(out, sizeof out, format, v);
    return out;
}

std::string ratio_text(double a, double b) {
    return a > 0 && b > 0 ? text(a / b, "%.2fx") : "not measured";
}

std::string text_zh(double v, const char* format) {
    return v < 0 ? "未测得" : text(v, format);
}

std::string ratio_zh(double a, double b) {
    return a > 0 && b > 0 ? text(a / b, "%.2fx") : "未测得";
}

Words measured(double v, const char* format) {
    return en_zh(text(v, format), text_zh(v, format));
}

namespace {

// A number as a command line takes it: 0.3, 1.
std::string shell_number(double v) {
    char out[32];
    std::snprintf(out, sizeof out, "%g", v);
    return out;
}

}  // namespace

// iolab compare over `models` at `conns`, its output in the lesson's directory (or a
// subdirectory `sub`); the command line goes on the page.
Results compare(LessonRun& run, Lesson& l, const std::string& models, const std::string& conns,
                const CompareExtra& extra) {
    CompareOptions opt;
    opt.models = models;
    opt.conns = conns;
    opt.duration = run.duration;
    opt.warmup = extra.warmup >= 0 ? extra.warmup : run.warmup;
    opt.rate = extra.rate;
    opt.connect_per_request = extra.per_request;
    opt.out = run.dir(l) + (extra.sub.empty() ? "" : "/" + extra.sub);
    std::string command =
        "iolab compare --models " + models + " --conns " + conns + " --duration " +
        shell_number(opt.duration) + " --warmup " + shell_number(opt.warmup) +
        (opt.rate > 0 ? " --rate " + shell_number(opt.rate) : "") +
        (opt.connect_per_request ? " --connect-per-request" : "") + " --out " + opt.out;
    l.commands.push_back(command);
    Results r;
    {
        OutputTo log(opt.out + "/log.txt");
        r.exit_code = run_compare(opt, command);
    }
    r.doc = read_json(opt.out + "/results.json");
    return r;
}

// iolab scale --idle over `models` at the idle counts `idle`, `active` connections measured. Few
// active connections make a wait call's cost per descriptor show: with many, every call returns
// many ready ones and its cost is shared among their requests.
Results idle_sweep(LessonRun& run, Lesson& l, const std::string& models, const std::string& idle,
                   int active) {
    ScaleOptions opt;
    opt.idle_sweep = true;
    opt.variant = models;
    opt.idle = idle;
    opt.active = active;
    opt.duration = run.duration;
    opt.warmup = run.warmup;
    opt.out = run.dir(l);
    std::string command = "iolab scale " + models + " --idle " + idle + " --active " +
                          std::to_string(active) + " --duration " + shell_number(opt.duration) +
                          " --warmup " + shell_number(opt.warmup) + " --out " + opt.out;
    l.commands.push_back(command);
    Results r;
    {
        OutputTo log(opt.out + "/log.txt");
        r.exit_code = run_scale(opt, command);
    }
    r.doc = read_json(opt.out + "/scale-idle.json");
    return r;
}

// One point of the idle sweep: {variant, idle} -> its figures.
const json* idle_point(const Results& r, const std::string& variant, int idle) {
    if (!r.doc.contains("idle_sweep")) {
        return nullptr;
    }
    for (const json& p : r.doc["idle_sweep"]["points"]) {
        if (p.value("variant", "") == variant && p.value("idle", -1) == idle &&
            p.value("measured", false)) {
            return &p;
        }
    }
    return nullptr;
}

// iolab bench VARIANT with `conns` connections.
Results bench(LessonRun& run, Lesson& l, const std::string& variant, int conns) {
    BenchOptions opt;
    opt.variant = variant;
    opt.conns = conns;
    opt.duration = run.duration;
    opt.out = run.dir(l);
    std::string command = "iolab bench " + variant + " --conns " + std::to_string(conns) +
                          " --duration " + shell_number(opt.duration) + " --out " + opt.out;
    l.commands.push_back(command);
    Results r;
    {
        OutputTo log(opt.out + "/log.txt");
        r.exit_code = run_bench(opt, command);
    }
    r.doc = read_json(opt.out + "/bench-" + variant + ".json");
    return r;
}

// A chart beside the page and in it.
void add_chart(LessonRun& run, Lesson& l, const std::string& file, const ChartSpec& spec,
               const std::vector<Series>& series, Words caption) {
    std::string svg = svg_chart(spec, series);
    write_text_file(run.dir(l) + "/" + file, svg);
    l.figures.push_back({std::move(caption), svg, l.slug + "/" + file});
}

// The figure a command already drew (scale --idle's growth chart), taken into the page.
void add_drawn(Lesson& l, const std::string& path, const std::string& relative, Words caption) {
    std::ifstream in(path);
    std::stringstream svg;
    svg << in.rdbuf();
    if (!svg.str().empty()) {
        l.figures.push_back({std::move(caption), svg.str(), relative});
    }
}

// One series per variant of `key` against connections, from compare's rows.
std::vector<Series> series_of(const Results& r, const std::vector<std::string>& variants,
                              const char* key, const std::string& shape) {
    std::vector<Series> out;
    for (const std::string& v : variants) {
        Series s{v, {}};
        if (r.doc.contains("results")) {
            for (const json& row : r.doc["results"]) {
                if (row.value("variant", "") == v && row.value("shape", "persistent") == shape) {
                    s.points.emplace_back(row.value("conns", 0), num(row, key));
                }
            }
        }
        if (!s.points.empty()) {
            out.push_back(s);
        }
    }
    return out;
}

// One bar per (name, value).
std::vector<Series> bars(const std::vector<std::pair<std::string, double>>& values) {
    std::vector<Series> out;
    for (const auto& [name, v] : values) {
        out.push_back({name, {{1, v}}});
    }
    return out;
}

std::string note_of(const LessonRun& run) {
    return run.machine.cpu_model + ", " + std::to_string(run.machine.cores) + " cores; " +
           run.pin.text;
}

CallCounts traced_calls(const LessonRun& run, const std::string& variant, int requests) {
    CallCounts out;
    std::vector<Variant> found = select_variants(registry(self_dir()), variant);
    ServerProcess server = start_pinned(found.front(), {"--trace"}, run.pin);
    if (!server.running()) {
        out.why = server.reason();
        return out;
    }
    int answered = 0;
    try {
        Client c = Client::connect(server.port(), server.host());
        for (int i = 0; i < requests; ++i) {
            answered += c.ask("PING") == "PONG" ? 1 : 0;
        }
    } catch (const std::exception& e) {
        out.why = e.what();
    }
    server.stop();
    std::istringstream lines(server.stderr_text());
    std::string line;
    while (std::getline(lines, line)) {
        std::istringstream words(line);
        std::string usec, call, fd;
        if (words >> usec >> call >> fd && fd.rfind("fd=", 0) == 0) {
            out.per_request[call] += 1.0 / std::max(answered, 1);
        }
    }
    out.ran = answered == requests;
    if (!out.ran && out.why.empty()) {
        out.why = std::to_string(answered) + " of " + std::to_string(requests) + " answered";
    }
    return out;
}

Words calls_text(const CallCounts& c) {
    if (!c.ran) {
        return en_zh("not measured: " + c.why, "未测得：" + c.why);
    }
    std::string out, out_zh;
    for (const auto& [call, n] : c.per_request) {
        if (n >= 0.05) {
            out += (out.empty() ? "" : ", ") + call + " " + text(n, "%.2f");
            out_zh += (out_zh.empty() ? "" : "，") + call + " " + text(n, "%.2f");
        }
    }
    return out.empty() ? en_zh("none traced", "没有记录到调用") : en_zh(out, out_zh);
}

double calls_of(const CallCounts& c, std::initializer_list<const char*> names) {
    double sum = 0;
    for (const char* n : names) {
        auto it = c.per_request.find(n);
        sum += it == c.per_request.end() ? 0 : it->second;
    }
    return sum;
}

// iolab timeline VARIANT under `scene`, drawn beside the page and into it.
TimelineResult timeline_of(LessonRun& run, Lesson& l, const std::string& variant,
                           const std::string& scene, Words caption) {
    std::vector<Variant> found = select_variants(registry(self_dir()), variant);
    std::string file = "timeline-" + variant + ".svg";
    std::string path = run.dir(l) + "/" + file;
    l.commands.push_back("iolab timeline " + variant + " --scene " + scene + " --out " + path);
    TimelineResult r;
    {
        OutputTo log(run.dir(l) + "/log.txt");
        r = draw_timeline(found.front(), scene_by_name(scene), path);
    }
    if (r.ok) {
        add_drawn(l, path, l.slug + "/" + file, std::move(caption));
    }
    return r;
}

FutexCount futexes(const LessonRun& run, const std::string& variant, int requests) {
    FutexCount out;
    const char* strace = "/usr/bin/strace";
    std::vector<Variant> found = select_variants(registry(self_dir()), variant);
    const Variant& v = found.front();
    std::string file = std::filesystem::temp_directory_path() /
                       ("iolab-lessons-strace-" + std::to_string(::getpid()) + ".txt");
    out.command = std::string("strace -f -c -e trace=futex -o futex.txt ") + v.binary;
    if (::access(strace, X_OK) != 0) {
        out.why = "strace is not installed";
        return out;
    }
    std::vector<std::string> args = {"-f", "-qq", "-c", "-e", "trace=futex", "-o", file, v.binary};
    args.insert(args.end(), v.args.begin(), v.args.end());
    pin_to_server(run.pin);
    ServerProcess tracer = ServerProcess::start_binary(strace, args);
    pin_to_load(run.pin);
    if (!tracer.running()) {
        out.why = tracer.reason();
        return out;
    }
    int answered = 0;
    try {
        std::vector<Client> clients;
        for (int i = 0; i < 4; ++i) {
            clients.push_back(Client::connect(tracer.port(), tracer.host()));
        }
        for (int i = 0; i < requests; ++i) {
            answered += clients[static_cast<size_t>(i) % 4].ask("PING") == "PONG" ? 1 : 0;
        }
    } catch (const std::exception& e) {
        out.why = e.what();
    }
    // Once the server has exited, strace writes the summary and exits too.
    tracer.stop_tracee(std::chrono::seconds(5));
    std::ifstream in(file);
    std::string line;
    while (std::getline(in, line)) {
        std::istringstream words(line);
        std::vector<std::string> w;
        for (std::string x; words >> x;) {
            w.push_back(x);
        }
        if (w.size() >= 5 && w.back() == "futex" && answered > 0) {
            out.per_request = std::atof(w[3].c_str()) / answered;
        }
    }
    std::filesystem::remove(file);
    out.ran = answered == requests;
    if (out.per_request < 0 && answered == requests) {
        out.per_request = 0;  // strace lists no futex line when there was no call
    }
    if (!out.ran && out.why.empty()) {
        out.why = std::to_string(answered) + " of " + std::to_string(requests) + " answered";
    }
    return out;
}

}  // namespace iolab::lesson
