// Every English document a user reads has a Chinese twin (X.md beside X.zh-CN.md), and the twin
// keeps the English document's structure, so that a command or a figure changed in one language
// and not in the other fails the suite. The rules (shared by everyone who writes a twin):
//   - line 1 of each is the language line linking the other, and nothing else;
//   - the same headings, in the same order, at the same levels, with the same code names in them;
//   - every code block (fenced, or indented by four spaces) byte for byte the same, in order;
//   - the same listing markers (<!-- ... --> lines), byte for byte;
//   - every table with the same rows and the same number of cells in each row, and the same
//     figures (the tokens with a digit, outside code) in each cell;
//   - the same links and image paths in the same order, except that a link from the Chinese twin
//     may go to the twin of the English document the English one links (foo.zh-CN.md for
//     foo.md), and then an anchor in it must name the same heading of that twin.
// Every message names the file and line, in both languages, and what differs.

#include <fnmatch.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace docs_alignment_test {

namespace fs = std::filesystem;

// The user documents that must have a twin: a glob, so that a new model README is covered.
const std::vector<std::string> kUserDocuments = {"README.md", "*/README.md", "docs/*.md"};
const std::string kTwinSuffix = ".zh-CN.md";

bool is_twin_name(const std::string& path) {
    return path.size() > kTwinSuffix.size() &&
           path.compare(path.size() - kTwinSuffix.size(), kTwinSuffix.size(), kTwinSuffix) == 0;
}

std::string twin_of(const std::string& english) {
    return english.substr(0, english.size() - 3) + kTwinSuffix;
}

std::string english_of(const std::string& twin) {
    return twin.substr(0, twin.size() - kTwinSuffix.size()) + ".md";
}

std::vector<std::string> split_lines(const std::string& text) {
    std::vector<std::string> lines;
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
        lines.push_back(line);
    }
    return lines;
}

std::string trim(const std::string& s) {
    size_t first = s.find_first_not_of(" \t");
    if (first == std::string::npos) {
        return {};
    }
    size_t last = s.find_last_not_of(" \t");
    return s.substr(first, last - first + 1);
}

bool blank(const std::string& s) {
    return trim(s).empty();
}

size_t indent_of(const std::string& s) {
    size_t n = s.find_first_not_of(' ');
    return n == std::string::npos ? s.size() : n;
}

bool is_list_item(const std::string& line) {
    std::string t = trim(line);
    if (t.size() >= 2 && (t[0] == '-' || t[0] == '*' || t[0] == '+') && t[1] == ' ') {
        return true;
    }
    size_t digits = t.find_first_not_of("0123456789");
    return digits != std::string::npos && digits > 0 && digits + 1 < t.size() &&
           (t[digits] == '.' || t[digits] == ')') && t[digits + 1] == ' ';
}

// The code spans of a line: [begin, end) byte ranges, backticks included. A run of n backticks
// opens a span that the next run of exactly n backticks closes; an unclosed run is plain text.
std::vector<std::pair<size_t, size_t>> code_spans(const std::string& line) {
    std::vector<std::pair<size_t, size_t>> spans;
    size_t i = 0;
    while (i < line.size()) {
        if (line[i] != '`') {
            ++i;
            continue;
        }
        size_t run = line.find_first_not_of('`', i);
        run = (run == std::string::npos ? line.size() : run) - i;
        size_t j = i + run;
        std::optional<size_t> close;
        while (j < line.size()) {
            if (line[j] != '`') {
                ++j;
                continue;
            }
            size_t other = line.find_first_not_of('`', j);
            other = (other == std::string::npos ? line.size() : other) - j;
            if (other == run) {
                close = j + run;
                break;
            }
            j += other;
        }
        if (!close) {
            i += run;
            continue;
        }
        spans.emplace_back(i, *close);
        i = *close;
    }
    return spans;
}

std::vector<std::string> code_texts(const std::string& line) {
    std::vector<std::string> texts;
    for (auto [b, e] : code_spans(line)) {
        texts.push_back(line.substr(b, e - b));
    }
    std::sort(texts.begin(), texts.end());
    return texts;
}

// The line with its code spans blanked out (same length), so that brackets, pipes and digits
// inside code do not count as markdown or as figures.
std::string without_code(const std::string& line) {
    std::string masked = line;
    for (auto [b, e] : code_spans(line)) {
        std::fill(masked.begin() + static_cast<long>(b), masked.begin() + static_cast<long>(e),
                  ' ');
    }
    return masked;
}

struct Link {
    int line = 0;
    std::string target;
    bool image = false;
};

