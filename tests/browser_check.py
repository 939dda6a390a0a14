"""Open an HTML report in headless Chromium and report what a reader would see.

`check_page(html, screenshot)` loads a copy of the page with a small probe injected first in
<head> (it records script errors, console.error calls and failed resource loads, then, after
load, decodes every image and measures the tables against the viewport), reads the probe's
result back from the DOM Chromium dumps, and takes a full-page screenshot at the page's height.
Nothing beyond Debian's `chromium` is needed. Used by tests/test_report_browser.py; runnable by
hand: `python tests/browser_check.py reports/summary.html out.png`.
"""

from __future__ import annotations

import html as html_lib
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

VIEWPORT_WIDTH = 1400
_MARK = "attrrob-browser-check"

_PROBE = """<script>
(function () {
  var errors = [];
  window.addEventListener('error', function (e) {
    var t = e.target;
    if (t && t !== window && (t.src || t.href)) { errors.push('failed to load ' + (t.src || t.href).slice(0, 120)); }
    else { errors.push('script error: ' + e.message); }
  }, true);
  window.addEventListener('unhandledrejection', function (e) { errors.push('unhandled rejection: ' + e.reason); });
  var original = console.error;
  console.error = function () { errors.push('console.error: ' + Array.prototype.join.call(arguments, ' ')); original.apply(console, arguments); };
  window.addEventListener('load', function () {
    // Synchronous at load, so that --dump-dom sees the result: data-URI images are decoded
    // by then, and a broken one has complete = true but naturalWidth = 0.
    var images = Array.prototype.slice.call(document.images);
    (function () {
      var view = document.documentElement.clientWidth;
      var result = {
        errors: errors,
        viewport: view,
        height: Math.max(document.documentElement.scrollHeight, document.body.scrollHeight),
        page_width: document.documentElement.scrollWidth,
        images: images.map(function (img, i) {
          var box = img.getBoundingClientRect();
          return {decoded: img.complete && img.naturalWidth > 0, natural_width: img.naturalWidth, natural_height: img.naturalHeight,
                  shown_width: box.width, right: box.right, alt: img.getAttribute('alt')};
        }),
        tables: Array.prototype.slice.call(document.querySelectorAll('table')).filter(function (t) {
          return t.offsetParent !== null;  // rendered (not inside a closed <details>)
        }).map(function (t) {
          var box = t.getBoundingClientRect();
          return {cls: t.className, left: box.left, right: box.right, width: box.width};
        }),
        headings: Array.prototype.slice.call(document.querySelectorAll('h1, h2, h3')).map(function (h) {
          return h.textContent.replace(/\\u00b6/g, '').trim();
        }),
        text: document.body.innerText
      };
      var out = document.createElement('pre');
      out.id = 'MARK';
      out.style.display = 'none';
      out.textContent = JSON.stringify(result);
      document.body.appendChild(out);
    })();
  });
})();
</script>""".replace("MARK", _MARK)


def chromium() -> str | None:
    """The Chromium (or Chrome) executable on PATH, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _run(browser: str, args: list[str], timeout: float) -> subprocess.CompletedProcess:
    profile = tempfile.mkdtemp(prefix="attrrob-chromium-")
    try:
        # --no-sandbox: containers and CI run as root, where Chromium's sandbox refuses to start.
        command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                   "--no-first-run", "--disable-extensions", "--mute-audio", f"--user-data-dir={profile}",
                   *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def check_page(page: Path, screenshot: Path | None = None, width: int = VIEWPORT_WIDTH,
               timeout: float = 120.0) -> dict:
    """Load `page` at `width` px and return the probe's findings (errors, images, tables, headings,
    text, height); with `screenshot`, also write a full-page PNG there."""
    browser = chromium()
    if browser is None:
        raise RuntimeError("no chromium on PATH (Debian: apt-get install chromium)")
    page = Path(page).resolve()
    source = page.read_text(encoding="utf-8")
    probed = re.sub(r"<head[^>]*>", lambda m: m.group(0) + _PROBE, source, count=1)
    if probed == source:
        raise RuntimeError(f"{page}: no <head> to put the probe in")
    with tempfile.TemporaryDirectory(prefix="attrrob-page-") as folder:
        copy = Path(folder) / page.name  # beside nothing: a page that needs other local files shows it
        copy.write_text(probed, encoding="utf-8")
        for _ in range(3):  # a loaded machine can dump the DOM before the load event: try again
            done = _run(browser, [f"--window-size={width},1000", "--virtual-time-budget=20000", "--dump-dom",
                                  copy.as_uri()], timeout)
            match = re.search(rf'<pre id="{_MARK}"[^>]*>(.*?)</pre>', done.stdout, re.DOTALL)
            if match:
                break
        if not match:
            raise RuntimeError(f"{page}: the page never finished loading in Chromium "
                               f"(exit {done.returncode}): {done.stderr[-2000:]}")
        result = json.loads(html_lib.unescape(match.group(1)))
        if screenshot is not None:
            screenshot = Path(screenshot).resolve()
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            # The page's own height: a full-page screenshot without the DevTools protocol.
            height = min(int(result["height"]) + 16, 30000)
            shot = _run(browser, [f"--window-size={width},{height}", "--virtual-time-budget=10000",
                                  f"--screenshot={screenshot}", page.as_uri()], timeout)
            if not screenshot.is_file():
                raise RuntimeError(f"{page}: no screenshot written (exit {shot.returncode}): {shot.stderr[-2000:]}")
    return result


def problems(result: dict, headings: list[str] = (), texts: list[str] = ()) -> list[str]:
    """What a reader would trip over: errors, images that do not decode or lack alt text, tables
    wider than the viewport, missing headings or texts. Empty when the page is fine."""
    found = [f"error: {e}" for e in result["errors"]]
    for i, image in enumerate(result["images"]):
        if not image["decoded"] or image["natural_width"] <= 0 or image["natural_height"] <= 0:
            found.append(f"image {i} does not decode ({image})")
        if not (image["alt"] or "").strip():
            found.append(f"image {i} has no alt text")
        if image["right"] > result["viewport"] + 0.5:
            found.append(f"image {i} reaches {image['right']:.0f} px, past the {result['viewport']} px viewport")
    for table in result["tables"]:
        if table["right"] > result["viewport"] + 0.5:
            found.append(f"table '{table['cls']}' is {table['width']:.0f} px wide and ends at {table['right']:.0f} px, "
                         f"past the {result['viewport']} px viewport")
    if result["page_width"] > result["viewport"]:
        found.append(f"the page scrolls sideways ({result['page_width']} px > {result['viewport']} px)")
    for heading in headings:
        if not any(heading in h for h in result["headings"]):
            found.append(f"no heading containing {heading!r} (headings: {result['headings']})")
    for text in texts:
        if text not in result["text"]:
            found.append(f"the page does not show {text!r}")
    return found


if __name__ == "__main__":
    outcome = check_page(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 else None)
    summary = {k: v for k, v in outcome.items() if k != "text"}
    print(json.dumps(summary, indent=1)[:6000])
    print("\n".join(problems(outcome)) or "no problems")
    sys.exit(1 if problems(outcome) else 0)
