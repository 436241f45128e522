#include "harness/svg.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <set>
#include <sstream>

namespace iolab {

std::string xml_escape(const std::string& s) {
    std::string out;
    for (char ch : s) {
        switch (ch) {
            case '&':
                out += "&amp;";
                break;
            case '<':
                out += "&lt;";
                break;
            case '>':
                out += "&gt;";
                break;
            case '"':
                out += "&quot;";
                break;
            default:
                out += ch;
        }
    }
    return out;
}

namespace {

const char* const kPalette[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
                                "#e377c2", "#17becf", "#7f7f7f", "#bcbd22", "#393b79", "#ad494a"};
constexpr size_t kColors = sizeof kPalette / sizeof kPalette[0];

// A short label for an axis tick: 1500 -> "1.5k", 2000000 -> "2M", 0.25 -> "0.25".
std::string tick_label(double v) {
    char text[32];
    double a = std::fabs(v);
    if (a >= 1e6) {
        std::snprintf(text, sizeof text, "%gM", v / 1e6);
    } else if (a >= 1e3) {
        std::snprintf(text, sizeof text, "%gk", v / 1e3);
    } else {
        std::snprintf(text, sizeof text, "%g", v);
    }
    return text;
}

// A bar's value to three significant digits: 234881 -> "235k", 9437.2 -> "9.44k", 5.283 -> "5.28".
std::string value_label(double v) {
    if (v <= 0) {
        return "0";
    }
    double scale = std::pow(10, std::floor(std::log10(v)) - 2);
    return tick_label(std::round(v / scale) * scale);
}

// A "nice" step (1, 2 or 5 times a power of ten) giving about `ticks` ticks up to `max`.
double nice_step(double max, int ticks) {
    double raw = max / ticks;
    double p = std::pow(10.0, std::floor(std::log10(raw)));
    for (double m : {1.0, 2.0, 5.0, 10.0}) {
        if (m * p >= raw) {
            return m * p;
        }
    }
    return 10 * p;
}

std::string fmt(double v) {
    char text[32];
    std::snprintf(text, sizeof text, "%.1f", v);
    return text;
}

std::string dash_of(size_t i) {
    size_t style = i / kColors;
    if (style == 1) {
        return " stroke-dasharray=\"6 3\"";
    }
    if (style >= 2) {
        return " stroke-dasharray=\"2 3\"";
    }
    return "";
}

std::string header(int w, int h, const ChartSpec& spec) {
    std::ostringstream o;
    o << "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
      << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << w << "\" height=\"" << h
      << "\" viewBox=\"0 0 " << w << " " << h << "\" font-family=\"sans-serif\" font-size=\"12\">\n"
      << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      << "<text x=\"" << w / 2 << "\" y=\"24\" text-anchor=\"middle\" font-size=\"16\">"
      << xml_escape(spec.title) << "</text>\n";
    if (!spec.note.empty()) {
        o << "<text x=\"" << w / 2 << "\" y=\"42\" text-anchor=\"middle\" fill=\"#555\">"
          << xml_escape(spec.note) << "</text>\n";
    }
    return o.str();
}

// A value axis: 0 .. a nice maximum, or whole decades on a log scale (with 2 and 5 between
// them when there are few decades, so that a reader can place a value).
struct Axis {
    bool log = false;
    double lo = 0, hi = 1;
    std::vector<double> ticks;
    double frac(double v) const {
        if (log) {
            return (std::log10(std::max(v, lo)) - std::log10(lo)) /
                   (std::log10(hi) - std::log10(lo));
        }
        return (v - lo) / (hi - lo);
    }
};

// The 1-2-5 sequence: the largest step at or below v (down) or the smallest at or above it.
double one_two_five(double v, bool up) {
    double decade = std::pow(10, std::floor(std::log10(v)));
    double best = up ? decade * 10 : decade;
    for (double m : {1.0, 2.0, 5.0, 10.0}) {
        double step = m * decade;
        if (up && step >= v * 0.999) {
            return step;
        }
        if (!up && step <= v * 1.001) {
            best = step;
        }
    }
    return best;
}

Axis value_axis(double min, double max, bool log) {
    Axis a;
    a.log = log;
    if (log) {
        // A little below the least value, so that its bar or point is not on the frame.
        a.lo = one_two_five(min > 0 ? min * 0.9 : 1, false);
        a.hi = one_two_five(max > 0 ? max : 10, true);
        if (a.hi <= a.lo) {
            a.hi = one_two_five(a.lo * 1.01, true);
        }
        bool few = a.hi / a.lo <= 1000;
        for (double v = a.lo; v <= a.hi * 1.001; v = one_two_five(v * 1.01, true)) {
            bool decade = std::fabs(std::log10(v) - std::round(std::log10(v))) < 1e-9;
            if (few || decade) {
                a.ticks.push_back(v);
            }
        }
    } else {
        double step = nice_step(max > 0 ? max : 1, 5);
        a.hi = std::ceil((max > 0 ? max : 1) / step) * step;
        for (double v = 0; v <= a.hi + step / 2; v += step) {
            a.ticks.push_back(v);
        }
    }
    return a;
}

// Colours for groups, in the order the groups first appear.
std::map<std::string, size_t> group_colours(const std::vector<Series>& series) {
    std::map<std::string, size_t> colour;
    for (const Series& s : series) {
        colour.emplace(s.group, colour.size());
    }
    return colour;
}

std::string bar_chart(const ChartSpec& spec, const std::vector<Series>& series) {
    struct Bar {
        std::string name;
        double value;
        size_t colour;
    };
    std::map<std::string, size_t> colour = group_colours(series);
    std::vector<Bar> bars;
    double min = 0, max = 0;
    bool any = false;
    for (size_t i = 0; i < series.size(); ++i) {
        const Series& s = series[i];
        double v = s.points.empty() ? -1 : s.points[0].second;
        if (v < 0) {
            continue;
        }
        // A zero has no place on a log axis: its row shows the name and "0" without a bar.
        if (v > 0 || !spec.log_y) {
            min = any ? std::min(min, v) : v;
            max = any ? std::max(max, v) : v;
            any = true;
        }
        bars.push_back({s.name, v, s.group.empty() ? i : colour[s.group]});
    }
    std::sort(bars.begin(), bars.end(),
              [](const Bar& a, const Bar& b) { return a.value > b.value; });
    Axis axis = value_axis(min, max, spec.log_y);
    size_t longest = 0;
    for (const Bar& b : bars) {
        longest = std::max(longest, b.name.size());
    }
    // About 7 pixels per character of a 12-pixel sans-serif name, right-aligned before the bars.
    const int left = std::max(230, 16 + 7 * static_cast<int>(longest)), right = 90, top = 60;
    const int row = 22, plot_w = 580;
    const int w = left + plot_w + right;
    const int h = top + row * static_cast<int>(std::max<size_t>(bars.size(), 1)) + 50;
    std::ostringstream o;
    o << header(w, h, spec);
    int axis_y = top + row * static_cast<int>(bars.size()) + 4;
    for (double v : axis.ticks) {
        double x = left + plot_w * axis.frac(v);
        o << "<line x1=\"" << fmt(x) << "\" y1=\"" << top << "\" x2=\"" << fmt(x) << "\" y2=\""
          << axis_y << "\" stroke=\"#ddd\"/>\n"
          << "<text x=\"" << fmt(x) << "\" y=\"" << axis_y + 16 << "\" text-anchor=\"middle\">"
          << tick_label(v) << "</text>\n";
    }
    o << "<text x=\"" << left + plot_w / 2 << "\" y=\"" << axis_y + 36
      << "\" text-anchor=\"middle\">" << xml_escape(spec.y_label) << "</text>\n";
    for (size_t i = 0; i < bars.size(); ++i) {
        int y = top + row * static_cast<int>(i);
        double bw = bars[i].value > 0 ? std::max(1.0, plot_w * axis.frac(bars[i].value)) : 0;
        o << "<text x=\"" << left - 8 << "\" y=\"" << y + 15 << "\" text-anchor=\"end\">"
          << xml_escape(bars[i].name) << "</text>\n"
          << "<rect x=\"" << left << "\" y=\"" << y + 3 << "\" width=\"" << fmt(bw)
          << "\" height=\"" << row - 6 << "\" fill=\"" << kPalette[bars[i].colour % kColors]
          << "\"/>\n"
          << "<text x=\"" << fmt(left + bw + 4) << "\" y=\"" << y + 15 << "\">"
          << value_label(bars[i].value) << "</text>\n";
    }
    o << "</svg>\n";
    return o.str();
}

// The names in a group that do not extend another one's: "05_epoll" for 05_epoll and
// 05_epoll_et; "02_process_per_conn / 02_thread_per_conn" for the three 02 variants.
std::string group_title(const std::vector<const Series*>& members) {
    std::string title;
    for (const Series* s : members) {
        std::string base = s->name.substr(0, s->name.find(' '));
        bool extends = false;
        for (const Series* o : members) {
            std::string other = o->name.substr(0, o->name.find(' '));
            extends = extends || (other != base && base.rfind(other + "_", 0) == 0);
        }
        if (!extends && title.find(base) == std::string::npos) {
            title += (title.empty() ? "" : " / ") + base;
        }
    }
    return title;
}

std::string small_multiples(const ChartSpec& spec, const std::vector<Series>& series) {
    std::vector<std::string> groups;
    std::map<std::string, std::vector<const Series*>> members;
    std::set<double> xs;
    double ymin = 0, ymax = 0;
    bool any = false;
    for (const Series& s : series) {
        if (members.find(s.group) == members.end()) {
            groups.push_back(s.group);
        }
        members[s.group].push_back(&s);
        for (auto [x, y] : s.points) {
            if (y < 0 || x <= 0 || (spec.log_y && y <= 0)) {
                continue;
            }
            xs.insert(x);
            ymin = any ? std::min(ymin, y) : y;
            ymax = any ? std::max(ymax, y) : y;
            any = true;
        }
    }
    size_t legend_lines = 0;
    for (const auto& [g, m] : members) {
        legend_lines = std::max(legend_lines, m.size());
    }
    Axis axis = value_axis(ymin, ymax, spec.log_y);
    double x0 = xs.empty() ? 1 : *xs.begin(), x1 = xs.empty() ? 10 : *xs.rbegin();
    const int cols = static_cast<int>(std::min<size_t>(3, std::max<size_t>(groups.size(), 1)));
    const int rows = (static_cast<int>(groups.size()) + cols - 1) / cols;
    const int plot_w = 250, plot_h = 170, pad_left = 56, pad_right = 24, pad_top = 26;
    const int legend_h = 15 * static_cast<int>(legend_lines) + 6;
    const int panel_w = pad_left + plot_w + pad_right;
    const int panel_h = pad_top + plot_h + 22 + legend_h;
    const int top = 64, bottom = 40;
    const int w = cols * panel_w + 30;
    const int h = top + rows * panel_h + bottom;
    auto tx = [&](double x) {
        return plot_w * (std::log10(x) - std::log10(x0)) /
               std::max(1e-9, std::log10(x1) - std::log10(x0));
    };
    auto ty = [&](double y) { return plot_h * (1 - axis.frac(y)); };
    auto path_of = [&](const Series& s, double ox, double oy) {
        std::string path;
        for (auto [x, y] : s.points) {
            if (y < 0 || x <= 0 || (spec.log_y && y <= 0)) {
                continue;
            }
            path += (path.empty() ? "M" : " L") + fmt(ox + tx(x)) + " " + fmt(oy + ty(y));
        }
        return path;
    };

    std::ostringstream o;
    o << header(w, h, spec);
    for (size_t gi = 0; gi < groups.size(); ++gi) {
        const std::vector<const Series*>& mine = members[groups[gi]];
        double ox = 30 + static_cast<double>(gi % cols) * panel_w + pad_left;
        double oy = top + static_cast<double>(gi / cols) * panel_h + pad_top;
        o << "<text x=\"" << fmt(ox) << "\" y=\"" << fmt(oy - 8) << "\" font-weight=\"bold\">"
          << xml_escape(group_title(mine)) << "</text>\n";
        for (double v : axis.ticks) {
            bool decade = !axis.log || std::fabs(std::log10(v) - std::round(std::log10(v))) < 1e-9;
            o << "<line x1=\"" << fmt(ox) << "\" y1=\"" << fmt(oy + ty(v)) << "\" x2=\""
              << fmt(ox + plot_w) << "\" y2=\"" << fmt(oy + ty(v)) << "\" stroke=\""
              << (decade ? "#ccc" : "#eee") << "\"/>\n"
              << "<text x=\"" << fmt(ox - 5) << "\" y=\"" << fmt(oy + ty(v) + 4)
              << "\" text-anchor=\"end\" font-size=\"10\">" << tick_label(v) << "</text>\n";
        }
        for (double x : xs) {
            o << "<line x1=\"" << fmt(ox + tx(x)) << "\" y1=\"" << fmt(oy) << "\" x2=\""
              << fmt(ox + tx(x)) << "\" y2=\"" << fmt(oy + plot_h) << "\" stroke=\"#eee\"/>\n"
              << "<text x=\"" << fmt(ox + tx(x)) << "\" y=\"" << fmt(oy + plot_h + 13)
              << "\" text-anchor=\"middle\" font-size=\"10\">" << tick_label(x) << "</text>\n";
        }
        // Every other variant in grey, for scale; then the family's own on top.
        for (const Series& s : series) {
            if (s.group != groups[gi]) {
                std::string path = path_of(s, ox, oy);
                if (!path.empty()) {
                    o << "<path d=\"" << path
                      << "\" fill=\"none\" stroke=\"#d8d8d8\" stroke-width=\"1\"/>\n";
                }
            }
        }
        for (size_t i = 0; i < mine.size(); ++i) {
            const Series& s = *mine[i];
            const char* colour = kPalette[i % kColors];
            std::string path = path_of(s, ox, oy);
            if (!path.empty()) {
                o << "<path d=\"" << path << "\" fill=\"none\" stroke=\"" << colour
                  << "\" stroke-width=\"2\"/>\n";
            }
            for (auto [x, y] : s.points) {
                if (y < 0 || x <= 0 || (spec.log_y && y <= 0)) {
                    continue;
                }
                o << "<circle cx=\"" << fmt(ox + tx(x)) << "\" cy=\"" << fmt(oy + ty(y))
                  << "\" r=\"3\" fill=\"" << colour << "\"><title>" << xml_escape(s.name) << " "
                  << tick_label(x) << ": " << fmt(y) << "</title></circle>\n";
            }
            double ly = oy + plot_h + 30 + 15 * static_cast<double>(i);
            o << "<line x1=\"" << fmt(ox) << "\" y1=\"" << fmt(ly - 4) << "\" x2=\"" << fmt(ox + 22)
              << "\" y2=\"" << fmt(ly - 4) << "\" stroke=\"" << colour
              << "\" stroke-width=\"2\"/>\n"
              << "<text x=\"" << fmt(ox + 28) << "\" y=\"" << fmt(ly) << "\" font-size=\"11\">"
              << xml_escape(s.name) << "</text>\n";
        }
        o << "<rect x=\"" << fmt(ox) << "\" y=\"" << fmt(oy) << "\" width=\"" << plot_w
          << "\" height=\"" << plot_h << "\" fill=\"none\" stroke=\"#333\"/>\n";
        if (gi % cols == 0) {
            o << "<text transform=\"translate(16 " << fmt(oy + plot_h / 2.0)
              << ") rotate(-90)\" text-anchor=\"middle\" font-size=\"11\">"
              << xml_escape(spec.y_label) << "</text>\n";
        }
    }
    o << "<text x=\"" << w / 2 << "\" y=\"" << h - 14 << "\" text-anchor=\"middle\">"
      << xml_escape(spec.x_label) << " (every panel); the grey lines are the other variants"
      << "</text>\n";
    o << "</svg>\n";
    return o.str();
}

}  // namespace

std::string svg_chart(const ChartSpec& spec, const std::vector<Series>& series) {
    std::set<double> xs;
    double ymax = 0, ymin = 0;
    bool any = false;
    for (const Series& s : series) {
        for (auto [x, y] : s.points) {
            if (y < 0 || (spec.log_x && x <= 0) || (spec.log_y && y <= 0)) {
                continue;
            }
            xs.insert(x);
            ymin = any ? std::min(ymin, y) : y;
            ymax = any ? std::max(ymax, y) : y;
            any = true;
        }
    }
    if (xs.size() == 1) {
        return bar_chart(spec, series);
    }
    bool grouped =
        std::any_of(series.begin(), series.end(), [](const Series& s) { return !s.group.empty(); });
    if (grouped && spec.log_x) {
        return small_multiples(spec, series);
    }
    const int w = 960, left = 80, right = 230, top = 60, bottom = 60;
    const int h = std::max(520, top + 18 * static_cast<int>(series.size()) + bottom);
    const int plot_w = w - left - right, plot_h = h - top - bottom;
    double x0 = xs.empty() ? 1 : *xs.begin(), x1 = xs.empty() ? 10 : *xs.rbegin();
    auto tx = [&](double x) {
        if (spec.log_x) {
            return left + plot_w * (std::log10(x) - std::log10(x0)) /
                              std::max(1e-9, std::log10(x1) - std::log10(x0));
        }
        return left + plot_w * (x - x0) / std::max(1e-9, x1 - x0);
    };
    // y axis: 0 .. a nice maximum, or whole decades on a log scale.
    double y0 = 0, y1 = 1, step = 1;
    if (spec.log_y) {
        y0 = std::pow(10, std::floor(std::log10(any ? ymin : 1)));
        y1 = std::pow(10, std::ceil(std::log10(any ? ymax : 10)));
        if (y1 <= y0) {
            y1 = y0 * 10;
        }
    } else {
        step = nice_step(ymax > 0 ? ymax : 1, 5);
        y1 = std::ceil((ymax > 0 ? ymax : 1) / step) * step;
    }
    auto ty = [&](double y) {
        if (spec.log_y) {
            return top + plot_h * (1 - (std::log10(y) - std::log10(y0)) /
                                           (std::log10(y1) - std::log10(y0)));
        }
        return top + plot_h * (1 - (y - y0) / (y1 - y0));
    };

    std::ostringstream o;
    o << header(w, h, spec);
    // Grid and y ticks.
    std::vector<double> yticks;
    if (spec.log_y) {
        for (double v = y0; v <= y1 * 1.001; v *= 10) {
            yticks.push_back(v);
        }
    } else {
        for (double v = 0; v <= y1 + step / 2; v += step) {
            yticks.push_back(v);
        }
    }
    for (double v : yticks) {
        o << "<line x1=\"" << left << "\" y1=\"" << fmt(ty(v)) << "\" x2=\"" << left + plot_w
          << "\" y2=\"" << fmt(ty(v)) << "\" stroke=\"#ddd\"/>\n"
          << "<text x=\"" << left - 6 << "\" y=\"" << fmt(ty(v) + 4) << "\" text-anchor=\"end\">"
          << tick_label(v) << "</text>\n";
    }
    // x ticks: at every x in the data (connection counts), or by decades when there are many.
    std::vector<double> xticks(xs.begin(), xs.end());
    if (xticks.size() > 12) {
        xticks.clear();
        if (spec.log_x) {
            for (double v = std::pow(10, std::ceil(std::log10(x0))); v <= x1 * 1.001; v *= 10) {
                xticks.push_back(v);
            }
        } else {
            double xstep = nice_step(x1 - x0, 8);
            for (double v = std::ceil(x0 / xstep) * xstep; v <= x1 + xstep / 2; v += xstep) {
                xticks.push_back(v);
            }
        }
    }
    for (double x : xticks) {
        o << "<line x1=\"" << fmt(tx(x)) << "\" y1=\"" << top << "\" x2=\"" << fmt(tx(x))
          << "\" y2=\"" << top + plot_h << "\" stroke=\"#eee\"/>\n"
          << "<text x=\"" << fmt(tx(x)) << "\" y=\"" << top + plot_h + 16
          << "\" text-anchor=\"middle\">" << tick_label(x) << "</text>\n";
    }
    o << "<rect x=\"" << left << "\" y=\"" << top << "\" width=\"" << plot_w << "\" height=\""
      << plot_h << "\" fill=\"none\" stroke=\"#333\"/>\n";
    o << "<text x=\"" << left + plot_w / 2 << "\" y=\"" << h - 16 << "\" text-anchor=\"middle\">"
      << xml_escape(spec.x_label) << "</text>\n";
    o << "<text transform=\"translate(18 " << top + plot_h / 2
      << ") rotate(-90)\" text-anchor=\"middle\">" << xml_escape(spec.y_label) << "</text>\n";

    for (size_t i = 0; i < series.size(); ++i) {
        const Series& s = series[i];
        const char* color = kPalette[i % kColors];
        std::string path;
        for (auto [x, y] : s.points) {
            if (y < 0 || (spec.log_x && x <= 0) || (spec.log_y && y <= 0)) {
                continue;
            }
            path += (path.empty() ? "M" : " L") + fmt(tx(x)) + " " + fmt(ty(y));
            o << "<circle cx=\"" << fmt(tx(x)) << "\" cy=\"" << fmt(ty(y)) << "\" r=\"3\" fill=\""
              << color << "\"><title>" << xml_escape(s.name) << " " << tick_label(x) << ": "
              << fmt(y) << "</title></circle>\n";
        }
        if (!path.empty()) {
            o << "<path d=\"" << path << "\" fill=\"none\" stroke=\"" << color
              << "\" stroke-width=\"1.8\"" << dash_of(i) << "/>\n";
        }
        int ly = top + 6 + 18 * static_cast<int>(i);
        o << "<line x1=\"" << left + plot_w + 14 << "\" y1=\"" << ly << "\" x2=\""
          << left + plot_w + 40 << "\" y2=\"" << ly << "\" stroke=\"" << color
          << "\" stroke-width=\"2\"" << dash_of(i) << "/>\n"
          << "<text x=\"" << left + plot_w + 46 << "\" y=\"" << ly + 4 << "\">"
          << xml_escape(s.name) << "</text>\n";
    }
    o << "</svg>\n";
    return o.str();
}

}  // namespace iolab