// The inline links, images and autolinks of one line; `masked` (the line without code) comes
// back with the link targets blanked out too.
std::vector<Link> links_of(const std::string& line, int number, std::string& masked) {
    std::vector<Link> links;
    masked = without_code(line);
    for (size_t pos = 0; pos + 1 < masked.size(); ++pos) {
        if (masked[pos] == '<' &&
            (masked.compare(pos, 8, "<http://") == 0 || masked.compare(pos, 9, "<https://") == 0)) {
            size_t end = masked.find('>', pos);
            if (end != std::string::npos) {
                links.push_back({number, line.substr(pos + 1, end - pos - 1), false});
                std::fill(masked.begin() + static_cast<long>(pos),
                          masked.begin() + static_cast<long>(end) + 1, ' ');
            }
            continue;
        }
        if (masked[pos] != ']' || masked[pos + 1] != '(') {
            continue;
        }
        int depth = 0;
        std::optional<size_t> open;
        for (size_t k = pos; k-- > 0;) {
            if (masked[k] == ']') {
                ++depth;
            } else if (masked[k] == '[') {
                if (depth == 0) {
                    open = k;
                    break;
                }
                --depth;
            }
        }
        size_t end = masked.find(')', pos + 2);
        if (end == std::string::npos) {
            continue;
        }
        // No '[' on this line: the link's text began on an earlier line of the paragraph (a
        // wrapped link). Its target is here, and it counts like any other.
        std::string target = trim(line.substr(pos + 2, end - pos - 2));
        if (size_t space = target.find(' '); space != std::string::npos) {
            target.resize(space);  // a title after the target is text, not a path
        }
        links.push_back({number, target, open && *open > 0 && masked[*open - 1] == '!'});
        std::fill(masked.begin() + static_cast<long>(pos) + 2,
                  masked.begin() + static_cast<long>(end), ' ');
        pos = end;
    }
    return links;
}

// The figures of a piece of prose: every word of [A-Za-z0-9_] (with '.' or ',' between two
// digits) that holds a digit, sorted, since a translation may reorder them within a cell.
std::vector<std::string> figures_of(const std::string& masked) {
    std::vector<std::string> figures;
    auto word = [](char c) {
        return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
               c == '_';
    };
    auto digit = [](char c) { return c >= '0' && c <= '9'; };
    size_t i = 0;
    while (i < masked.size()) {
        if (!word(masked[i])) {
            ++i;
            continue;
        }
        size_t j = i;
        while (j < masked.size() &&
               (word(masked[j]) ||
                ((masked[j] == '.' || masked[j] == ',') && j > i && digit(masked[j - 1]) &&
                 j + 1 < masked.size() && digit(masked[j + 1])))) {
            ++j;
        }
        std::string token = masked.substr(i, j - i);
        if (std::any_of(token.begin(), token.end(), digit)) {
            figures.push_back(token);
        }
        i = j;
    }
    std::sort(figures.begin(), figures.end());
    return figures;
}

struct Heading {
    int line = 0;
    int level = 0;
    std::string text;
    std::vector<std::string> code;  // its code spans, sorted
};

struct Block {
    int line = 0;
    std::vector<std::string> lines;  // raw, fences included
};

struct Row {
    int line = 0;
    std::vector<std::vector<std::string>> cells;  // each cell's figures
};

struct Table {
    int line = 0;
    std::vector<Row> rows;
};

struct Marker {
    int line = 0;
    std::string text;
};

// What the alignment compares in one document (line 1, the language line, left out).
struct Outline {
    std::vector<Heading> headings;
    std::vector<Block> blocks;
    std::vector<Table> tables;
    std::vector<Link> links;
    std::vector<Marker> markers;
};

Row row_of(const std::string& masked, int number) {
    Row row{number, {}};
    std::vector<std::string> cells(1);
    for (size_t i = 0; i < masked.size(); ++i) {
        if (masked[i] == '|' && (i == 0 || masked[i - 1] != '\\')) {
            cells.emplace_back();
        } else {
            cells.back() += masked[i];
        }
    }
    if (!cells.empty() && blank(cells.front())) {
        cells.erase(cells.begin());
    }
    if (!cells.empty() && blank(cells.back())) {
        cells.pop_back();
    }
    for (const auto& cell : cells) {
        row.cells.push_back(figures_of(cell));
    }
    return row;
}

Outline outline_of(const std::string& text) {
    Outline o;
    std::vector<std::string> lines = split_lines(text);
    // Whether the last non-blank line outside code was a paragraph at the margin (after which a
    // line indented by four spaces, past a blank line, opens an indented code block) rather than
    // a list item or its continuation.
    bool after_margin_text = true;
    for (size_t i = 1; i < lines.size(); ++i) {
        const std::string& line = lines[i];
        int number = static_cast<int>(i) + 1;
        std::string t = trim(line);
        if (t.rfind("```", 0) == 0 || t.rfind("~~~", 0) == 0) {
            char fence_char = t[0];
            size_t fence_len = t.find_first_not_of(fence_char);
            fence_len = fence_len == std::string::npos ? t.size() : fence_len;
            Block b{number, {line}};
            size_t j = i + 1;
            for (; j < lines.size(); ++j) {
                b.lines.push_back(lines[j]);
                std::string c = trim(lines[j]);
                if (c.size() >= fence_len && c.find_first_not_of(fence_char) == std::string::npos) {
                    break;
                }
            }
            o.blocks.push_back(b);
            i = j;
            after_margin_text = true;
            continue;
        }
        if (indent_of(line) >= 4 && !blank(line) && i > 1 && blank(lines[i - 1]) &&
            after_margin_text) {
            Block b{number, {}};
            size_t j = i;
            while (j < lines.size() && (blank(lines[j]) || indent_of(lines[j]) >= 4)) {
                b.lines.push_back(lines[j]);
                ++j;
            }
            while (!b.lines.empty() && blank(b.lines.back())) {
                b.lines.pop_back();
            }
            o.blocks.push_back(b);
            i = j - 1;
            continue;
        }
        if (blank(line)) {
            continue;
        }
        after_margin_text = indent_of(line) == 0 && !is_list_item(line);
        if (t.rfind("<!--", 0) == 0) {
            o.markers.push_back({number, line});
            continue;
        }
        std::string masked;
        std::vector<Link> links = links_of(line, number, masked);
        o.links.insert(o.links.end(), links.begin(), links.end());
        size_t hashes = line.find_first_not_of('#');
        if (hashes != std::string::npos && hashes >= 1 && hashes <= 6 && line[hashes] == ' ') {
            o.headings.push_back(
                {number, static_cast<int>(hashes), trim(line.substr(hashes)), code_texts(line)});
            continue;
        }
        if (t.rfind('|', 0) == 0) {
            if (o.tables.empty() || i < 1 || trim(lines[i - 1]).rfind('|', 0) != 0) {
                o.tables.push_back({number, {}});
            }
            o.tables.back().rows.push_back(row_of(trim(masked), number));
        }
    }
    return o;
}

