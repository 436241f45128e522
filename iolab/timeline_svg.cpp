// iolab timeline, the drawing: a Chart as a swimlane SVG, large enough to read on a projector.
//
// The axis is one clock, but not one scale: a scene mixes a 200 ms WORK with copies of a few
// microseconds, and a linear axis would draw the copies zero pixels wide. So every stretch longer
// than a threshold in which nothing starts or ends is cut to a narrow band marked with its length,
// and the rest shares one linear scale. A run of calls too narrow to draw one by one (a busy
// poll's EAGAINs) is merged into one bar whose title counts them.

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <set>
#include <sstream>

#include "harness/svg.hpp"
#include "iolab/timeline.hpp"

namespace iolab::timeline {

namespace {

struct Style {
    const char* fill;
    const char* text;  // label colour on that fill
    const char* name;
};
Style style_of(Activity a) {
    switch (a) {
        case Activity::wait:
            return {"#3b6fb6", "#ffffff", "phase 1: waiting (asleep in a call)"};
        case Activity::polling:
            return {"#f28e2b", "#000000", "phase 1: polling (EAGAIN, awake)"};
        case Activity::copy:
            return {"#2f9e44", "#ffffff", "phase 2: copying (bytes moved)"};
        case Activity::handler:
            return {"#d62728", "#ffffff", "handler running (WORK)"};
        case Activity::other:
            return {"#a0a0a0", "#000000", "other call (accept, epoll_ctl, submit...)"};
        case Activity::completion:
            return {"#8e44ad", "#ffffff", "completion reaped; in the kernel lane: in flight"};
    }
    return {"#000000", "#ffffff", ""};
}

// A rough width of sans-serif text, so that labels are only drawn where they fit.
double text_width(const std::string& s, double font) {
    size_t chars = 0;
    for (unsigned char ch : s) {
        chars += (ch & 0xc0) != 0x80 ? 1 : 0;
    }
    return static_cast<double>(chars) * font * 0.56;
}

std::string num(double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.1f", v);
    return buf;
}

std::string with_commas(long long v) {
    std::string digits = std::to_string(v < 0 ? -v : v);
    std::string out;
    for (size_t i = 0; i < digits.size(); ++i) {
        if (i > 0 && (digits.size() - i) % 3 == 0) {
            out += ',';
        }
        out += digits[i];
    }
    return (v < 0 ? "-" : "") + out;
}

std::string format_gap(int64_t ns) {
    char buf[32];
    double ms = static_cast<double>(ns) / 1e6;
    std::snprintf(buf, sizeof buf, ms >= 10 ? "%.0f ms" : "%.1f ms", ms);
    return buf;
}

// Time to x: linear pieces, and cut pieces of a fixed width.
class Axis {
public:
    struct Piece {
        int64_t a, b;
        double xa, xb;
        bool cut;
    };

    Axis(const Chart& chart, double x0, double x1) {
        std::set<int64_t> instants{chart.t0_ns, chart.t1_ns};
        for (const Lane& lane : chart.lanes) {
            for (const Bar& b : lane.bars) {
                instants.insert(b.start_ns);
                instants.insert(b.end_ns);
                if (b.split_ns) {
                    instants.insert(*b.split_ns);
                }
            }
        }
        std::vector<int64_t> t(instants.begin(), instants.end());
        double width = x1 - x0;
        int64_t threshold = 1000000;
        std::vector<bool> cut(t.size(), false);
        for (;;) {
            double cut_total = 0;
            int64_t linear = 0;
            for (size_t i = 0; i + 1 < t.size(); ++i) {
                cut[i] = t[i + 1] - t[i] > threshold;
                cut_total += cut[i] ? cut_width(t[i + 1] - t[i]) : 0;
                linear += cut[i] ? 0 : t[i + 1] - t[i];
            }
            if (cut_total <= width * 0.45 || threshold > 1000000000) {
                double scale = linear > 0 ? (width - cut_total) / static_cast<double>(linear) : 0;
                double x = x0;
                for (size_t i = 0; i + 1 < t.size(); ++i) {
                    double w = cut[i] ? cut_width(t[i + 1] - t[i])
                                      : static_cast<double>(t[i + 1] - t[i]) * scale;
                    pieces_.push_back({t[i], t[i + 1], x, x + w, cut[i]});
                    x += w;
                }
                ns_per_px_ = scale > 0 ? 1 / scale : 0;
                break;
            }
            threshold *= 2;
        }
        if (pieces_.empty()) {
            pieces_.push_back({chart.t0_ns, chart.t1_ns + 1, x0, x1, false});
        }
    }

