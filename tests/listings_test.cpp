// Every model README quotes its loop from the source (docs/listings.md, "Listings in the
// READMEs"): a line `<!-- listing DIR/FILE NAME -->`, then a ```cpp block that must be, byte for
// byte, the lines of DIR/FILE strictly between `// listing: NAME` and `// end listing: NAME`,
// with their common indentation removed. This suite fails when an excerpt has gone stale, when
// its markers are missing, and when a model README quotes no listing at all.

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

namespace listings_test {

namespace fs = std::filesystem;

std::vector<std::string> split_lines(const std::string& text) {
    std::vector<std::string> lines;
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
        lines.push_back(line);
    }
    return lines;
}

std::string trim_left(const std::string& s) {
    size_t first = s.find_first_not_of(" \t");
    return first == std::string::npos ? std::string() : s.substr(first);
}

// One quotation in a README: where it is, what it names, and the block that follows it.
struct Quote {
    int line = 0;      // 1-based line of the <!-- listing --> comment
    std::string file;  // DIR/FILE, relative to the source tree
    std::string name;
    std::vector<std::string> block;  // the lines inside the ```cpp fence
    std::string error;               // why the quotation is malformed, or empty
};

// "<!-- listing DIR/FILE NAME -->", spaces after it allowed: fills file and name.
bool parse_marker(const std::string& line, std::string& file, std::string& name) {
    const std::string open = "<!-- listing ", close = " -->";
    std::string s = line.substr(0, line.find_last_not_of(" \t\r") + 1);
    if (s.size() < open.size() + close.size() || s.compare(0, open.size(), open) != 0 ||
        s.compare(s.size() - close.size(), close.size(), close) != 0) {
        return false;
    }
    std::string words = s.substr(open.size(), s.size() - open.size() - close.size());
    size_t space = words.find(' ');
    if (space == std::string::npos) {
        return false;
    }
    file = words.substr(0, space);
    name = words.substr(space + 1);
    auto blank = [](char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; };
    return !file.empty() && !name.empty() && std::none_of(file.begin(), file.end(), blank) &&
           std::none_of(name.begin(), name.end(), blank);
}

std::vector<Quote> find_quotes(const std::string& readme) {
    std::vector<std::string> lines = split_lines(readme);
    std::vector<Quote> quotes;
    for (size_t i = 0; i < lines.size(); ++i) {
        Quote q;
        if (!parse_marker(lines[i], q.file, q.name)) {
            continue;
        }
        q.line = static_cast<int>(i) + 1;
        if (i + 1 >= lines.size() || lines[i + 1] != "```cpp") {
            q.error = "the line after it is not ```cpp";
            quotes.push_back(q);
            continue;
        }
        size_t j = i + 2;
        while (j < lines.size() && lines[j] != "```") {
            q.block.push_back(lines[j]);
            ++j;
        }
        if (j == lines.size()) {
            q.error = "its ```cpp block is never closed";
        }
        quotes.push_back(q);
        i = j;
    }
    return quotes;
}

// The lines of `source` strictly between the markers for `name`, dedented; nullopt (with `why`)
// when the markers are missing, repeated or out of order.
std::optional<std::vector<std::string>> extract_listing(const std::string& source,
                                                        const std::string& name, std::string& why) {
    const std::string begin = "// listing: " + name;
    const std::string end = "// end listing: " + name;
    std::vector<std::string> lines = split_lines(source);
    std::optional<size_t> first, last;
    for (size_t i = 0; i < lines.size(); ++i) {
        std::string text = trim_left(lines[i]);
        while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) {
            text.pop_back();
        }
        if (text == begin) {
            if (first) {
                why = "'" + begin + "' appears twice (lines " + std::to_string(*first + 1) +
                      " and " + std::to_string(i + 1) + ")";
                return std::nullopt;
            }
            first = i;
        } else if (text == end) {
            if (last) {
                why = "'" + end + "' appears twice";
                return std::nullopt;
            }
            last = i;
        }
    }
    if (!first || !last) {
        why = "no '" + (first ? end : begin) + "' marker";
        return std::nullopt;
    }
    if (*last < *first) {
        why = "'" + end + "' comes before '" + begin + "'";
        return std::nullopt;
    }
    std::vector<std::string> body(lines.begin() + static_cast<long>(*first) + 1,
                                  lines.begin() + static_cast<long>(*last));
    size_t indent = std::string::npos;
    for (const auto& line : body) {
        size_t lead = line.find_first_not_of(" \t");
        if (lead != std::string::npos) {
            indent = std::min(indent, lead);
        }
    }
    for (auto& line : body) {
        line = line.find_first_not_of(" \t") == std::string::npos ? std::string()
                                                                  : line.substr(indent);
    }
    return body;
}

