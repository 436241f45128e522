#!/usr/bin/env python3
"""Rewrites every listing excerpt in the READMEs from its source (docs/listings.md).

A README line `<!-- listing DIR/FILE NAME -->` is followed by a ```cpp block; the block becomes
the lines of DIR/FILE strictly between `// listing: NAME` and `// end listing: NAME`, with their
common indentation removed. listings_test (CTest) checks the same thing, so run this after
changing a marked loop:  python3 scripts/update-listings.py
"""
import pathlib
import re
import sys

root = pathlib.Path(__file__).resolve().parent.parent
marker = re.compile(r"^<!-- listing (\S+) (\S+) -->$")


def excerpt(path, name):
    lines = (root / path).read_text().split("\n")
    begin = [i for i, l in enumerate(lines) if l.strip() == f"// listing: {name}"]
    end = [i for i, l in enumerate(lines) if l.strip() == f"// end listing: {name}"]
    if len(begin) != 1 or len(end) != 1 or end[0] < begin[0]:
        sys.exit(f"{path}: no single '// listing: {name}' ... '// end listing: {name}' pair")
    body = lines[begin[0] + 1:end[0]]
    indent = min((len(l) - len(l.lstrip(" ")) for l in body if l.strip()), default=0)
    return [l[indent:] if l.strip() else "" for l in body]


changed = 0
for readme in sorted(root.glob("*/README.md")):
    lines = readme.read_text().split("\n")
    out, i = [], 0
    while i < len(lines):
        out.append(lines[i])
        m = marker.match(lines[i])
        if m and i + 1 < len(lines) and lines[i + 1] == "```cpp":
            j = i + 2
            while j < len(lines) and lines[j] != "```":
                j += 1
            out += ["```cpp"] + excerpt(m.group(1), m.group(2)) + ["```"]
            i = j + 1
            continue
        i += 1
    if out != lines:
        readme.write_text("\n".join(out))
        changed += 1
        print(f"updated {readme.relative_to(root)}")
print(f"{changed} README(s) changed")
