#include "iolab/scale_chart.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <map>

#include "harness/report.hpp"

namespace iolab {

namespace {

const char* const kColours[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                                "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"};

constexpr double kWidth = 1000;
constexpr double kPlotW = 390;
constexpr double kPlotH = 210;
constexpr double kLeft[2] = {80, 560};
constexpr double kTop[2] = {100, 395};

std::string num(double v) {
    char text[32];
    std::snprintf(text, sizeof text, "%.1f", v);
    return text;
}

// "10,000"
std::string thousands(long v) {
    std::string digits = std::to_string(v);
    for (int i = static_cast<int>(digits.size()) - 3; i > 0; i -= 3) {
        digits.insert(static_cast<size_t>(i), ",");
    }
    return digits;
}

// A tick label to three significant digits at most: 0.5, 2, 20, 1000.
std::string tick_text(double v) {
    char text[32];
    if (v >= 100) {
        return thousands(std::lround(v));
    }
    std::snprintf(text, sizeof text, "%.3g", v);
    return text;
}

struct Axis {
    double lo = 0;
    double hi = 1;
    bool log = false;
    std::vector<double> ticks;
    // 0 at lo, 1 at hi.
    double frac(double v) const {
        return log ? (std::log10(v) - std::log10(lo)) / (std::log10(hi) - std::log10(lo))
                   : (v - lo) / (hi - lo);
    }
};

// A log axis from the 1-2-5 step at or below the least value to the one at or above the
// greatest.
Axis log_axis(double least, double most) {
    Axis a;
    a.log = true;
    std::vector<double> steps;
    for (int e = -3; e <= 7; ++e) {
        for (double m : {1.0, 2.0, 5.0}) {
            steps.push_back(m * std::pow(10.0, e));
        }
    }
    a.lo = steps.front();
    for (double s : steps) {
        if (s <= least * 1.0001) {
            a.lo = s;
        }
    }
    a.hi = steps.back();
    for (auto it = steps.rbegin(); it != steps.rend(); ++it) {
        if (*it >= most * 0.9999) {
            a.hi = *it;
        }
    }
    if (a.hi <= a.lo) {
        a.hi = a.lo * 2;
    }
    // Labels on the powers of ten over more than two decades, on 1-2-5 steps over less, and on
    // every 1..9 step within one decade: about four to eight labels, never crowded.
    auto pick = [&a](std::initializer_list<double> mantissas) {
        std::vector<double> ticks;
        for (int e = -3; e <= 7; ++e) {
            for (double m : mantissas) {
                double s = m * std::pow(10.0, e);
                if (s >= a.lo * 0.9999 && s <= a.hi * 1.0001) {
                    ticks.push_back(s);
                }
            }
        }
        return ticks;
    };
    if (a.hi / a.lo > 200) {
        a.ticks = pick({1.0});
    }
    if (a.ticks.size() < 3) {
        a.ticks = pick({1.0, 2.0, 5.0});
    }
    if (a.ticks.size() < 4) {
        a.ticks = pick({1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0});
    }
    return a;
}

// A linear axis with ticks on a 1-2-5 step, about five of them.
Axis linear_axis(double least, double most) {
    Axis a;
    double span = std::max(most - least, 1e-9);
    double step = std::pow(10.0, std::floor(std::log10(span / 5)));
    for (double m : {1.0, 2.0, 5.0, 10.0}) {
        if (span / (step * m) <= 6) {
            step *= m;
            break;
        }
    }
    a.lo = std::floor(least / step) * step;
    a.hi = std::ceil(most / step) * step;
    for (double t = a.lo; t <= a.hi + step / 2; t += step) {
        a.ticks.push_back(t);
    }
    return a;
}

struct Panel {
    std::string title;
    bool log = true;
    std::function<double(const GrowthPoint&)> value;  // negative: none
    double goal = 0;                                  // a dashed line at this value, if > 0
    std::string goal_text;
};

class Drawing {
public:
    explicit Drawing(const GrowthChart& chart) : chart_(chart) {
        for (size_t i = 0; i < chart.variants.size(); ++i) {
            colour_[chart.variants[i]] = kColours[i % std::size(kColours)];
        }
        max_idle_ = chart.idle.empty() ? 1 : std::max(1, chart.idle.back());
    }