// GitHub's anchor for a heading: the rendered text, lower case, punctuation dropped (ASCII and
// the CJK and general punctuation blocks), spaces turned into hyphens.
std::string slug_of(const std::string& heading) {
    std::string text;
    for (size_t i = 0; i < heading.size(); ++i) {
        if (heading[i] == ']' && i + 1 < heading.size() && heading[i + 1] == '(') {
            size_t end = heading.find(')', i);
            i = end == std::string::npos ? heading.size() : end;
            continue;
        }
        text += heading[i];
    }
    std::string slug;
    size_t i = 0;
    while (i < text.size()) {
        auto c = static_cast<unsigned char>(text[i]);
        if (c < 0x80) {
            if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-') {
                slug += static_cast<char>(c);
            } else if (c >= 'A' && c <= 'Z') {
                slug += static_cast<char>(c - 'A' + 'a');
            } else if (c == ' ') {
                slug += '-';
            }
            ++i;
            continue;
        }
        size_t n = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
        n = std::min(n, text.size() - i);
        uint32_t cp = c & (n == 4 ? 0x07 : n == 3 ? 0x0F : 0x1F);
        for (size_t k = 1; k < n; ++k) {
            cp = (cp << 6) | (static_cast<unsigned char>(text[i + k]) & 0x3F);
        }
        bool punctuation =
            (cp >= 0xA1 && cp <= 0xBF && cp != 0xAA && cp != 0xB2 && cp != 0xB3 && cp != 0xB5 &&
             cp != 0xB9 && cp != 0xBA) ||
            cp == 0xD7 || cp == 0xF7 || (cp >= 0x2000 && cp <= 0x206F) ||
            (cp >= 0x2190 && cp <= 0x23FF) || (cp >= 0x2500 && cp <= 0x27BF) ||
            (cp >= 0x3000 && cp <= 0x303F && cp != 0x3005 && cp != 0x3006 && cp != 0x3007) ||
            (cp >= 0xFF01 && cp <= 0xFF0F) || (cp >= 0xFF1A && cp <= 0xFF20) ||
            (cp >= 0xFF3B && cp <= 0xFF40) || (cp >= 0xFF5B && cp <= 0xFF65);
        if (!punctuation) {
            slug += text.substr(i, n);
        }
        i += n;
    }
    return slug;
}

// The anchors of a document's headings, in order, repeated ones numbered as GitHub does.
std::vector<std::string> anchors_of(const std::string& text) {
    std::vector<std::string> anchors;
    std::map<std::string, int> seen;
    for (const Heading& h : outline_of(text).headings) {
        std::string slug = slug_of(h.text);
        int n = seen[slug]++;
        anchors.push_back(n == 0 ? slug : slug + "-" + std::to_string(n));
    }
    return anchors;
}

std::optional<size_t> anchor_index(const std::string& text, const std::string& anchor) {
    std::vector<std::string> anchors = anchors_of(text);
    auto it = std::find(anchors.begin(), anchors.end(), anchor);
    if (it == anchors.end()) {
        return std::nullopt;
    }
    return static_cast<size_t>(it - anchors.begin());
}

// Reads a document by its path from the top of the tree; nullopt when there is none.
using Reader = std::function<std::optional<std::string>(const std::string&)>;

std::string dir_of(const std::string& path) {
    std::string dir = fs::path(path).parent_path().generic_string();
    return dir;
}

// A link's path resolved against the document it is in, from the top of the tree.
std::string resolve(const std::string& doc, const std::string& path) {
    if (path.empty()) {
        return doc;
    }
    return (fs::path(dir_of(doc)) / path).lexically_normal().generic_string();
}

bool external(const std::string& target) {
    return target.find("://") != std::string::npos || target.rfind("mailto:", 0) == 0;
}

std::pair<std::string, std::string> split_anchor(const std::string& target) {
    size_t hash = target.find('#');
    if (hash == std::string::npos) {
        return {target, {}};
    }
    return {target.substr(0, hash), target.substr(hash + 1)};
}

std::string at(const std::string& file, int line) {
    return file + ":" + std::to_string(line);
}

std::string in_quotes(const std::string& s) {
    return "'" + s + "'";
}

