"""HTML templates of the weblog (plain :class:`string.Template` strings, no engine).

Every ``$name`` placeholder receives text that is already HTML (escaped by the caller);
nothing here loads anything from outside the weblog directory.
"""

from __future__ import annotations

from string import Template

#: Shared stylesheet, written as ``style.css`` next to the pages.
STYLE_CSS = """\
body { font-family: "DejaVu Sans", Arial, Helvetica, sans-serif; margin: 0; color: #222;
       background: #fafafa; font-size: 14px; }
header { background: #1f3b57; color: #fff; padding: 10px 20px; }
header h1 { margin: 0; font-size: 20px; }
header .sub { font-size: 12px; opacity: 0.85; }
nav { background: #e8edf2; padding: 6px 20px; font-size: 13px; }
nav a { margin-right: 14px; color: #1f3b57; }
main { padding: 12px 20px 30px 20px; }
h2 { font-size: 17px; border-bottom: 1px solid #ccd; padding-bottom: 3px; margin-top: 22px; }
table { border-collapse: collapse; margin: 6px 0 12px 0; background: #fff; }
th, td { border: 1px solid #ccd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #eef1f5; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.score { text-align: center; font-weight: bold; min-width: 4em; }
.qa-green { background: #6fbf73; color: #000; }
.qa-blue { background: #6fa8dc; color: #000; }
.qa-yellow { background: #ffd966; color: #000; }
.qa-red { background: #e06666; color: #000; }
.qa-none { background: #d9d9d9; color: #000; }
.status-failed { color: #b00020; font-weight: bold; }
.status-skipped, .status-not_implemented { color: #666; font-style: italic; }
.msg-error, .msg-critical { color: #b00020; }
.msg-warning { color: #8a5a00; }
.msg-debug { color: #666; }
ul.messages { margin: 4px 0 12px 0; padding-left: 20px; }
ul.messages li { margin: 2px 0; white-space: pre-wrap; font-family: "DejaVu Sans Mono", monospace;
                 font-size: 12px; }
.legend span { display: inline-block; padding: 2px 8px; margin-right: 6px; border: 1px solid #aab; }
.plots { display: flex; flex-wrap: wrap; gap: 14px; }
figure { margin: 0; background: #fff; border: 1px solid #ccd; padding: 6px; max-width: 100%; }
figure img { max-width: 100%; height: auto; display: block; }
figcaption { font-size: 12px; color: #333; margin-top: 4px; max-width: 60em; }
.note { color: #666; font-style: italic; }
footer { color: #777; font-size: 11px; padding: 10px 20px; border-top: 1px solid #ddd; }
"""

PAGE = Template("""\
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$page_title</title>
<link rel="stylesheet" href="$css_href">
</head>
<body>
<header><h1>$heading</h1><div class="sub">$subheading</div></header>
<nav>$nav</nav>
<main>
$body
</main>
<footer>$footer</footer>
</body>
</html>
""")

LEGEND = (
    '<p class="legend">QA score colours: '
    '<span class="qa-green">&gt; 0.90</span>'
    '<span class="qa-blue">0.66 &lt; s &le; 0.90</span>'
    '<span class="qa-yellow">0.33 &lt; s &le; 0.66</span>'
    '<span class="qa-red">&le; 0.33</span>'
    '<span class="qa-none">no score</span></p>'
)

FIGURE = Template("""\
<figure><a href="$src"><img src="$src" alt="$alt" loading="lazy"></a>
<figcaption>$caption</figcaption></figure>""")
