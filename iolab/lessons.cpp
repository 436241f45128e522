// iolab lessons: runs the experiment of every claim in turn, one progress line each on the
// terminal, and writes DIR/index.html after each one, so that an interrupted run still leaves a
// page of what it measured.

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <set>
#include <sstream>

#include "common/stop.hpp"
#include "iolab/commands.hpp"
#include "iolab/lab.hpp"
#include "iolab/lessons.hpp"

namespace iolab {

namespace {

const char* verdict_word(Verdict v) {
    switch (v) {
        case Verdict::holds:
            return "holds";
        case Verdict::does_not_hold:
            return "DOES NOT HOLD";
        case Verdict::cannot_show:
            return "cannot be shown here";
        case Verdict::not_measured:
            return "NOT MEASURED";
    }
    return "";
}

// The 1-minute load average: how much else wanted the CPUs while an experiment ran.
double load_average() {
    double load = -1;
    if (FILE* f = std::fopen("/proc/loadavg", "r")) {
        if (std::fscanf(f, "%lf", &load) != 1) {
            load = -1;
        }
        std::fclose(f);
    }
    return load;
}

}  // namespace

int run_lessons(const LessonsOptions& opt, const std::string& command_line) {
    std::set<int> only;
    if (!opt.only.empty()) {
        for (int n : parse_int_list(opt.only, "--only", 1)) {
            only.insert(n);
        }
    }
    std::vector<const Claim*> chosen;
    for (const Claim& c : claims()) {
        if (only.empty() || only.count(c.number)) {
            chosen.push_back(&c);
        }
    }
    if (chosen.empty()) {
        std::fprintf(stderr, "iolab lessons: --only %s names no claim (1 to 14)\n",
                     opt.only.c_str());
        return 2;
    }

    LessonRun run;
    run.quick = opt.quick;
    run.out = opt.out;
    // A quick point is long enough for the shape of every figure and too short for its digits.
    run.duration = opt.quick ? 0.3 : 1.0;
    run.warmup = opt.quick ? 0.15 : 0.3;
    run.pin = plan_pinning();
    raise_fd_limit();
    run.server_cpus = run.pin.enabled ? CPU_COUNT(&run.pin.server) : describe_machine().cores;
    run.machine = describe_machine();
    run.machine.command = command_line;
    // The experiments' own output goes to their logs (stdout and stderr are redirected while each
    // command runs); the progress lines go to the terminal through a descriptor of their own.
    int progress_fd = ::fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 3);
    FILE* progress = progress_fd >= 0 ? ::fdopen(progress_fd, "w") : nullptr;
    run.progress = progress != nullptr ? progress : stderr;
    std::setvbuf(run.progress, nullptr, _IOLBF, 0);

    std::fprintf(run.progress, "iolab lessons: %zu claims, %s points of %.1f s; %s; page in %s\n",
                 chosen.size(), opt.quick ? "quick" : "full", run.duration, run.pin.text.c_str(),
                 (opt.out + "/index.html").c_str());
    std::vector<Lesson> lessons;
    int64_t started = now_ns();
    for (size_t i = 0; i < chosen.size() && !stop_requested(); ++i) {
        const Claim& c = *chosen[i];
        Lesson l;
        l.number = c.number;
        l.slug = c.slug;
        l.title = c.title;
        l.claim = c.claim;
        double elapsed = static_cast<double>(now_ns() - started) / 1e9;
        std::string left = i == 0 ? ""
                                  : "  ~" +
                                        format_seconds(elapsed / static_cast<double>(i) *
                                                       static_cast<double>(chosen.size() - i)) +
                                        " left";
        std::fprintf(run.progress, "[%zu/%zu] %2d. %s%s\n", i + 1, chosen.size(), c.number,
                     c.title.at("en").c_str(), left.c_str());
        int64_t t0 = now_ns();
        double load = load_average();
        try {
            c.run(run, l);
        } catch (const std::exception& e) {
            judge(l, Verdict::not_measured,
                  en_zh(std::string("The experiment failed: ") + e.what(),
                        std::string("实验失败：") + e.what()));
        }
        l.seconds = static_cast<double>(now_ns() - t0) / 1e9;
        if (std::filesystem::exists(run.dir(l) + "/log.txt")) {
            l.log = l.slug + "/log.txt";
        }
        char load_text[64], load_zh[64];
        std::snprintf(load_text, sizeof load_text, "%.1f on %d cores", load, run.machine.cores);
        std::snprintf(load_zh, sizeof load_zh, "%.1f（共 %d 个核）", load, run.machine.cores);
        l.numbers.push_back(
            {en_zh("load average when the experiment started", "实验开始时的平均负载"),
             en_zh(load_text, load_zh)});
        if (load > run.machine.cores) {
            Words busy = en_zh(
                "Other programs were running (load average above the number of cores): the "
                "servers and the load generator shared their CPUs, so rates are lower and "
                "latencies longer than on a quiet machine.",
                "当时还有别的程序在运行（平均负载超过了核数）：服务器和负载生成器要和它们分享 "
                "CPU，所以吞吐量比安静的机器上低，延迟也更长。");
            for (const auto& [lang, text] : busy) {
                std::string& said = l.notes[lang];
                said += (said.empty() ? "" : lang == "en" ? " " : "") + text;
            }
        }
        std::string said = l.verdict_text.count("en") ? l.verdict_text.at("en") : "";
        std::fprintf(run.progress, "        %s (%.1f s): %s\n", verdict_word(l.verdict), l.seconds,
                     said.c_str());
        lessons.push_back(std::move(l));
        write_text_file(opt.out + "/index.html", lessons_page(run, lessons));
    }
    std::map<Verdict, int> count;
    for (const Lesson& l : lessons) {
        ++count[l.verdict];
    }
    std::fprintf(run.progress,
                 "iolab lessons: %d hold, %d do not hold, %d cannot be shown here, %d not "
                 "measured (%s); wrote %s/index.html\n",
                 count[Verdict::holds], count[Verdict::does_not_hold], count[Verdict::cannot_show],
                 count[Verdict::not_measured],
                 format_seconds(static_cast<double>(now_ns() - started) / 1e9).c_str(),
                 opt.out.c_str());
    bool interrupted = stop_requested();
    if (progress != nullptr) {
        std::fclose(progress);
    }
    return interrupted ? 130 : 0;
}

}  // namespace iolab