// Empty when the Chinese link `z` (in `zh`) goes where the English link `e` (in `en`) goes;
// otherwise why not.
std::string link_difference(const std::string& en, const Link& e, const std::string& zh,
                            const Link& z, const Reader& read) {
    if (e.image != z.image) {
        return std::string(e.image ? "the English is an image, the Chinese a link"
                                   : "the English is a link, the Chinese an image");
    }
    if (external(e.target) || external(z.target)) {
        return e.target == z.target ? std::string() : "the targets differ";
    }
    auto [e_path, e_anchor] = split_anchor(e.target);
    auto [z_path, z_anchor] = split_anchor(z.target);
    std::string e_file = resolve(en, e_path);
    std::string z_file = resolve(zh, z_path);
    if (z_file == e_file) {
        // Both go to the same file: an English-only one, or a document that exists only in
        // Chinese (the glossary, the course map). Then the anchors are the same too.
        if (e_anchor == z_anchor) {
            return {};
        }
        return "the anchors into " + e_file + " differ";
    }
    if (!is_twin_name(z_file) || english_of(z_file) != e_file) {
        return "the English goes to " + e_file + ", the Chinese to " + z_file;
    }
    if (!read(z_file)) {
        return z_file + " does not exist (link " + e_file + " until it does)";
    }
    if (e_anchor.empty() != z_anchor.empty()) {
        return "one has an anchor and the other has none";
    }
    if (e_anchor.empty()) {
        return {};
    }
    auto e_text = read(e_file);
    auto z_text = read(z_file);
    auto e_index = e_text ? anchor_index(*e_text, e_anchor) : std::nullopt;
    if (!e_index) {
        return "the English anchor #" + e_anchor + " names no heading of " + e_file;
    }
    auto z_index = z_text ? anchor_index(*z_text, z_anchor) : std::nullopt;
    if (!z_index) {
        std::vector<std::string> anchors =
            z_text ? anchors_of(*z_text) : std::vector<std::string>{};
        std::string want = *e_index < anchors.size()
                               ? " (its heading " + std::to_string(*e_index + 1) + " is #" +
                                     anchors[*e_index] + ")"
                               : "";
        return "the Chinese anchor #" + z_anchor + " names no heading of " + z_file + want;
    }
    if (*e_index != *z_index) {
        return "the English anchor names heading " + std::to_string(*e_index + 1) + " of " +
               e_file + ", the Chinese one heading " + std::to_string(*z_index + 1) + " of " +
               z_file;
    }
    return {};
}

std::string join(const std::vector<std::string>& v) {
    std::string s;
    for (const auto& x : v) {
        s += (s.empty() ? "" : " ") + x;
    }
    return "[" + s + "]";
}

// Compares two sequences of one kind, reporting the first element that differs and any
// difference in count. `same` returns empty when two elements agree, else what differs; `show`
// names an element for the count message.
template <typename T>
void compare_sequence(const std::string& kind, const std::string& en, const std::vector<T>& e,
                      const std::string& zh, const std::vector<T>& z,
                      const std::function<std::string(const T&, const T&)>& same,
                      const std::function<std::string(const T&)>& show,
                      std::vector<std::string>& problems) {
    size_t n = std::min(e.size(), z.size());
    for (size_t i = 0; i < n; ++i) {
        std::string why = same(e[i], z[i]);
        if (!why.empty()) {
            problems.push_back(at(zh, z[i].line) + ": " + kind + " " + std::to_string(i + 1) +
                               " differs from " + at(en, e[i].line) + ": " + why);
            return;
        }
    }
    if (e.size() != z.size()) {
        std::string where = e.size() > z.size() ? "the first one missing from " + zh + " is at " +
                                                      at(en, e[n].line) + ": " + show(e[n])
                                                : "the first extra one is at " + at(zh, z[n].line) +
                                                      ": " + show(z[n]);
        problems.push_back(zh + ": " + std::to_string(z.size()) + " " + kind + "s, " + en +
                           " has " + std::to_string(e.size()) + "; " + where);
    }
}

std::vector<std::string> language_line_problems(const std::string& en, const std::string& en_text,
                                                const std::string& zh, const std::string& zh_text) {
    std::vector<std::string> problems;
    std::vector<std::string> e = split_lines(en_text);
    std::vector<std::string> z = split_lines(zh_text);
    std::string want_e = "English | [中文](" + fs::path(zh).filename().string() + ")";
    std::string want_z = "[English](" + fs::path(en).filename().string() + ") | 中文";
    if (e.empty() || e[0] != want_e) {
        problems.push_back(at(en, 1) + ": the language line should be " + in_quotes(want_e) +
                           ", it is " + in_quotes(e.empty() ? "" : e[0]));
    } else if (e.size() < 2 || !e[1].empty()) {
        problems.push_back(at(en, 2) + ": a blank line should follow the language line");
    }
    if (z.empty() || z[0] != want_z) {
        problems.push_back(at(zh, 1) + ": the language line should be " + in_quotes(want_z) +
                           ", it is " + in_quotes(z.empty() ? "" : z[0]));
    } else if (z.size() < 2 || !z[1].empty()) {
        problems.push_back(at(zh, 2) + ": a blank line should follow the language line");
    }
    return problems;
}

