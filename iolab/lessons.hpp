// iolab lessons: one experiment per claim of the course, each run on this machine and judged by
// its own numbers. lessons.cpp runs them, lessons_claims.cpp holds the experiments (each made of
// real iolab command lines, run in this process), lessons_page.cpp writes DIR/index.html.
//
// Every sentence a reader sees is a Words: one text per language, keyed by language code. The
// page shows the languages it has and offers a switch only when there is more than one. Each
// sentence is written in English ("en") and Simplified Chinese ("zh-CN", as README.zh-CN.md);
// what reads the same in both (a number with its unit, a variant's name, program output) is
// written once, and the page shows that text in every language.
#pragma once

#include <cstdio>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "harness/procinfo.hpp"
#include "harness/results.hpp"

namespace iolab {

using Words = std::map<std::string, std::string>;
inline const std::string kChinese = "zh-CN";
inline Words en(std::string text) {
    return {{"en", std::move(text)}};
}
inline Words en_zh(std::string english, std::string chinese) {
    return {{"en", std::move(english)}, {kChinese, std::move(chinese)}};
}
// A text that reads the same in every language.
inline Words same(std::string text) {
    return en(std::move(text));
}

enum class Verdict {
    holds,          // the numbers show what the claim says
    does_not_hold,  // they show something else, and the page says what
    cannot_show,    // this machine cannot show it (too few cores, the kernel refused the model)
    not_measured,   // the experiment did not produce its numbers (a server failed, Ctrl-C)
};

struct Figure {
    Words caption;
    std::string svg;   // a standalone SVG document, inlined in the page
    std::string file;  // the same figure beside the page, relative to it
};

struct Number {
    Words label;
    Words value;  // formatted, with its unit: "12.3 us", "4.1x"
};

struct Lesson {
    int number = 0;
    std::string slug;  // "02-thread-per-connection": the directory of its outputs
    Words title;
    Words claim;                        // the claim, in the lab's own words
    std::vector<std::string> commands;  // iolab command lines that reproduce the experiment
    std::vector<Figure> figures;
    std::vector<Number> numbers;
    Verdict verdict = Verdict::not_measured;
    Words verdict_text;  // by how much, from the numbers
    Words notes;         // what this machine can and cannot show
    std::string log;     // what the commands printed, relative to the page; "" if nothing
    double seconds = 0;  // how long the experiment took
};

// What every experiment is given: where to write, how long a load point lasts, the machine.
struct LessonRun {
    bool quick = false;
    std::string out;        // the page's directory
    double duration = 1.0;  // seconds measured per load point
    double warmup = 0.3;
    Pinning pin;
    int server_cpus = 1;  // the CPUs a server may run on (the load generator has the others)
    RunInfo machine;
    FILE* progress = stderr;  // the terminal, while the experiments' own output goes to a log

    // The lesson's directory, relative to the page and as a path.
    std::string dir(const Lesson& l) const { return out + "/" + l.slug; }
};

struct Claim {
    int number;
    const char* slug;
    Words title;
    Words claim;
    std::function<void(LessonRun&, Lesson&)> run;
};
// The course's claims in its order, with their experiments (lessons_claims.cpp).
const std::vector<Claim>& claims();

// The page, DIR/index.html, self-contained (lessons_page.cpp).
std::string lessons_page(const LessonRun& run, const std::vector<Lesson>& lessons);

// Records the verdict of `l` with the sentence that says by how much.
void judge(Lesson& l, Verdict v, Words text);

}  // namespace iolab
