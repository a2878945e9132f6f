"""Inline CSS and JavaScript of the HTML report, and the page frame.

Everything a page needs is inside the page: no server, no network, no CDN. The script
is plain JavaScript: the gallery filter (by class, predicted / true / wrong) and
click-to-sort tables.
"""

from __future__ import annotations

from html import escape

CSS = """
:root { --fg: #1d2327; --muted: #5f6b73; --line: #d9dee2; --bg: #f6f7f8; --card: #fff; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: var(--fg); background: var(--bg); }
header { background: #20262b; color: #eef1f3; padding: 12px 20px; display: flex; gap: 18px;
         align-items: baseline; flex-wrap: wrap; }
header h1 { font-size: 18px; margin: 0; font-weight: 600; }
header a { color: #9fd0ff; }
header .meta { color: #b8c2c9; font-size: 13px; }
main { padding: 16px 20px; }
a { color: #0b62a8; }
.controls { display: flex; gap: 12px; align-items: center; flex-wrap: wrap; margin-bottom: 14px; }
.controls select { font: inherit; padding: 3px 6px; }
.controls .count { color: var(--muted); }
#gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(204px, 1fr)); gap: 12px; }
.item { background: var(--card); border: 1px solid var(--line); border-radius: 6px; margin: 0;
        padding: 6px; }
.item[hidden] { display: none; }
.item img, .item .noimg { width: 100%; height: auto; aspect-ratio: 1 / 1; object-fit: contain;
        background: #000; border-radius: 3px; display: block; }
.item .noimg { color: #aaa; display: flex; align-items: center; justify-content: center; font-size: 12px; }
.item figcaption { font-size: 12px; margin-top: 4px; }
.id { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 11px; color: var(--muted);
      overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.chips { display: flex; flex-wrap: wrap; gap: 3px; margin-top: 3px; align-items: center; }
.chips .lbl { color: var(--muted); font-size: 11px; width: 30px; }
.chip { border-left: 10px solid var(--c); background: #eef1f3; border-radius: 3px; padding: 0 5px;
        font-size: 11px; white-space: nowrap; }
.chip.fp { background: #fde3e1; text-decoration: line-through; text-decoration-color: #c0392b; }
.chip.fn { background: #fff2cc; font-style: italic; }
.chip.ok { font-weight: 600; }
.legend { color: var(--muted); font-size: 12px; }
table { border-collapse: collapse; background: var(--card); font-size: 13px; margin: 8px 0 18px; }
th, td { border: 1px solid var(--line); padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #eceff1; position: sticky; top: 0; }
th.sortable { cursor: pointer; user-select: none; }
th.sortable::after { content: " \\2195"; color: #9aa5ad; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.overlay img { max-width: 100%; height: auto; border: 1px solid var(--line); background: #fff; }
.nav { display: flex; gap: 14px; }
.warn { background: #fff2cc; border: 1px solid #e6c65c; padding: 8px 12px; border-radius: 4px; }
section { margin-bottom: 22px; }
h2 { font-size: 16px; margin: 18px 0 6px; }
"""

JS = """
(function () {
  const gallery = document.getElementById('gallery');
  if (gallery) {
    const items = Array.from(gallery.querySelectorAll('.item'));
    const cls = document.getElementById('cls'), mode = document.getElementById('mode');
    const count = document.getElementById('count');
    const split = s => (s || '').split(' ').filter(Boolean);
    function apply() {
      const k = cls.value, m = mode.value;
      let shown = 0;
      for (const it of items) {
        const p = split(it.dataset.pred), t = split(it.dataset.truth);
        const inP = k === '' || p.includes(k), inT = k === '' || t.includes(k);
        let ok;
        if (m === 'true') ok = inT;
        else if (m === 'wrong') ok = k === '' ? p.join(' ') !== t.join(' ') : inP !== inT;
        else ok = inP;
        it.hidden = !ok;
        if (ok) shown++;
      }
      gallery.dataset.shown = String(shown);
      count.textContent = 'showing ' + shown + ' of ' + items.length + ' images';
    }
    cls.addEventListener('change', apply);
    mode.addEventListener('change', apply);
    apply();
  }
  for (const table of document.querySelectorAll('table.sortable')) {
    const heads = Array.from(table.querySelectorAll('th'));
    heads.forEach((th, col) => {
      th.classList.add('sortable');
      th.addEventListener('click', () => {
        const body = table.tBodies[0], rows = Array.from(body.rows);
        const dir = th.dataset.dir === 'asc' ? -1 : 1;
        heads.forEach(h => delete h.dataset.dir);
        th.dataset.dir = dir === 1 ? 'asc' : 'desc';
        const key = r => { const c = r.cells[col]; const v = c.dataset.v ?? c.textContent;
                           const n = parseFloat(v); return isNaN(n) ? v.toLowerCase() : n; };
        rows.sort((a, b) => { const x = key(a), y = key(b); return (x > y ? 1 : x < y ? -1 : 0) * dir; });
        rows.forEach(r => body.appendChild(r));
      });
    });
  }
})();
"""


def page(title: str, header_html: str, body_html: str) -> str:
    """A complete HTML page with the inline style and script.

    Args:
        title: page title (escaped here).
        header_html: markup of the dark header bar (already escaped).
        body_html: markup of the main content (already escaped).

    Returns:
        The HTML document as text.
    """
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        f"<header>{header_html}</header>\n<main>\n{body_html}\n</main>\n"
        f"<script>{JS}</script>\n</body>\n</html>\n"
    )