// Everything that differs between an English document and its Chinese twin, one message each.
std::vector<std::string> alignment_problems(const std::string& en, const std::string& en_text,
                                            const std::string& zh, const std::string& zh_text,
                                            const Reader& others) {
    Reader read = [&](const std::string& path) -> std::optional<std::string> {
        if (path == en) {
            return en_text;
        }
        if (path == zh) {
            return zh_text;
        }
        return others(path);
    };
    std::vector<std::string> problems = language_line_problems(en, en_text, zh, zh_text);
    Outline e = outline_of(en_text);
    Outline z = outline_of(zh_text);

    compare_sequence<Heading>(
        "heading", en, e.headings, zh, z.headings,
        [](const Heading& a, const Heading& b) -> std::string {
            if (a.level != b.level) {
                return "level " + std::to_string(b.level) + " here, " + std::to_string(a.level) +
                       " in English (" + in_quotes(a.text) + ")";
            }
            if (a.code != b.code) {
                return "its code names are " + join(b.code) + ", in English " + join(a.code);
            }
            return {};
        },
        [](const Heading& h) { return std::string(h.level, '#') + " " + h.text; }, problems);

    compare_sequence<Block>(
        "code block", en, e.blocks, zh, z.blocks,
        [](const Block& a, const Block& b) -> std::string {
            size_t n = std::min(a.lines.size(), b.lines.size());
            for (size_t k = 0; k < n; ++k) {
                if (a.lines[k] != b.lines[k]) {
                    return "its line " + std::to_string(k + 1) + " (file line " +
                           std::to_string(b.line + static_cast<int>(k)) + ") is " +
                           in_quotes(b.lines[k]) + ", in English " + in_quotes(a.lines[k]);
                }
            }
            if (a.lines.size() != b.lines.size()) {
                return "it has " + std::to_string(b.lines.size()) + " lines, in English " +
                       std::to_string(a.lines.size());
            }
            return {};
        },
        [](const Block& b) { return in_quotes(b.lines.front()); }, problems);

    compare_sequence<Marker>(
        "listing marker", en, e.markers, zh, z.markers,
        [](const Marker& a, const Marker& b) -> std::string {
            return a.text == b.text ? std::string()
                                    : in_quotes(b.text) + " here, in English " + in_quotes(a.text);
        },
        [](const Marker& m) { return in_quotes(m.text); }, problems);

    compare_sequence<Table>(
        "table", en, e.tables, zh, z.tables,
        [](const Table& a, const Table& b) -> std::string {
            size_t n = std::min(a.rows.size(), b.rows.size());
            for (size_t r = 0; r < n; ++r) {
                const Row& ar = a.rows[r];
                const Row& br = b.rows[r];
                std::string row = "its row " + std::to_string(r + 1) + " (line " +
                                  std::to_string(br.line) + ", in English line " +
                                  std::to_string(ar.line) + ")";
                if (ar.cells.size() != br.cells.size()) {
                    return row + " has " + std::to_string(br.cells.size()) + " cells, in English " +
                           std::to_string(ar.cells.size());
                }
                for (size_t c = 0; c < ar.cells.size(); ++c) {
                    if (ar.cells[c] != br.cells[c]) {
                        return row + ", cell " + std::to_string(c + 1) + ": its figures are " +
                               join(br.cells[c]) + ", in English " + join(ar.cells[c]);
                    }
                }
            }
            if (a.rows.size() != b.rows.size()) {
                return "it has " + std::to_string(b.rows.size()) + " rows, in English " +
                       std::to_string(a.rows.size());
            }
            return {};
        },
        [](const Table& t) { return std::to_string(t.rows.size()) + " rows"; }, problems);

    compare_sequence<Link>(
        "link", en, e.links, zh, z.links,
        [&](const Link& a, const Link& b) -> std::string {
            std::string why = link_difference(en, a, zh, b, read);
            return why.empty() ? why
                               : "(" + b.target + " here, " + a.target + " in English) " + why;
        },
        [](const Link& l) { return l.target; }, problems);
    return problems;
}

std::string report(const std::vector<std::string>& problems) {
    std::string s;
    for (const auto& p : problems) {
        s += p + "\n";
    }
    return s;
}

// ---- the comparison itself, on small documents ----

const std::string kEnglish = R"(English | [中文](a.zh-CN.md)

# Title

Some text with [a link](b.md) and ![a chart](img/c.svg).

## Run it

```
build/bin/05_epoll_server --port 0
```

| variant | req/s |
|---|---|
| `05_epoll` | 235,898 |

<!-- listing 05_epoll/server.cpp loop -->

### The `--trace` option

See [the runs](#run-it).

    build/bin/iolab list
)";

const std::string kChinese = R"([English](a.md) | 中文

# 标题

一段文字，有[一个链接](b.zh-CN.md)和 ![一张图](img/c.svg)。

## 运行

```
build/bin/05_epoll_server --port 0
```

| 变体 | 每秒请求 |
|---|---|
| `05_epoll` | 235,898 |

<!-- listing 05_epoll/server.cpp loop -->

### `--trace` 选项

见[运行](#运行)。

    build/bin/iolab list
)";

const std::string kOtherEnglish = "English | [中文](b.zh-CN.md)\n\n# B\n\n## Part two\n";
const std::string kOtherChinese = "[English](b.md) | 中文\n\n# B\n\n## 第二部分\n";

