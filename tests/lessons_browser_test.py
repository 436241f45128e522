#!/usr/bin/env python3
"""The page of `iolab lessons --quick`, opened in a real browser (headless Chromium).

Runs iolab lessons --quick into a fresh directory, then checks, with Chromium:
  - the page loads with nothing on the browser's console (the page writes nothing there, so any
    message is an error: a script exception, a failed parse);
  - every claim is a section with a verdict and at least one figure holding an SVG, in the DOM
    the browser built (--dump-dom), and every file the page links to exists beside it;
  - screenshots at a desktop and at a phone width are not blank: many colours, no one colour
    covering nearly all of it;
  - the Chinese view: the page offers the switch (English / 中文), opens in English for a
    browser in English or French and in Chinese for one in Chinese (navigator.language, which
    --accept-lang sets), and ?lang=en overrides the browser's language; opened as
    index.html?lang=zh-CN inside a probe page, every claim's title, claim text, verdict and table
    show Chinese text (innerText, which leaves out what CSS hides) and no English title, <html
    lang> and the document's title follow, and the switch's buttons turn it to English and back;
    no console message; Chinese screenshots at both widths are not blank.
Before all that it checks itself: a page with a deliberate console error must be caught, so that
a Chromium that stopped reporting its console cannot make this test pass.

Usage: lessons_browser_test.py IOLAB CHROMIUM WORKDIR
The screenshots stay in WORKDIR (desktop.png, phone.png, desktop-zh.png, phone-zh.png) to be
looked at.
"""

import html
import html.parser
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import time
import zlib

EXPECTED_CLAIMS = 14
VERDICTS = {"holds", "does_not_hold", "cannot_show", "not_measured"}
CHINESE = "zh-CN"
EXPECTED_BUTTONS = [["en", "English"], [CHINESE, "中文"]]
CJK = re.compile("[\u4e00-\u9fff]")


def fail(why):
    print("FAIL: " + why, flush=True)
    sys.exit(1)