    void panel(const Panel& p, double left, double top) {
        double least = 1e300, most = -1e300;
        for (const GrowthPoint& g : chart_.points) {
            double v = g.measured ? p.value(g) : -1;
            if (v > 0 || (!p.log && v >= 0)) {
                least = std::min(least, v);
                most = std::max(most, v);
            }
        }
        if (p.goal > 0) {
            least = std::min(least, p.goal);
            most = std::max(most, p.goal);
        }
        out_ += "<text x=\"" + num(left) + "\" y=\"" + num(top - 12) +
                "\" font-size=\"13\" font-weight=\"bold\">" + xml_escape(p.title) + "</text>\n";
        out_ += "<rect x=\"" + num(left) + "\" y=\"" + num(top) + "\" width=\"" + num(kPlotW) +
                "\" height=\"" + num(kPlotH) + "\" fill=\"none\" stroke=\"#999\"/>\n";
        x_ticks(left, top);
        if (least > most) {
            out_ += "<text x=\"" + num(left + kPlotW / 2) + "\" y=\"" + num(top + kPlotH / 2) +
                    "\" text-anchor=\"middle\" fill=\"#777\" font-size=\"12\">no figures</text>\n";
            return;
        }
        Axis y = p.log ? log_axis(least, most) : linear_axis(least * 0.95, most * 1.05);
        for (double t : y.ticks) {
            double py = top + kPlotH * (1 - y.frac(t));
            out_ += "<line x1=\"" + num(left) + "\" x2=\"" + num(left + kPlotW) + "\" y1=\"" +
                    num(py) + "\" y2=\"" + num(py) + "\" stroke=\"#e4e4e4\"/>\n";
            out_ += "<text x=\"" + num(left - 6) + "\" y=\"" + num(py + 4) +
                    "\" text-anchor=\"end\" font-size=\"11\">" + tick_text(t) + "</text>\n";
        }
        if (p.goal > 0) {
            double py = top + kPlotH * (1 - y.frac(p.goal));
            out_ += "<line x1=\"" + num(left) + "\" x2=\"" + num(left + kPlotW) + "\" y1=\"" +
                    num(py) + "\" y2=\"" + num(py) +
                    "\" stroke=\"#444\" stroke-dasharray=\"5,4\"/>\n";
            out_ += "<text x=\"" + num(left + kPlotW + 4) + "\" y=\"" + num(py + 4) +
                    "\" font-size=\"11\" fill=\"#444\">" + xml_escape(p.goal_text) + "</text>\n";
        }
        for (const std::string& v : chart_.variants) {
            series(p, v, y, left, top);
        }
    }

    // One line per variant through its measured points, broken where one is missing. A point
    // where some active connections failed is drawn hollow.
    void series(const Panel& p, const std::string& variant, const Axis& y, double left,
                double top) {
        std::string path;
        std::string marks;
        bool pen_down = false;
        const std::string& colour = colour_[variant];
        for (int idle : chart_.idle) {
            const GrowthPoint* g = find(variant, idle);
            double v = g != nullptr && g->measured ? p.value(*g) : -1;
            if (v <= 0 && (p.log || v < 0)) {
                pen_down = false;
                continue;
            }
            double px = left + kPlotW * idle / max_idle_;
            double py = top + kPlotH * (1 - y.frac(v));
            path += (pen_down ? " L" : " M") + num(px) + "," + num(py);
            pen_down = true;
            marks += "<circle cx=\"" + num(px) + "\" cy=\"" + num(py) + "\" r=\"3.5\" fill=\"" +
                     (g->failures > 0 ? std::string("white") : colour) + "\" stroke=\"" + colour +
                     "\" stroke-width=\"1.5\"/>\n";
        }
        if (path.find('L') != std::string::npos) {
            out_ += "<path d=\"" + path.substr(1) + "\" fill=\"none\" stroke=\"" + colour +
                    "\" stroke-width=\"2\"/>\n";
        }
        out_ += marks;
    }

    void x_ticks(double left, double top) {
        double last = -1e9;
        for (int idle : chart_.idle) {
            double px = left + kPlotW * idle / max_idle_;
            out_ += "<line x1=\"" + num(px) + "\" x2=\"" + num(px) + "\" y1=\"" +
                    num(top + kPlotH) + "\" y2=\"" + num(top + kPlotH + 4) +
                    "\" stroke=\"#999\"/>\n";
            // Labels closer than 30 px would overlap: the later one is left out.
            if (px - last >= 30) {
                out_ += "<text x=\"" + num(px) + "\" y=\"" + num(top + kPlotH + 17) +
                        "\" text-anchor=\"middle\" font-size=\"11\">" + thousands(idle) +
                        "</text>\n";
                last = px;
            }
        }
        out_ += "<text x=\"" + num(left + kPlotW / 2) + "\" y=\"" + num(top + kPlotH + 33) +
                "\" text-anchor=\"middle\" font-size=\"11\" fill=\"#555\">idle connections "
                "held</text>\n";
    }

