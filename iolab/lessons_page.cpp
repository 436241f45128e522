// The page of iolab lessons: one HTML file with every figure inline, its CSS and its few lines of
// script in it, so that it opens from a USB stick or a projector's laptop with no network. The
// type is large and the layout one column that narrows to a phone's width.
//
// Every text comes from a Words (lessons.hpp) or from the table below, and is written once per
// language the page has, as <span lang="xx">; CSS shows the language named by <body
// data-show="xx">, and the switch at the top, absent while the page has one language, sets it.
// Which language a load starts in follows one rule, stated on the page: ?lang=xx in the address,
// else the browser's language if the page has it, else English; nothing is stored.

#include <cstdlib>
#include <ctime>
#include <set>
#include <sstream>

#include "harness/svg.hpp"
#include "iolab/lessons.hpp"

namespace iolab {

namespace {

// The page's own words, by key.
const std::map<std::string, Words>& page_words() {
    static const std::map<std::string, Words> words = {
        {"language", en_zh("English", "中文")},
        {"title", en_zh("iolab lessons: the course's claims, tested on this machine",
                        "iolab lessons：课程里的论断，在这台机器上逐一检验")},
        {"intro",
         en_zh("Each section below states one claim of the course in the lab's words, runs the "
               "experiment that tests it, draws what was measured and judges the claim from the "
               "numbers alone. Where this machine disagrees with the course, the page says so: "
               "the lab teaches what it measures.",
               "下面每一节先用实验室自己的话写出课程里的一个论断，再运行检验它的实验，把测到的"
               "结果画成图，只凭这些数字判断论断成立与否。这台机器的结果和课程说的不一样时，"
               "页面会照实写出来：实验室教的是它测到的东西。")},
        {"language_rule",
         en_zh("The page opens in Chinese when the browser's language is Chinese and in English "
               "otherwise; add ?lang=en or ?lang=zh-CN to the address to choose. It remembers "
               "nothing between visits.",
               "浏览器的语言是中文时，页面用中文打开，否则用英文；在地址后面加上 ?lang=en 或 "
               "?lang=zh-CN 可以指定语言。页面不会记住上一次的选择。")},
        {"machine", en_zh("Machine", "机器")},
        {"run", en_zh("Run", "运行")},
        {"quick", en_zh("quick (short load points: the shape shows, the digits are rough)",
                        "快速（负载点很短：看得出曲线的形状，具体数字只是粗略值）")},
        {"full", en_zh("full", "完整")},
        {"summary", en_zh("The claims at a glance", "论断一览")},
        {"claim", en_zh("The claim: ", "论断：")},
        {"verdict", en_zh("Verdict", "结论")},
        {"numbers", en_zh("Measured", "测得的数字")},
        {"commands", en_zh("Reproduce it", "自己复现")},
        {"commands_hint",
         en_zh("Each line is a command that runs this experiment again; its output is in this "
               "claim's directory beside the page. ",
               "每一行都是一条命令，可以把这个实验再跑一遍；命令的输出在页面旁边这个论断的目录"
               "里。")},
        {"figure_file", en_zh("figure as a file", "图的文件")},
        {"log", en_zh(": everything the commands printed.", "：命令打印出来的全部内容。")},
        {"took", en_zh("measured in", "测量用时")},
        {"holds", en_zh("holds here", "在这里成立")},
        {"does_not_hold", en_zh("does not hold here", "在这里不成立")},
        {"cannot_show", en_zh("cannot be shown here", "在这里无法展示")},
        {"not_measured", en_zh("not measured", "未测得")},
        {"paren_open", en_zh(" (", "（")},
        {"paren_close", en_zh(")", "）")},
    };
    return words;
}

std::string verdict_key(Verdict v) {
    switch (v) {
        case Verdict::holds:
            return "holds";
        case Verdict::does_not_hold:
            return "does_not_hold";
        case Verdict::cannot_show:
            return "cannot_show";
        case Verdict::not_measured:
            return "not_measured";
    }
    return "not_measured";
}

class Page {
public:
    explicit Page(std::vector<std::string> languages) : languages_(std::move(languages)) {}