def chromium(browser, workdir, url, *args, timeout=90):
    """Runs headless Chromium on `url` with its console on stderr; returns (stdout, console lines)."""
    profile = os.path.join(workdir, "profile")
    command = [
        browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--hide-scrollbars", "--user-data-dir=" + profile, "--enable-logging=stderr", "--v=0",
        *args, url,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    return done.stdout, console, done


class PageParser(html.parser.HTMLParser):
    """Collects each claim section's verdict and figures, every local link, the languages."""

    def __init__(self):
        super().__init__()
        self.sections = []  # {"claim": n, "verdict": v, "figures": k, "svgs": k}
        self.links = []
        self.in_figure = False
        self.html_lang = None
        self.shown = None
        self.buttons = []  # [code, label]
        self.in_button = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "html":
            self.html_lang = a.get("lang")
        elif tag == "body":
            self.shown = a.get("data-show")
        elif tag == "button" and "data-set-lang" in a:
            self.buttons.append([a["data-set-lang"], ""])
            self.in_button = True
        elif tag == "section" and "data-claim" in a:
            self.sections.append(
                {"claim": a["data-claim"], "verdict": a.get("data-verdict"), "figures": 0,
                 "svgs": 0})
        elif tag == "figure" and self.sections:
            self.sections[-1]["figures"] += 1
            self.in_figure = True
        elif tag == "svg" and self.in_figure and self.sections:
            self.sections[-1]["svgs"] += 1
        elif tag == "a" and a.get("href") and not a["href"].startswith("#"):
            self.links.append(a["href"])

    def handle_endtag(self, tag):
        if tag == "figure":
            self.in_figure = False
        elif tag == "button":
            self.in_button = False

    def handle_data(self, data):
        if self.in_button:
            self.buttons[-1][1] += data.strip()


# Opens the page at ?lang=zh-CN in an iframe and, once it has loaded, writes into its own <pre>
# what a reader sees of every claim (innerText leaves out what CSS hides), first as loaded, then
# after pressing the English button, then the Chinese one. Chromium reads the frame's document
# only with --allow-file-access-from-files.
PROBE = """<!DOCTYPE html><meta charset="utf-8"><pre id="result">not run</pre>
<iframe id="page" style="width:1280px;height:900px" src="%s"></iframe>
<script>
document.getElementById('page').addEventListener('load', function () {
  var r = {};
  try {
    var d = this.contentDocument;
    var view = function () {
      var v = {lang: d.documentElement.getAttribute('lang'),
               shown: d.body.getAttribute('data-show'), title: d.title,
               heading: d.querySelector('h1').innerText, claims: []};
      var sections = d.querySelectorAll('section[data-claim]');
      for (var i = 0; i < sections.length; i++) {
        var s = sections[i];
        var seen = function (selector) {
          var e = s.querySelector(selector);
          return e ? e.innerText : '';
        };
        // The claim's and the verdict's own sentences, without their label and badge.
        v.claims.push({claim: s.getAttribute('data-claim'), title: seen('h2'),
                       text: seen('.claim-text').replace(seen('.claim-text strong'), ''),
                       verdict: seen('.verdict').replace(seen('.verdict .badge'), ''),
                       table: seen('table')});
      }
      return v;
    };
    r.loaded = view();
    d.querySelector('button[data-set-lang="en"]').click();
    r.english = view();
    d.querySelector('button[data-set-lang="%s"]').click();
    r.chinese = view();
  } catch (e) {
    r.error = String(e);
  }
  document.getElementById('result').textContent = JSON.stringify(r);
});
</script>
"""


def check_view(view, label, chinese, english=None):
    """Every claim of `view` in the expected language: Chinese text, or none of it; none of the
    English view's titles, if `english` is given."""
    if view["lang"] != (CHINESE if chinese else "en") or view["shown"] != view["lang"]:
        fail("%s: <html lang=%r>, showing %r" % (label, view["lang"], view["shown"]))
    if len(view["claims"]) != EXPECTED_CLAIMS:
        fail("%s: %d claims" % (label, len(view["claims"])))
    for text in (view["title"], view["heading"]):
        if bool(CJK.search(text)) != chinese:
            fail("%s: the page's title reads %r" % (label, text))
    for c in view["claims"]:
        for part in ("title", "text", "verdict", "table"):
            seen = c[part].strip()
            if not seen:
                fail("%s: claim %s shows no %s" % (label, c["claim"], part))
            if bool(CJK.search(seen)) != chinese:
                fail("%s: claim %s's %s reads %r" % (label, c["claim"], part, seen[:160]))
    for c, e in zip(view["claims"], english["claims"] if english else []):
        if e["title"].split(". ", 1)[-1] in c["title"]:
            fail("%s: claim %s shows its English title too: %r" % (label, c["claim"], c["title"]))


def png_pixels(path):
    """Decodes an 8-bit RGB or RGBA PNG (what Chromium writes): (width, height, rows of bytes)."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        fail(path + " is not a PNG")
    pos, idat, width, height, channels = 8, b"", 0, 0, 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", body[:10])
            if depth != 8 or colour not in (2, 6):
                fail("%s: PNG depth %d colour type %d, expected 8-bit RGB(A)" % (path, depth, colour))
            channels = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
    raw = zlib.decompress(idat)
    stride = width * channels
    rows, previous = [], bytearray(stride)
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for x in range(stride):
            left = line[x - channels] if x >= channels else 0
            up = previous[x]
            corner = previous[x - channels] if x >= channels else 0
            if kind == 1:
                line[x] = (line[x] + left) & 255
            elif kind == 2:
                line[x] = (line[x] + up) & 255
            elif kind == 3:
                line[x] = (line[x] + (left + up) // 2) & 255
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                line[x] = (line[x] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)) & 255
        rows.append(bytes(line))
        previous = line
    return width, height, channels, rows


def check_screenshot(path, label):
    width, height, channels, rows = png_pixels(path)
    counts = {}
    # Every 3rd pixel of every 3rd row is plenty to tell a page from a blank one.
    for row in rows[::3]:
        for x in range(0, width * channels, 3 * channels):
            key = row[x:x + 3]
            counts[key] = counts.get(key, 0) + 1
    total = sum(counts.values())
    top = max(counts.values())
    print("%s: %dx%d, %d colours, the commonest covers %.1f%%" %
          (label, width, height, len(counts), 100.0 * top / total), flush=True)
    if len(counts) < 16:
        fail("%s screenshot has only %d colours: blank" % (label, len(counts)))
    if top > 0.985 * total:
        fail("%s screenshot is %.1f%% one colour: blank" % (label, 100.0 * top / total))


def screenshots(browser, workdir, url, suffix):
    """Desktop and phone screenshots of url (desktop<suffix>.png, phone<suffix>.png in workdir):
    nothing on the console, and neither picture blank."""
    for label, size in (("desktop" + suffix, "1280,2400"), ("phone" + suffix, "390,2400")):
        shot = os.path.join(workdir, label + ".png")
        _, console, _ = chromium(browser, workdir, url, "--window-size=" + size,
                                 "--accept-lang=en-US", "--screenshot=" + shot)
        if console:
            fail("console messages at %s width:\n%s" % (label, "\n".join(console)))
        if not os.path.exists(shot):
            fail("no %s screenshot" % label)
        check_screenshot(shot, label)


def main():
    if len(sys.argv) != 4:
        fail(__doc__)
    iolab, browser, workdir = sys.argv[1:]
    shutil.rmtree(workdir, ignore_errors=True)
    os.makedirs(workdir)

    # The detector first: a console error must show up.
    bad = os.path.join(workdir, "console-error.html")
    with open(bad, "w") as f:
        f.write("<!DOCTYPE html><p>x</p><script>console.error('deliberate');"
                "notDefined();</script>")
    _, console, _ = chromium(browser, workdir, "file://" + bad, "--dump-dom")
    if len(console) < 2:
        fail("Chromium did not report a deliberate console error and exception: %r" % console)
    print("self-check: Chromium reports console errors (%d lines)" % len(console), flush=True)

    out = os.path.join(workdir, "lessons")
    start = time.monotonic()
    run = subprocess.run([iolab, "lessons", "--quick", "--out", out], timeout=240)
    print("iolab lessons --quick: exit %d in %.1f s" % (run.returncode, time.monotonic() - start),
          flush=True)
    if run.returncode != 0:
        fail("iolab lessons --quick exited %d" % run.returncode)
    page = os.path.join(out, "index.html")
    with open(page, encoding="utf-8") as f:
        source = f.read()
    if re.search(r"""(src|href)=["']?(https?:)?//""", source):
        fail("the page refers to the network")

    url = "file://" + page
    # --accept-lang sets navigator.language, which chooses the page's language on load.
    dom, console, done = chromium(browser, workdir, url, "--dump-dom", "--accept-lang=en-US")
    if console:
        fail("console messages:\n" + "\n".join(console))
    parser = PageParser()
    parser.feed(dom)
    claims = [s["claim"] for s in parser.sections]
    print("DOM: %d claims (%s)" % (len(claims), ",".join(claims)), flush=True)
    if len(claims) != EXPECTED_CLAIMS:
        fail("%d claim sections in the DOM, expected %d" % (len(claims), EXPECTED_CLAIMS))
    for s in parser.sections:
        if s["verdict"] not in VERDICTS:
            fail("claim %s has verdict %r" % (s["claim"], s["verdict"]))
        if s["figures"] < 1 or s["svgs"] < s["figures"]:
            fail("claim %s: %d figures, %d with an SVG" % (s["claim"], s["figures"], s["svgs"]))
    for href in parser.links:
        if not os.path.exists(os.path.join(out, href)):
            fail("the page links to %s, which is not beside it" % href)
    print("every claim has a verdict and its figures; %d links, all present" % len(parser.links),
          flush=True)

    screenshots(browser, workdir, url, "")

    # The Chinese view. The page as loaded above, by a browser whose language is English.
    if parser.buttons != EXPECTED_BUTTONS:
        fail("the language switch is %r, expected %r" % (parser.buttons, EXPECTED_BUTTONS))
    if parser.html_lang != "en" or parser.shown != "en":
        fail("an English browser got <html lang=%r>, showing %r" % (parser.html_lang, parser.shown))
    for accept, query, expected in (("zh-CN", "", CHINESE), ("zh-TW,zh", "", CHINESE),
                                    ("zh-CN", "?lang=en", "en"), ("fr-FR", "", "en")):
        dom, console, _ = chromium(browser, workdir, url + query, "--dump-dom",
                                   "--accept-lang=" + accept)
        if console:
            fail("console messages for a browser in %s:\n%s" % (accept, "\n".join(console)))
        seen = PageParser()
        seen.feed(dom)
        if seen.html_lang != expected or seen.shown != expected:
            fail("a browser in %s opening index.html%s got <html lang=%r>, showing %r, expected %s"
                 % (accept, query, seen.html_lang, seen.shown, expected))
    print("the switch offers %s; a browser in English or French gets English, one in Chinese "
          "Chinese, and ?lang=en overrides it" %
          " / ".join(label for _, label in parser.buttons), flush=True)

    chinese_url = url + "?lang=" + CHINESE
    probe = os.path.join(workdir, "chinese-probe.html")
    with open(probe, "w", encoding="utf-8") as f:
        f.write(PROBE % (chinese_url, CHINESE))
    dom, console, _ = chromium(browser, workdir, "file://" + probe, "--dump-dom",
                               "--accept-lang=en-US", "--allow-file-access-from-files",
                               "--window-size=1400,1000")
    if console:
        fail("console messages in the Chinese view:\n" + "\n".join(console))
    found = re.search(r'<pre id="result">(.*?)</pre>', dom, re.S)
    if not found:
        fail("the probe page wrote no result")
    try:
        result = json.loads(html.unescape(found.group(1)))
    except ValueError:
        fail("the probe page wrote %r" % found.group(1)[:300])
    if "error" in result:
        fail("the probe could not read the page: " + result["error"])
    check_view(result["english"], "after pressing English", False)
    check_view(result["loaded"], "?lang=" + CHINESE, True, result["english"])
    check_view(result["chinese"], "after pressing 中文", True, result["english"])
    print("?lang=%s: all %d claims show their title, claim, verdict and numbers in Chinese; "
          "the buttons switch to English and back; e.g. claim 1: %s" %
          (CHINESE, EXPECTED_CLAIMS, result["loaded"]["claims"][0]["title"]), flush=True)

    screenshots(browser, workdir, chinese_url, "-zh")
    print("PASS", flush=True)


if __name__ == "__main__":
    main()