std::vector<std::string> check(const std::string& en_text, const std::string& zh_text,
                               bool with_twin_of_b = true) {
    Reader others = [=](const std::string& path) -> std::optional<std::string> {
        if (path == "docs/b.md") {
            return kOtherEnglish;
        }
        if (path == "docs/b.zh-CN.md" && with_twin_of_b) {
            return kOtherChinese;
        }
        return std::nullopt;
    };
    return alignment_problems("docs/a.md", en_text, "docs/a.zh-CN.md", zh_text, others);
}

std::string replaced(std::string text, const std::string& from, const std::string& to) {
    size_t pos = text.find(from);
    EXPECT_NE(pos, std::string::npos) << "the test's own document lacks " << from;
    if (pos != std::string::npos) {
        text.replace(pos, from.size(), to);
    }
    return text;
}

// Expects exactly one problem, containing each of `parts`.
void expect_one(const std::vector<std::string>& problems, const std::vector<std::string>& parts) {
    ASSERT_EQ(problems.size(), 1u) << report(problems);
    for (const auto& part : parts) {
        EXPECT_NE(problems[0].find(part), std::string::npos)
            << "want " << in_quotes(part) << " in: " << problems[0];
    }
}

TEST(Alignment, AlignedPairPasses) {
    EXPECT_EQ(report(check(kEnglish, kChinese)), "");
}

TEST(Alignment, OutlineSeesEveryKind) {
    Outline o = outline_of(kChinese);
    EXPECT_EQ(o.headings.size(), 3u);
    EXPECT_EQ(o.blocks.size(), 2u);
    EXPECT_EQ(o.tables.size(), 1u);
    EXPECT_EQ(o.links.size(), 3u);
    EXPECT_EQ(o.markers.size(), 1u);
}

TEST(Alignment, LanguageLineDrift) {
    expect_one(
        check(replaced(kEnglish, "English | [中文](a.zh-CN.md)", "English | 中文"), kChinese),
        {"docs/a.md:1", "language line", "English | [中文](a.zh-CN.md)"});
    expect_one(
        check(kEnglish, replaced(kChinese, "[English](a.md) | 中文", "[English](b.md) | 中文")),
        {"docs/a.zh-CN.md:1", "[English](a.md) | 中文"});
    expect_one(check(kEnglish, replaced(kChinese, "| 中文\n\n", "| 中文\n")),
               {"docs/a.zh-CN.md:2", "blank line"});
}

TEST(Alignment, HeadingLevelDrift) {
    expect_one(check(kEnglish, replaced(kChinese, "## 运行", "### 运行")),
               {"docs/a.zh-CN.md:7", "heading 2", "docs/a.md:7", "level 3 here, 2 in English"});
}

TEST(Alignment, HeadingMissing) {
    auto problems = check(kEnglish, replaced(kChinese, "### `--trace` 选项\n", ""));
    ASSERT_GE(problems.size(), 1u);
    EXPECT_NE(problems[0].find("2 headings, docs/a.md has 3"), std::string::npos) << problems[0];
    EXPECT_NE(problems[0].find("docs/a.md:19: ### The `--trace` option"), std::string::npos)
        << problems[0];
}

TEST(Alignment, HeadingCodeNameDrift) {
    expect_one(check(kEnglish, replaced(kChinese, "### `--trace` 选项", "### 跟踪选项")),
               {"docs/a.zh-CN.md:19", "heading 3", "its code names are []", "[`--trace`]"});
}

TEST(Alignment, HashInsideCodeIsNoHeading) {
    std::string en = replaced(kEnglish, "build/bin/05_epoll_server --port 0",
                              "# a comment\nbuild/bin/05_epoll_server --port 0");
    std::string zh = replaced(kChinese, "build/bin/05_epoll_server --port 0",
                              "# a comment\nbuild/bin/05_epoll_server --port 0");
    EXPECT_EQ(report(check(en, zh)), "");
    EXPECT_EQ(outline_of(zh).headings.size(), 3u);
}

TEST(Alignment, CodeBlockByteDrift) {
    expect_one(check(kEnglish, replaced(kChinese, "--port 0\n", "--port 0 \n")),
               {"docs/a.zh-CN.md:9", "code block 1", "docs/a.md:9", "file line 10",
                "'build/bin/05_epoll_server --port 0 '"});
}

TEST(Alignment, CodeBlockMissing) {
    expect_one(check(kEnglish, replaced(kChinese, "\n    build/bin/iolab list\n", "\n")),
               {"1 code blocks, docs/a.md has 2", "docs/a.md:23", "build/bin/iolab list"});
}

TEST(Alignment, IndentedCodeBlockDrift) {
    expect_one(check(kEnglish, replaced(kChinese, "    build/bin/iolab list", "    iolab list")),
               {"docs/a.zh-CN.md:23", "code block 2", "'    iolab list'"});
}

TEST(Alignment, ListContinuationIsNoCode) {
    Outline o = outline_of("x\n\n- an item\n\n      still the item, not code\n");
    EXPECT_TRUE(o.blocks.empty());
}

TEST(Alignment, TableRowDrift) {
    expect_one(check(kEnglish, replaced(kChinese, "| `05_epoll` | 235,898 |\n", "")),
               {"docs/a.zh-CN.md:13", "table 1", "2 rows, in English 3"});
}