    // The legend: a line per variant, and after its name every idle count it has no figures for
    // and why, so that no gap in a line goes unexplained.
    double legend(double top) {
        double y = top;
        for (const std::string& v : chart_.variants) {
            const std::string& colour = colour_[v];
            out_ += "<line x1=\"40\" x2=\"64\" y1=\"" + num(y - 4) + "\" y2=\"" + num(y - 4) +
                    "\" stroke=\"" + colour + "\" stroke-width=\"2\"/>\n";
            out_ +=
                "<circle cx=\"52\" cy=\"" + num(y - 4) + "\" r=\"3.5\" fill=\"" + colour + "\"/>\n";
            std::map<std::string, std::vector<int>> missing;  // why -> idle counts
            std::vector<std::string> order;
            std::string remarks;
            for (int idle : chart_.idle) {
                const GrowthPoint* g = find(v, idle);
                std::string why = g == nullptr ? "not run" : g->missing;
                if (g == nullptr || !g->measured) {
                    if (missing[why].empty()) {
                        order.push_back(why);
                    }
                    missing[why].push_back(idle);
                } else if (g->held < idle) {
                    remarks += "; at " + thousands(idle) + " idle only " + thousands(g->held) +
                               " stayed open";
                }
            }
            std::string text = v;
            for (const std::string& why : order) {
                std::string at;
                for (size_t i = 0; i < missing[why].size(); ++i) {
                    at += (i == 0                         ? ""
                           : i + 1 == missing[why].size() ? " and "
                                                          : ", ") +
                          thousands(missing[why][i]);
                }
                text += ": no figures at " + at + " idle (" + why + ")";
            }
            text += remarks;
            // Long reasons go on to further lines, broken at a space, about 140 characters each.
            for (bool first = true; !text.empty(); first = false) {
                size_t cut = text.size() <= 140 ? text.size() : text.rfind(' ', 140);
                cut =
                    cut == std::string::npos || cut == 0 ? std::min<size_t>(140, text.size()) : cut;
                out_ += "<text x=\"" + std::string(first ? "72" : "84") + "\" y=\"" + num(y) +
                        "\" font-size=\"12\">" + xml_escape(text.substr(0, cut)) + "</text>\n";
                text.erase(0, std::min(text.size(), cut + 1));
                y += 16;
            }
            y += 2;
        }
        return y;
    }

    const GrowthPoint* find(const std::string& variant, int idle) const {
        for (const GrowthPoint& g : chart_.points) {
            if (g.variant == variant && g.idle == idle) {
                return &g;
            }
        }
        return nullptr;
    }

    std::string& text() { return out_; }

private:
    const GrowthChart& chart_;
    std::map<std::string, std::string> colour_;
    int max_idle_ = 1;
    std::string out_;
};

}  // namespace

std::string growth_svg(const GrowthChart& chart) {
    // A variant's CPU per request against its own with no idle connection held: the growth the
    // idle connections cause, whatever the variant's absolute cost.
    std::map<std::string, double> base;
    for (const GrowthPoint& g : chart.points) {
        if (g.measured && g.idle == 0 && g.cpu_us_per_req > 0) {
            base[g.variant] = g.cpu_us_per_req;
        }
    }
    bool traced = std::any_of(chart.points.begin(), chart.points.end(), [](const GrowthPoint& g) {
        return g.measured && g.syscalls_source == "traced";
    });
    bool failures = std::any_of(chart.points.begin(), chart.points.end(),
                                [](const GrowthPoint& g) { return g.measured && g.failures > 0; });
    std::vector<Panel> panels = {
        {"Server CPU per request (us, log scale)", true,
         [](const GrowthPoint& g) { return g.cpu_us_per_req; }, 0, ""},
        {"CPU per request / its own with none idle (log; dashed: goal)", true,
         [&](const GrowthPoint& g) {
             auto it = base.find(g.variant);
             return it == base.end() || g.cpu_us_per_req <= 0 ? -1 : g.cpu_us_per_req / it->second;
         },
         1.15, "1.15x"},
        {"p99 latency (us, log scale)", true, [](const GrowthPoint& g) { return g.p99_us; }, 0, ""},
        {std::string("System calls per request (log scale") + (traced ? "; some traced" : "") + ")",
         true, [](const GrowthPoint& g) { return g.syscalls_per_req; }, 0, ""},
    };

    Drawing d(chart);
    for (size_t i = 0; i < panels.size(); ++i) {
        d.panel(panels[i], kLeft[i % 2], kTop[i / 2]);
    }
    std::string body;
    body.swap(d.text());
    double end = d.legend(kTop[1] + kPlotH + 70);
    std::string notes =
        failures ? "A hollow point: some active connections failed there (refused, unanswered, "
                   "wrong or lost; see the CSV)."
                 : "";
    if (!notes.empty()) {
        d.text() += "<text x=\"40\" y=\"" + num(end + 4) + "\" font-size=\"11\" fill=\"#555\">" +
                    xml_escape(notes) + "</text>\n";
        end += 18;
    }
    double height = end + 16;
    std::string svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + num(kWidth) +
                      "\" height=\"" + num(height) + "\" viewBox=\"0 0 " + num(kWidth) + " " +
                      num(height) + "\" font-family=\"sans-serif\">\n";
    svg += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
    svg += "<text x=\"40\" y=\"30\" font-size=\"16\" font-weight=\"bold\">" +
           xml_escape(chart.title) + "</text>\n";
    svg += "<text x=\"40\" y=\"52\" font-size=\"12\" fill=\"#555\">" + xml_escape(chart.note) +
           "</text>\n";
    svg += body;
    svg += d.text();
    svg += "</svg>\n";
    return svg;
}

}  // namespace iolab
