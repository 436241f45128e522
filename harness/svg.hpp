// SVG charts that open in any browser, drawn from the result rows (iolab compare, bench, scale).
// A line chart draws one series per variant against x (log scale for connections); with a single
// x value it becomes a horizontal bar chart, one bar per variant, sorted. When the series carry
// groups (a model's family: "05" for 05_epoll and 05_epoll_et), the line chart is drawn as small
// multiples instead, one panel per group on shared axes, every other series in grey behind the
// group's own, so that no panel holds more than a family's few lines; the bars are coloured by
// group.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace iolab {

struct Series {
    std::string name;
    std::vector<std::pair<double, double>> points;  // (x, y); y < 0 means "no value"
    std::string group = "";                         // "" = no group
};
struct ChartSpec {
    std::string title;
    std::string x_label;
    std::string y_label;
    bool log_x = true;
    bool log_y = false;
    std::string note;  // one line under the title: the load and the machine
};
std::string svg_chart(const ChartSpec& spec, const std::vector<Series>& series);

// Text and attribute values for XML: & < > " as entities.
std::string xml_escape(const std::string& s);

}  // namespace iolab