TEST(Alignment, TableColumnDrift) {
    expect_one(check(kEnglish, replaced(kChinese, "| 变体 | 每秒请求 |", "| 变体 | 每秒 | 请求 |")),
               {"table 1", "row 1 (line 13, in English line 13) has 3 cells, in English 2"});
}

TEST(Alignment, TableFigureDrift) {
    expect_one(check(kEnglish, replaced(kChinese, "235,898", "235,989")),
               {"table 1", "row 3", "cell 2", "[235,989]", "[235,898]"});
}

TEST(Alignment, EscapedPipeAndCodeAreNoCells) {
    Outline o = outline_of("x\n\n| `--mode qa\\|echo` | 1,000 (`9005`) |\n");
    ASSERT_EQ(o.tables.size(), 1u);
    ASSERT_EQ(o.tables[0].rows.size(), 1u);
    ASSERT_EQ(o.tables[0].rows[0].cells.size(), 2u);
    EXPECT_EQ(o.tables[0].rows[0].cells[1], std::vector<std::string>{"1,000"});
}

TEST(Alignment, LinkTargetDrift) {
    expect_one(check(kEnglish, replaced(kChinese, "(b.zh-CN.md)", "(c.md)")),
               {"docs/a.zh-CN.md:5", "link 1", "docs/a.md:5", "the English goes to docs/b.md",
                "the Chinese to docs/c.md"});
    expect_one(check(kEnglish, replaced(kChinese, "img/c.svg", "img/d.svg")),
               {"link 2", "img/d.svg here, img/c.svg in English"});
}

TEST(Alignment, WrappedLinkIsStillALink) {
    // A link whose text wraps onto the next line still counts, and its target is checked.
    const std::string en =
        "English | [中文](a.zh-CN.md)\n\n# A\n\nSee [its\ntimeline](img/t.svg).\n";
    const std::string zh = "[English](a.md) | 中文\n\n# A\n\n见[它的\n时间线](img/t.svg)。\n";
    EXPECT_EQ(report(check(en, zh)), "");
    expect_one(check(en, replaced(zh, "img/t.svg", "img/u.svg")),
               {"link 1", "img/u.svg here, img/t.svg in English"});
}

TEST(Alignment, LinkToTheEnglishDocumentIsFineToo) {
    EXPECT_EQ(report(check(kEnglish, replaced(kChinese, "(b.zh-CN.md)", "(b.md)"))), "");
}

TEST(Alignment, LinkToAChineseOnlyDocumentFromBoth) {
    std::string en = replaced(kEnglish, "(b.md)", "(glossary.zh-CN.md)");
    EXPECT_EQ(report(check(en, replaced(kChinese, "(b.zh-CN.md)", "(glossary.zh-CN.md)"))), "");
    expect_one(check(en, replaced(kChinese, "(b.zh-CN.md)", "(glossary.zh-CN.md#x)")),
               {"link 1", "the anchors into docs/glossary.zh-CN.md differ"});
}

TEST(Alignment, LinkToAMissingTwin) {
    expect_one(check(kEnglish, kChinese, false), {"link 1", "docs/b.zh-CN.md does not exist"});
}

TEST(Alignment, ImageBecameALink) {
    expect_one(check(kEnglish, replaced(kChinese, "![一张图]", "[一张图]")),
               {"link 2", "the English is an image"});
}

TEST(Alignment, AnchorIntoTheTwinNamesTheSameHeading) {
    std::string en = replaced(kEnglish, "(b.md)", "(b.md#part-two)");
    EXPECT_EQ(report(check(en, replaced(kChinese, "(b.zh-CN.md)", "(b.zh-CN.md#第二部分)"))), "");
    EXPECT_EQ(report(check(en, replaced(kChinese, "(b.zh-CN.md)", "(b.md#part-two)"))), "");
    expect_one(check(en, replaced(kChinese, "(b.zh-CN.md)", "(b.zh-CN.md#b)")),
               {"link 1", "heading 2 of docs/b.md", "heading 1 of docs/b.zh-CN.md"});
    expect_one(check(en, replaced(kChinese, "(b.zh-CN.md)", "(b.zh-CN.md#part-two)")),
               {"link 1", "#part-two names no heading of docs/b.zh-CN.md", "#第二部分"});
    expect_one(check(en, kChinese), {"link 1", "one has an anchor"});
}

TEST(Alignment, AnchorIntoItself) {
    expect_one(check(kEnglish, replaced(kChinese, "(#运行)", "(#run-it)")),
               {"link 3", "#run-it names no heading of docs/a.zh-CN.md"});
}

TEST(Alignment, ListingMarkerDrift) {
    expect_one(check(kEnglish, replaced(kChinese, "server.cpp loop", "server.cpp accept")),
               {"docs/a.zh-CN.md:17", "listing marker 1", "docs/a.md:17"});
}

TEST(Alignment, SlugsAsGitHubMakesThem) {
    EXPECT_EQ(slug_of("The loop"), "the-loop");
    EXPECT_EQ(slug_of("Measured beside 02"), "measured-beside-02");
    EXPECT_EQ(slug_of("Trace lines (`--trace`)"), "trace-lines---trace");
    EXPECT_EQ(slug_of("iolab scale VARIANT: memory per connection"),
              "iolab-scale-variant-memory-per-connection");
    EXPECT_EQ(slug_of("命令行（`--trace`）：说明"), "命令行--trace说明");
    EXPECT_EQ(anchors_of("x\n# A\n## A\n"), (std::vector<std::string>{"a", "a-1"}));
}