// Empty when `quoted` is `source`; else which line differs first and how.
std::string first_difference(const std::vector<std::string>& quoted,
                             const std::vector<std::string>& source) {
    size_t n = std::min(quoted.size(), source.size());
    for (size_t i = 0; i < n; ++i) {
        if (quoted[i] != source[i]) {
            return "line " + std::to_string(i + 1) + " of the excerpt differs:\n  README: '" +
                   quoted[i] + "'\n  source: '" + source[i] + "'";
        }
    }
    if (quoted.size() != source.size()) {
        size_t i = n;
        return "the README quotes " + std::to_string(quoted.size()) + " lines, the source has " +
               std::to_string(source.size()) + "; first missing or extra line " +
               std::to_string(i + 1) + ": '" + (i < quoted.size() ? quoted[i] : source[i]) + "'";
    }
    return {};
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

// Every problem with the quotations in one model directory's README, one per line.
std::string check_model(const fs::path& root, const std::string& dir) {
    std::string readme_name = dir + "/README.md";
    auto readme = read_text(root / readme_name);
    if (!readme) {
        return readme_name + ": cannot be read";
    }
    std::vector<Quote> quotes = find_quotes(*readme);
    if (quotes.empty()) {
        return readme_name + ": quotes no listing (want at least one `<!-- listing " + dir +
               "/FILE NAME -->` line followed by a ```cpp block)";
    }
    std::string problems;
    for (const Quote& q : quotes) {
        std::string where =
            readme_name + ":" + std::to_string(q.line) + ": listing " + q.file + " " + q.name;
        std::string why;
        if (!q.error.empty()) {
            problems += where + ": " + q.error + "\n";
            continue;
        }
        auto source = read_text(root / q.file);
        if (!source) {
            problems += where + ": " + q.file + " cannot be read\n";
            continue;
        }
        auto listing = extract_listing(*source, q.name, why);
        if (!listing) {
            problems += where + ": in " + q.file + ", " + why + "\n";
            continue;
        }
        std::string diff = first_difference(q.block, *listing);
        if (!diff.empty()) {
            problems += where + ": the excerpt no longer matches the source; " + diff + "\n";
        }
    }
    return problems;
}

std::vector<std::string> model_dirs() {
    std::vector<std::string> dirs;
    for (const auto& entry : fs::directory_iterator(IOLAB_SOURCE_DIR)) {
        std::string name = entry.path().filename().string();
        bool model = name.size() > 3 && name[0] == '0' &&
                     std::isdigit(static_cast<unsigned char>(name[1])) && name[2] == '_';
        if (entry.is_directory() && model) {
            dirs.push_back(name);
        }
    }
    std::sort(dirs.begin(), dirs.end());
    return dirs;
}

// ---- the extraction itself, on small inline texts ----

TEST(ListingExtraction, TakesTheLinesBetweenTheMarkersAndRemovesTheirCommonIndent) {
    const std::string source =
        "int run() {\n"
        "    // listing: loop\n"
        "    for (;;) {\n"
        "        wait();\n"
        "\n"
        "        dispatch();\n"
        "    }\n"
        "    // end listing: loop\n"
        "}\n";
    std::string why;
    auto got = extract_listing(source, "loop", why);
    ASSERT_TRUE(got) << why;
    std::vector<std::string> want = {"for (;;) {", "    wait();", "", "    dispatch();", "}"};
    EXPECT_EQ(*got, want);
}

TEST(ListingExtraction, BlankLinesWithSpacesDoNotSetTheIndent) {
    std::string why;
    auto got =
        extract_listing("// listing: a\n    x();\n  \n    y();\n// end listing: a\n", "a", why);
    ASSERT_TRUE(got) << why;
    EXPECT_EQ(*got, (std::vector<std::string>{"x();", "", "y();"}));
}

TEST(ListingExtraction, NamesAreNotPrefixes) {
    std::string why;
    auto got = extract_listing(
        "// listing: loop2\nno\n// end listing: loop2\n// listing: loop\nyes\n// end listing: "
        "loop\n",
        "loop", why);
    ASSERT_TRUE(got) << why;
    EXPECT_EQ(*got, std::vector<std::string>{"yes"});
}

TEST(ListingExtraction, MissingRepeatedOrReversedMarkersAreReported) {
    std::string why;
    EXPECT_FALSE(extract_listing("// listing: loop\nx\n", "loop", why));
    EXPECT_NE(why.find("// end listing: loop"), std::string::npos) << why;
    EXPECT_FALSE(extract_listing("x\n// end listing: loop\n", "loop", why));
    EXPECT_NE(why.find("'// listing: loop'"), std::string::npos) << why;
    EXPECT_FALSE(extract_listing("// end listing: l\n// listing: l\n", "l", why));
    EXPECT_NE(why.find("before"), std::string::npos) << why;
    EXPECT_FALSE(extract_listing("// listing: l\n// listing: l\n// end listing: l\n", "l", why));
    EXPECT_NE(why.find("twice"), std::string::npos) << why;
}

TEST(ListingExtraction, FindsEachQuotationAndItsBlock) {
    const std::string readme =
        "# 05\n"
        "<!-- listing 05_epoll/server.cpp loop -->\n"
        "```cpp\n"
        "for (;;) {\n"
        "}\n"
        "```\n"
        "text\n"
        "<!-- listing 05_epoll/server_et.cpp drain -->\n"
        "no fence\n";
    std::vector<Quote> quotes = find_quotes(readme);
    ASSERT_EQ(quotes.size(), 2u);
    EXPECT_EQ(quotes[0].line, 2);
    EXPECT_EQ(quotes[0].file, "05_epoll/server.cpp");
    EXPECT_EQ(quotes[0].name, "loop");
    EXPECT_EQ(quotes[0].block, (std::vector<std::string>{"for (;;) {", "}"}));
    EXPECT_TRUE(quotes[0].error.empty());
    EXPECT_EQ(quotes[1].name, "drain");
    EXPECT_FALSE(quotes[1].error.empty());
    EXPECT_TRUE(find_quotes("```cpp\nx\n```\n").empty());
}

TEST(ListingExtraction, AnUnclosedFenceIsReported) {
    std::vector<Quote> quotes = find_quotes("<!-- listing a/b.cpp loop -->\n```cpp\nx\n");
    ASSERT_EQ(quotes.size(), 1u);
    EXPECT_NE(quotes[0].error.find("never closed"), std::string::npos);
}

TEST(ListingExtraction, TheFirstDifferingLineIsNamed) {
    EXPECT_EQ(first_difference({"a", "b"}, {"a", "b"}), "");
    std::string d = first_difference({"a", "b", "c"}, {"a", "B", "c"});
    EXPECT_NE(d.find("line 2"), std::string::npos) << d;
    EXPECT_NE(d.find("'b'"), std::string::npos) << d;
    EXPECT_NE(d.find("'B'"), std::string::npos) << d;
    d = first_difference({"a"}, {"a", "b"});
    EXPECT_NE(d.find("line 2"), std::string::npos) << d;
    EXPECT_NE(d.find("'b'"), std::string::npos) << d;
    EXPECT_NE(first_difference({"x "}, {"x"}), "") << "trailing spaces count";
}

TEST(ListingExtraction, AReadmeWithoutAQuotationFails) {
    fs::path root = fs::temp_directory_path() / ("iolab_listings_" + std::to_string(::getpid()));
    fs::create_directories(root / "05_x");
    std::ofstream(root / "05_x" / "README.md") << "# no code here\n";
    std::ofstream(root / "05_x" / "server.cpp")
        << "// listing: loop\n  run();\n// end listing: loop\n";
    EXPECT_NE(check_model(root, "05_x").find("quotes no listing"), std::string::npos);
    std::ofstream(root / "05_x" / "README.md")
        << "<!-- listing 05_x/server.cpp loop -->\n```cpp\nrun();\n```\n";
    EXPECT_EQ(check_model(root, "05_x"), "");
    std::ofstream(root / "05_x" / "README.md")
        << "<!-- listing 05_x/server.cpp loop -->\n```cpp\nrun(1);\n```\n";
    std::string stale = check_model(root, "05_x");
    EXPECT_NE(stale.find("05_x/README.md:1: listing 05_x/server.cpp loop"), std::string::npos)
        << stale;
    EXPECT_NE(stale.find("'run(1);'"), std::string::npos) << stale;
    fs::remove_all(root);
}

// ---- every model README against the tree ----

class ModelReadme : public ::testing::TestWithParam<std::string> {};

TEST_P(ModelReadme, QuotesItsListingsAsTheSourceHasThem) {
    std::string problems = check_model(IOLAB_SOURCE_DIR, GetParam());
    EXPECT_TRUE(problems.empty()) << problems;
}

TEST(ModelReadmes, EveryModelDirectoryIsChecked) {
    EXPECT_GE(model_dirs().size(), 9u) << "model directories not found under " IOLAB_SOURCE_DIR;
}

INSTANTIATE_TEST_SUITE_P(Models, ModelReadme, ::testing::ValuesIn(model_dirs()),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                             return info.param;
                         });

}  // namespace listings_test