    double x(int64_t t) const {
        auto it = std::upper_bound(pieces_.begin(), pieces_.end(), t,
                                   [](int64_t v, const Piece& p) { return v < p.b; });
        if (it == pieces_.end()) {
            return pieces_.back().xb;
        }
        if (t <= it->a) {
            return it->xa;
        }
        double f = static_cast<double>(t - it->a) / static_cast<double>(it->b - it->a);
        return it->xa + f * (it->xb - it->xa);
    }
    const std::vector<Piece>& pieces() const { return pieces_; }
    double ns_per_px() const { return ns_per_px_; }

    // A cut stretch is drawn wider the longer it is, on a log scale: 1 ms 44 px, 200 ms 99 px.
    static double cut_width(int64_t ns) {
        double ms = static_cast<double>(ns) / 1e6;
        return std::clamp(44 + 24 * std::log10(std::max(ms, 1.0)), 44.0, 110.0);
    }

private:
    std::vector<Piece> pieces_;
    double ns_per_px_ = 0;
};

// Calls too narrow to draw one by one, next to each other, doing the same thing, become one bar.
std::vector<Bar> merge_narrow(const std::vector<Bar>& bars, const Axis& axis) {
    std::vector<Bar> out;
    std::vector<int> counts;
    for (const Bar& b : bars) {
        double w = axis.x(b.end_ns) - axis.x(b.start_ns);
        if (!out.empty() && !b.split_ns && !out.back().split_ns &&
            out.back().activity == b.activity && b.activity != Activity::completion && w < 2 &&
            axis.x(out.back().end_ns) - axis.x(out.back().start_ns) < 2 + counts.back() * 2.0 &&
            axis.x(b.start_ns) - axis.x(out.back().end_ns) < 1.5) {
            out.back().end_ns = std::max(out.back().end_ns, b.end_ns);
            ++counts.back();
            continue;
        }
        out.push_back(b);
        counts.push_back(1);
    }
    for (size_t i = 0; i < out.size(); ++i) {
        if (counts[i] > 1) {
            out[i].title = with_commas(counts[i]) + " calls, each too short to draw alone; the " +
                           "first: " + out[i].title;
            out[i].label = with_commas(counts[i]) + " × " + out[i].label;
        }
    }
    return out;
}

// Rows within a lane, so that bars that overlap in time (the kernel's completions) do not hide
// each other.
std::vector<int> assign_rows(const std::vector<Bar>& bars, int& rows) {
    std::vector<int64_t> row_end;
    std::vector<int> row_of;
    for (const Bar& b : bars) {
        size_t r = 0;
        while (r < row_end.size() && row_end[r] > b.start_ns + 2000) {
            ++r;
        }
        if (r == row_end.size()) {
            row_end.push_back(0);
        }
        row_end[r] = std::max(b.end_ns, b.start_ns + 1);
        row_of.push_back(static_cast<int>(r));
    }
    rows = std::max<int>(1, static_cast<int>(row_end.size()));
    return row_of;
}

std::vector<std::string> wrap(const std::string& text, double width, double font) {
    std::vector<std::string> lines;
    std::istringstream words(text);
    std::string word, line;
    while (words >> word) {
        std::string next = line.empty() ? word : line + " " + word;
        if (!line.empty() && text_width(next, font) > width) {
            lines.push_back(line);
            line = word;
        } else {
            line = next;
        }
    }
    if (!line.empty()) {
        lines.push_back(line);
    }
    return lines;
}

}  // namespace

std::string render_svg(const Chart& chart, int width) {
    const double W = width;
    const double left = 260, right = 30;
    const double lane_gap = 6, row_h = 34, callout_h = 18;
    Axis axis(chart, left, W - right);

    std::ostringstream body;
    double y = 20;

    // Title, subtitle.
    y += 28;
    body << "<text x=\"24\" y=\"" << num(y) << "\" font-size=\"28\" font-weight=\"bold\">"
         << xml_escape(chart.title) << "</text>\n";
    for (const std::string& line : wrap(chart.subtitle, W - 48, 18)) {
        y += 26;
        body << "<text x=\"24\" y=\"" << num(y) << "\" font-size=\"18\">" << xml_escape(line)
             << "</text>\n";
    }

    // The legend, wrapped across rows.
    y += 20;
    double lx = 24;
    double legend_y = y;
    for (Activity a : {Activity::wait, Activity::polling, Activity::copy, Activity::handler,
                       Activity::other, Activity::completion}) {
        Style s = style_of(a);
        std::string name = s.name;
        double w = 30 + text_width(name, 16) + 28;
        if (lx + w > W - right) {
            lx = 24;
            legend_y += 28;
        }
        if (a == Activity::completion) {
            body << "<path d=\"M" << num(lx + 10) << " " << num(legend_y)
                 << " l8 9 l-8 9 l-8 -9 z\" fill=\"" << s.fill << "\"/>\n";
        } else {
            body << "<rect x=\"" << num(lx) << "\" y=\"" << num(legend_y) << "\" width=\"20\" "
                 << "height=\"18\" fill=\"" << s.fill << "\"/>\n";
        }
        body << "<text x=\"" << num(lx + 28) << "\" y=\"" << num(legend_y + 15)
             << "\" font-size=\"16\">" << xml_escape(name) << "</text>\n";
        lx += w;
    }
    {
        std::string name = "the client's send, where waiting turns to copying";
        double w = 30 + text_width(name, 16) + 28;
        if (lx + w > W - right) {
            lx = 24;
            legend_y += 28;
        }
        body << "<rect x=\"" << num(lx) << "\" y=\"" << num(legend_y) << "\" width=\"9\" "
             << "height=\"18\" fill=\"" << style_of(Activity::wait).fill << "\"/><rect x=\""
             << num(lx + 11) << "\" y=\"" << num(legend_y) << "\" width=\"9\" height=\"18\" "
             << "fill=\"" << style_of(Activity::copy).fill << "\"/><line x1=\"" << num(lx + 10)
             << "\" y1=\"" << num(legend_y - 3) << "\" x2=\"" << num(lx + 10) << "\" y2=\""
             << num(legend_y + 21) << "\" stroke=\"#000\" stroke-width=\"2\"/>\n";
        body << "<text x=\"" << num(lx + 28) << "\" y=\"" << num(legend_y + 15)
             << "\" font-size=\"16\">" << xml_escape(name) << "</text>\n";
    }
    y = legend_y + 46;

    // The lanes.
    double plot_top = y;
    std::ostringstream labels;  // drawn last, over the cuts
    bool clients_started = false;
    for (size_t li = 0; li < chart.lanes.size(); ++li) {
        const Lane& lane = chart.lanes[li];
        std::vector<Bar> bars = merge_narrow(lane.bars, axis);
        int rows = 1;
        std::vector<int> row_of = assign_rows(bars, rows);
        bool callouts = std::any_of(bars.begin(), bars.end(),
                                    [](const Bar& b) { return b.split_ns.has_value(); });
        double lane_h = rows * row_h + 16 + (callouts ? callout_h : 0);
        if (lane.client && !clients_started) {
            clients_started = true;
            y += 10;
            body << "<line x1=\"16\" y1=\"" << num(y - 8) << "\" x2=\"" << num(W - 16) << "\" y2=\""
                 << num(y - 8) << "\" stroke=\"#555\" stroke-width=\"2\"/>\n";
        }
        body << "<g class=\"lane\" data-lane=\"" << xml_escape(lane.label) << "\" data-source=\""
             << xml_escape(lane.source) << "\">\n";
        body << "<rect x=\"16\" y=\"" << num(y) << "\" width=\"" << num(W - 32) << "\" height=\""
             << num(lane_h) << "\" fill=\"" << (li % 2 == 0 ? "#f3f3f3" : "#fbfbfb") << "\"/>\n";
        body << "<text x=\"24\" y=\"" << num(y + 24) << "\" font-size=\"19\" font-weight=\"bold\">"
             << xml_escape(lane.label) << "</text>\n";
        body << "<text x=\"24\" y=\"" << num(y + 44) << "\" font-size=\"14\" fill=\"#444\">"
             << xml_escape(lane.source) << "</text>\n";
        double last_callout_end = 0;
        for (size_t bi = 0; bi < bars.size(); ++bi) {
            const Bar& b = bars[bi];
            Style s = style_of(b.activity);
            double x0 = axis.x(b.start_ns), x1 = axis.x(b.end_ns);
            double top = y + 8 + row_of[bi] * row_h, h = row_h - 8;
            body << "<g><title>" << xml_escape(b.title) << "</title>";
            if (b.activity == Activity::completion && b.end_ns - b.start_ns > 1000) {
                body << "<rect x=\"" << num(x0) << "\" y=\"" << num(top) << "\" width=\""
                     << num(std::max(2.0, x1 - x0)) << "\" height=\"" << num(h)
                     << "\" fill=\"#dcc6e8\" stroke=\"" << s.fill << "\" stroke-width=\"2\"/>";
                if (text_width(b.label, 14) + 8 < x1 - x0) {
                    labels << "<text x=\"" << num((x0 + x1) / 2) << "\" y=\""
                           << num(top + h / 2 + 5) << "\" font-size=\"14\" text-anchor=\"middle\">"
                           << xml_escape(b.label) << "</text>";
                }
            } else if (b.activity == Activity::completion) {
                body << "<path d=\"M" << num(x0) << " " << num(top) << " l8 " << num(h / 2)
                     << " l-8 " << num(h / 2) << " l-8 -" << num(h / 2) << " z\" fill=\"" << s.fill
                     << "\" stroke=\"#fff\" stroke-width=\"1\"/>";
            } else if (b.split_ns) {
                double xs = axis.x(*b.split_ns);
                double copy_w = std::max(3.0, x1 - xs);
                body << "<rect x=\"" << num(x0) << "\" y=\"" << num(top) << "\" width=\""
                     << num(std::max(2.0, xs - x0)) << "\" height=\"" << num(h) << "\" fill=\""
                     << s.fill << "\"/>";
                body << "<rect x=\"" << num(xs) << "\" y=\"" << num(top) << "\" width=\""
                     << num(copy_w) << "\" height=\"" << num(h) << "\" fill=\""
                     << style_of(Activity::copy).fill << "\"/>";
                body << "<line x1=\"" << num(xs) << "\" y1=\"" << num(top - 4) << "\" x2=\""
                     << num(xs) << "\" y2=\"" << num(top + h + 4)
                     << "\" stroke=\"#000\" stroke-width=\"2\"/>";
                std::string wait_label = b.label + ": waiting";
                if (text_width(wait_label, 14) + 8 < xs - x0) {
                    labels << "<text x=\"" << num((x0 + xs) / 2) << "\" y=\""
                           << num(top + h / 2 + 5)
                           << "\" font-size=\"14\" text-anchor=\"middle\" fill=\"" << s.text
                           << "\">" << xml_escape(wait_label) << "</text>";
                }
                char copy_label[64];
                std::snprintf(copy_label, sizeof copy_label, "phase 2: %.0f µs",
                              static_cast<double>(b.end_ns - *b.split_ns) / 1000.0);
                double cw = text_width(copy_label, 13);
                double cx = std::min(xs, W - right - cw);
                if (cx > last_callout_end + 6) {
                    labels << "<text x=\"" << num(cx) << "\" y=\"" << num(y + 8 + rows * row_h + 12)
                           << "\" font-size=\"13\" fill=\""
                           << "#1b6e2e\" font-weight=\"bold\">" << xml_escape(copy_label)
                           << "</text>";
                    last_callout_end = cx + cw;
                }
            } else {
                double w = std::max(2.0, x1 - x0);
                body << "<rect x=\"" << num(x0) << "\" y=\"" << num(top) << "\" width=\"" << num(w)
                     << "\" height=\"" << num(h) << "\" fill=\"" << s.fill << "\"/>";
                if (text_width(b.label, 14) + 8 < w) {
                    labels << "<text x=\"" << num(x0 + w / 2) << "\" y=\"" << num(top + h / 2 + 5)
                           << "\" font-size=\"14\" text-anchor=\"middle\" fill=\"" << s.text
                           << "\">" << xml_escape(b.label) << "</text>";
                }
            }
            body << "</g>\n";
        }
        body << "</g>\n";
        y += lane_h + lane_gap;
    }
    double plot_bottom = y;

    // The cuts: bands over every lane, marked with the time they stand for.
    for (const Axis::Piece& p : axis.pieces()) {
        if (!p.cut) {
            continue;
        }
        double mid = (p.xa + p.xb) / 2;
        body << "<path d=\"M" << num(mid - 1) << " " << num(plot_top - 6) << " L" << num(mid + 5)
             << " " << num(plot_top - 6) << " L" << num(mid + 1) << " " << num(plot_bottom) << " L"
             << num(mid - 5) << " " << num(plot_bottom) << " z\" fill=\"#ffffff\"/>\n";
        for (double dx : {mid - 4, mid + 4}) {
            body << "<line x1=\"" << num(dx - 5) << "\" y1=\"" << num(plot_bottom + 10)
                 << "\" x2=\"" << num(dx + 5) << "\" y2=\"" << num(plot_bottom - 6)
                 << "\" stroke=\"#333\" stroke-width=\"2\"/>\n";
        }
        body << "<text x=\"" << num((p.xa + p.xb) / 2) << "\" y=\"" << num(plot_bottom + 28)
             << "\" font-size=\"13\" text-anchor=\"middle\" fill=\"#333\">"
             << xml_escape(format_gap(p.b - p.a)) << "</text>\n";
    }

    body << labels.str();

    // The axis: a tick where each linear stretch begins, and more inside the long ones.
    double axis_y = plot_bottom + 4;
    body << "<line x1=\"" << num(left) << "\" y1=\"" << num(axis_y) << "\" x2=\"" << num(W - right)
         << "\" y2=\"" << num(axis_y) << "\" stroke=\"#000\" stroke-width=\"1.5\"/>\n";
    double last_label_end = -1e9;
    auto tick = [&](int64_t t, double x) {
        long long us = (t - chart.t0_ns) / 1000;
        std::string label = with_commas(us);
        double w = text_width(label, 14);
        body << "<line x1=\"" << num(x) << "\" y1=\"" << num(axis_y) << "\" x2=\"" << num(x)
             << "\" y2=\"" << num(axis_y + 8) << "\" stroke=\"#000\"/>\n";
        if (x - w / 2 > last_label_end + 10 && x + w / 2 < W) {
            body << "<text x=\"" << num(x) << "\" y=\"" << num(axis_y + 46)
                 << "\" font-size=\"14\" text-anchor=\"middle\">" << label << "</text>\n";
            last_label_end = x + w / 2;
        }
    };
    double step_ns = 0;
    if (axis.ns_per_px() > 0) {
        double want = axis.ns_per_px() * 160;
        for (double base = 1000; step_ns == 0; base *= 10) {
            for (double m : {1.0, 2.0, 5.0}) {
                if (base * m >= want && step_ns == 0) {
                    step_ns = base * m;
                }
            }
        }
    }
    bool after_cut = true;
    for (const Axis::Piece& p : axis.pieces()) {
        if (p.cut) {
            after_cut = true;
            continue;
        }
        if (after_cut) {
            tick(p.a, p.xa);
            after_cut = false;
        }
        if (step_ns > 0) {
            auto first = static_cast<int64_t>(
                std::ceil(static_cast<double>(p.a - chart.t0_ns) / step_ns) * step_ns);
            for (int64_t t = first + chart.t0_ns; t < p.b; t += static_cast<int64_t>(step_ns)) {
                if (t > p.a) {
                    tick(t, axis.x(t));
                }
            }
        }
    }
    y = axis_y + 76;
    body << "<text x=\"" << num(left) << "\" y=\"" << num(y - 8) << "\" font-size=\"15\">"
         << "µs since the scene started, CLOCK_MONOTONIC for every process; a band marks a "
         << "stretch in which nothing started or ended, cut to save width</text>\n";

    // Notes.
    std::vector<std::string> notes = chart.notes;
    notes.push_back(
        "Hover a bar for its call, descriptor, result and duration. Bars narrower than "
        "2 pixels are drawn 2 pixels wide; a run of such calls is one bar.");
    for (const std::string& note : notes) {
        for (const std::string& line : wrap(note, W - 48, 15)) {
            y += 22;
            body << "<text x=\"24\" y=\"" << num(y) << "\" font-size=\"15\" fill=\"#333\">"
                 << xml_escape(line) << "</text>\n";
        }
    }
    y += 24;

    std::ostringstream svg;
    svg << "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
        << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << num(W) << "\" height=\""
        << num(y) << "\" viewBox=\"0 0 " << num(W) << " " << num(y)
        << "\" font-family=\"DejaVu Sans, Liberation Sans, Arial, sans-serif\">\n"
        << "<rect width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>\n"
        << body.str() << "</svg>\n";
    return svg.str();
}

}  // namespace iolab::timeline