    // One span per language; a language the text lacks shows its English.
    std::string say(const Words& w) const {
        std::string out;
        for (const std::string& l : languages_) {
            auto it = w.find(l);
            if (it == w.end()) {
                it = w.find("en");
            }
            if (it != w.end()) {
                out += "<span lang=\"" + l + "\">" + xml_escape(it->second) + "</span>";
            }
        }
        return out;
    }
    std::string say(const std::string& key) const { return say(page_words().at(key)); }
    const std::vector<std::string>& languages() const { return languages_; }

private:
    std::vector<std::string> languages_;
};

// Every language any text of the page has, English first.
std::vector<std::string> languages_of(const std::vector<Lesson>& lessons) {
    std::set<std::string> found;
    auto add = [&](const Words& w) {
        for (const auto& [l, t] : w) {
            found.insert(l);
        }
    };
    for (const auto& [key, w] : page_words()) {
        add(w);
    }
    for (const Lesson& l : lessons) {
        add(l.title);
        add(l.claim);
        add(l.verdict_text);
        add(l.notes);
        for (const Figure& f : l.figures) {
            add(f.caption);
        }
        for (const Number& n : l.numbers) {
            add(n.label);
            add(n.value);
        }
    }
    std::vector<std::string> out = {"en"};
    for (const std::string& l : found) {
        if (l != "en") {
            out.push_back(l);
        }
    }
    return out;
}

// An SVG document as an element of the page: without its XML declaration. A chart wider than
// 1000 pixels (a timeline) is marked wide: on a phone it keeps a readable size and scrolls
// sideways instead of shrinking to the screen.
std::string inline_svg(const std::string& svg) {
    size_t start = svg.find("<svg");
    if (start == std::string::npos) {
        return "";
    }
    std::string out = svg.substr(start);
    size_t width = out.find(" width=\"");
    size_t end = out.find('>');
    if (width != std::string::npos && width < end && std::atoi(out.c_str() + width + 8) > 1000) {
        out.insert(4, " class=\"wide\"");
    }
    return out;
}

const char* const kStyle = R"css(
:root { --ink: #111; --paper: #fff; --muted: #555; --rule: #ccc;
        --holds: #1b7f3b; --not: #b3261e; --cannot: #6a4fb3; --none: #666; }
* { box-sizing: border-box; }
html { font-size: clamp(17px, 0.9rem + 0.55vw, 26px); }
body { margin: 0 auto; padding: 1rem clamp(0.8rem, 3vw, 3rem) 4rem; max-width: 72rem;
       font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", sans-serif;
       line-height: 1.5; color: var(--ink); background: var(--paper); }
h1 { font-size: 1.8rem; line-height: 1.2; margin: 0.6rem 0; }
h2 { font-size: 1.4rem; line-height: 1.25; margin: 2.5rem 0 0.6rem; padding-top: 1rem;
     border-top: 3px solid var(--rule); }
h3 { font-size: 1.05rem; margin: 1.2rem 0 0.4rem; color: var(--muted); text-transform: uppercase;
     letter-spacing: 0.04em; }
p { margin: 0.5rem 0; }
a { color: #0b57d0; }
.machine { color: var(--muted); font-size: 0.85rem; }
.machine dt { font-weight: 600; }
.machine dd { margin: 0 0 0.4rem 0; }
nav#languages { float: right; }
nav#languages button { font: inherit; font-size: 0.85rem; padding: 0.2rem 0.7rem; }
nav#languages button[aria-pressed="true"] { font-weight: 700; }
:lang(zh-CN) { font-family: "Noto Sans CJK SC", "Source Han Sans SC", "PingFang SC",
               "Microsoft YaHei", system-ui, sans-serif; }
ol.summary { padding-left: 1.6rem; }
ol.summary li { margin: 0.3rem 0; }
.badge { display: inline-block; padding: 0.05rem 0.6rem; border-radius: 0.4rem; color: #fff;
         font-size: 0.8rem; font-weight: 700; white-space: nowrap; vertical-align: 0.1em; }
.holds .badge, .badge.holds { background: var(--holds); }
.does_not_hold .badge, .badge.does_not_hold { background: var(--not); }
.cannot_show .badge, .badge.cannot_show { background: var(--cannot); }
.not_measured .badge, .badge.not_measured { background: var(--none); }
.claim-text { font-size: 1.1rem; }
.verdict { border-left: 0.5rem solid var(--none); padding: 0.5rem 1rem; background: #f4f4f4; }
.holds .verdict { border-color: var(--holds); background: #eef7f0; }
.does_not_hold .verdict { border-color: var(--not); background: #fbefee; }
.cannot_show .verdict { border-color: var(--cannot); background: #f3f0fa; }
figure { margin: 1rem 0; overflow-x: auto; }
figure svg { display: block; width: 100%; height: auto; max-width: 60rem; background: #fff; }
figcaption { font-size: 0.85rem; color: var(--muted); }
.table { overflow-x: auto; }
table { border-collapse: collapse; font-size: 0.9rem; }
th, td { text-align: left; vertical-align: top; padding: 0.3rem 0.8rem 0.3rem 0;
         border-bottom: 1px solid var(--rule); }
td.value { font-variant-numeric: tabular-nums; }
pre { background: #f4f4f4; padding: 0.6rem 0.8rem; font-size: 0.78rem; white-space: pre-wrap;
      word-break: break-all; border-radius: 0.3rem; }
.notes { font-size: 0.9rem; color: var(--muted); }
.took { font-size: 0.8rem; color: var(--muted); }
@media (max-width: 40rem) { h1 { font-size: 1.45rem; } h2 { font-size: 1.2rem; }
                            th, td { padding-right: 0.4rem; }
                            figure svg { min-width: 36rem; } figure svg.wide { min-width: 60rem; } }
)css";

// Shows one language: on load the one the address asks for (?lang=zh-CN), else the browser's
// own if the page has it, else English; then whichever button is pressed. Nothing is stored, so
// every load starts by the same rule.
const char* const kScript = R"js(
(function () {
  var nav = document.getElementById('languages');
  if (!nav) { return; }
  var buttons = {};
  var list = nav.querySelectorAll('button[data-set-lang]');
  for (var i = 0; i < list.length; i++) {
    buttons[list[i].getAttribute('data-set-lang')] = list[i];
  }
  function show(lang) {
    document.body.setAttribute('data-show', lang);
    document.documentElement.setAttribute('lang', lang);
    document.title = buttons[lang].getAttribute('data-title');
    for (var k in buttons) {
      buttons[k].setAttribute('aria-pressed', k === lang ? 'true' : 'false');
    }
  }
  // A language of the page for a code such as "zh-CN", "zh-TW" or "en-US", or null.
  function match(code) {
    if (!code) { return null; }
    var wanted = code.toLowerCase();
    var k;
    for (k in buttons) {
      if (k.toLowerCase() === wanted) { return k; }
    }
    for (k in buttons) {
      if (k.toLowerCase().split('-')[0] === wanted.split('-')[0]) { return k; }
    }
    return null;
  }
  var asked = new URLSearchParams(window.location.search).get('lang');
  show(match(asked) || match(navigator.language) || 'en');
  nav.addEventListener('click', function (e) {
    var lang = e.target.getAttribute('data-set-lang');
    if (lang && buttons[lang]) { show(lang); }
  });
})();
)js";

std::string now_utc() {
    std::time_t t = std::time(nullptr);
    char text[40];
    std::strftime(text, sizeof text, "%Y-%m-%d %H:%M UTC", std::gmtime(&t));
    return text;
}

void write_lesson(std::ostringstream& o, const Page& page, const Lesson& l) {
    std::string v = verdict_key(l.verdict);
    o << "<section class=\"claim " << v << "\" id=\"claim-" << l.number << "\" data-claim=\""
      << l.number << "\" data-verdict=\"" << v << "\">\n";
    o << "<h2>" << l.number << ". " << page.say(l.title) << "</h2>\n";
    o << "<p class=\"claim-text\"><strong>" << page.say("claim") << "</strong>" << page.say(l.claim)
      << "</p>\n";
    o << "<div class=\"verdict\"><span class=\"badge\">" << page.say(v) << "</span> "
      << page.say(l.verdict_text) << "</div>\n";
    for (const Figure& f : l.figures) {
        o << "<figure>\n" << inline_svg(f.svg) << "\n<figcaption>" << page.say(f.caption);
        if (!f.file.empty()) {
            o << page.say("paren_open") << "<a href=\"" << xml_escape(f.file) << "\">"
              << page.say("figure_file") << "</a>" << page.say("paren_close");
        }
        o << "</figcaption>\n</figure>\n";
    }
    if (!l.numbers.empty()) {
        o << "<h3>" << page.say("numbers") << "</h3>\n<div class=\"table\"><table>\n";
        for (const Number& n : l.numbers) {
            o << "<tr><th scope=\"row\">" << page.say(n.label) << "</th><td class=\"value\">"
              << page.say(n.value) << "</td></tr>\n";
        }
        o << "</table></div>\n";
    }
    if (!l.notes.empty()) {
        o << "<p class=\"notes\">" << page.say(l.notes) << "</p>\n";
    }
    if (!l.commands.empty()) {
        o << "<h3>" << page.say("commands") << "</h3>\n<p class=\"notes\">"
          << page.say("commands_hint");
        if (!l.log.empty()) {
            o << "<a href=\"" << xml_escape(l.log) << "\">log.txt</a>" << page.say("log");
        }
        o << "</p>\n<pre><code>";
        for (const std::string& c : l.commands) {
            o << xml_escape(c) << "\n";
        }
        o << "</code></pre>\n";
    }
    char took[40];
    std::snprintf(took, sizeof took, " %.1f s", l.seconds);
    o << "<p class=\"took\">" << page.say("took") << took << "</p>\n</section>\n";
}

}  // namespace

std::string lessons_page(const LessonRun& run, const std::vector<Lesson>& lessons) {
    Page page(languages_of(lessons));
    std::ostringstream o;
    o << "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
      << "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
      << "<title>" << xml_escape(page_words().at("title").at("en")) << "</title>\n<style>"
      << kStyle;
    for (const std::string& l : page.languages()) {
        o << "body[data-show=\"" << l << "\"] span[lang]:not([lang=\"" << l
          << "\"]) { display: none; }\n";
    }
    o << "</style>\n</head>\n<body data-show=\"en\">\n";
    // The switch is in the page only once there is something to switch to.
    bool several = page.languages().size() > 1;
    if (several) {
        o << "<nav id=\"languages\">";
        const Words& name = page_words().at("language");
        const Words& title = page_words().at("title");
        for (const std::string& l : page.languages()) {
            o << "<button type=\"button\" lang=\"" << l << "\" data-set-lang=\"" << l
              << "\" data-title=\"" << xml_escape(title.count(l) ? title.at(l) : title.at("en"))
              << "\">" << xml_escape(name.count(l) ? name.at(l) : l) << "</button> ";
        }
        o << "</nav>\n";
    }
    o << "<h1>" << page.say("title") << "</h1>\n<p>" << page.say("intro") << "</p>\n";
    if (several) {
        o << "<p class=\"notes\">" << page.say("language_rule") << "</p>\n";
    }
    // The kernel, io_uring's state and the pinning are the programs' own words, in both languages.
    const RunInfo& m = run.machine;
    std::string cores = std::to_string(m.cores), when = now_utc();
    Words machine = en_zh(m.cpu_model + ", " + cores + " cores, " + m.kernel + "; io_uring " +
                              m.io_uring + "; " + run.pin.text,
                          m.cpu_model + "，" + cores + " 核，" + m.kernel + "；io_uring " +
                              m.io_uring + "；" + run.pin.text);
    o << "<dl class=\"machine\"><dt>" << page.say("machine") << "</dt><dd>" << page.say(machine)
      << "</dd><dt>" << page.say("run") << "</dt><dd>" << page.say(run.quick ? "quick" : "full")
      << page.say(en_zh(", " + when + ", " + m.command, "，" + when + "，" + m.command))
      << "</dd></dl>\n";

    o << "<h2>" << page.say("summary") << "</h2>\n<ol class=\"summary\">\n";
    for (const Lesson& l : lessons) {
        std::string v = verdict_key(l.verdict);
        o << "<li value=\"" << l.number << "\"><a href=\"#claim-" << l.number << "\">"
          << page.say(l.title) << "</a> <span class=\"badge " << v << "\">" << page.say(v)
          << "</span></li>\n";
    }
    o << "</ol>\n";
    for (const Lesson& l : lessons) {
        write_lesson(o, page, l);
    }
    o << "<script>" << kScript << "</script>\n</body>\n</html>\n";
    return o.str();
}

}  // namespace iolab