// ---- the lab's own documents ----

fs::path source_dir() {
    return fs::path(IOLAB_SOURCE_DIR);
}

std::optional<std::string> read_text(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        return std::nullopt;
    }
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
}

std::optional<std::string> read_doc(const std::string& path) {
    return read_text(source_dir() / path);
}

// Every .md git knows of in the source tree, tracked or new (not ignored); empty with `why` when
// git cannot say.
std::vector<std::string> markdown_files(std::string& why) {
    std::string command = "git -C '" + source_dir().string() +
                          "' ls-files -z --cached --others --exclude-standard -- '*.md' 2>&1";
    FILE* pipe = ::popen(command.c_str(), "r");
    if (pipe == nullptr) {
        why = "cannot run: " + command;
        return {};
    }
    std::string out;
    char chunk[4096];
    size_t n;
    while ((n = std::fread(chunk, 1, sizeof chunk, pipe)) > 0) {
        out.append(chunk, n);
    }
    if (int status = ::pclose(pipe); status != 0) {
        why = command + " failed (" + std::to_string(status) + "): " + out;
        return {};
    }
    std::set<std::string> files;
    std::istringstream in(out);
    std::string name;
    while (std::getline(in, name, '\0')) {
        if (!name.empty() && fs::exists(source_dir() / name)) {
            files.insert(name);
        }
    }
    return {files.begin(), files.end()};
}

bool is_user_document(const std::string& path) {
    return !is_twin_name(path) &&
           std::any_of(kUserDocuments.begin(), kUserDocuments.end(), [&](const std::string& glob) {
               return ::fnmatch(glob.c_str(), path.c_str(), FNM_PATHNAME) == 0;
           });
}

// The English documents that have a twin now, the pairs the alignment checks.
std::vector<std::string> documents_with_twins() {
    std::string why;
    std::vector<std::string> english;
    for (const auto& path : markdown_files(why)) {
        if (!is_twin_name(path) && fs::exists(source_dir() / twin_of(path))) {
            english.push_back(path);
        }
    }
    return english;
}

TEST(Docs, EveryUserDocumentHasItsTwin) {
    std::string why;
    std::vector<std::string> files = markdown_files(why);
    ASSERT_FALSE(files.empty()) << why;
    std::vector<std::string> documents, missing;
    for (const auto& path : files) {
        if (is_user_document(path)) {
            documents.push_back(path);
            if (!fs::exists(source_dir() / twin_of(path))) {
                missing.push_back(path);
            }
        }
    }
    EXPECT_GE(documents.size(), 14u) << "the glob no longer finds the lab's documents";
    std::string list;
    for (const auto& path : missing) {
        list += "  " + path + ": no " + twin_of(path) + "\n";
    }
    EXPECT_TRUE(missing.empty()) << missing.size() << " of the " << documents.size()
                                 << " user documents have no Chinese twin:\n"
                                 << list;
}

// A Chinese document links only what exists, the Chinese-only ones (glossary, course map)
// included; an anchor into a document names one of its headings.
TEST(Docs, ChineseLinksResolve) {
    std::string why;
    std::vector<std::string> files = markdown_files(why);
    ASSERT_FALSE(files.empty()) << why;
    std::vector<std::string> problems;
    for (const auto& doc : files) {
        if (!is_twin_name(doc)) {
            continue;
        }
        std::string text = *read_doc(doc);
        for (const Link& link : outline_of(text).links) {
            if (external(link.target)) {
                continue;
            }
            auto [path, anchor] = split_anchor(link.target);
            std::string file = resolve(doc, path);
            if (!fs::exists(source_dir() / file)) {
                problems.push_back(at(doc, link.line) + ": " + link.target + ": no " + file);
                continue;
            }
            if (!anchor.empty() && file.size() > 3 && file.substr(file.size() - 3) == ".md" &&
                !anchor_index(*read_doc(file), anchor)) {
                problems.push_back(at(doc, link.line) + ": " + link.target + ": #" + anchor +
                                   " names no heading of " + file);
            }
        }
    }
    EXPECT_TRUE(problems.empty()) << report(problems);
}

class Twins : public testing::TestWithParam<std::string> {};

TEST_P(Twins, AlignedWithTheEnglish) {
    const std::string& en = GetParam();
    std::string zh = twin_of(en);
    auto en_text = read_doc(en);
    auto zh_text = read_doc(zh);
    ASSERT_TRUE(en_text && zh_text) << en << " or " << zh << " cannot be read";
    std::vector<std::string> problems = alignment_problems(en, *en_text, zh, *zh_text, read_doc);
    EXPECT_TRUE(problems.empty()) << report(problems);
}

std::string pair_name(const testing::TestParamInfo<std::string>& info) {
    std::string name = info.param;
    for (char& c : name) {
        if (!std::isalnum(static_cast<unsigned char>(c))) {
            c = '_';
        }
    }
    return name;
}

INSTANTIATE_TEST_SUITE_P(Docs, Twins, testing::ValuesIn(documents_with_twins()), pair_name);

}  // namespace docs_alignment_test
