#!/usr/bin/env python3
"""Draw each bench table as an SVG chart: brood against its rivals.

Reads the markdown tables `bench/run` writes (bench/results.md, and
bench/results-pool.md for a pool table not in results.md) and writes one SVG
per table into bench/charts/: start.svg, pipes.svg, sync.svg, queues.svg,
pool.svg (only those whose table is present). Each chart has one panel per
measured quantity (a column, or a test's rows), horizontal bars on a log
scale with labelled ticks, brood's bars in one colour and the rivals' in
another, and a caption naming the machine and the date of the run.

Standard library only; the SVG is written by hand.

Usage: python3 bench/charts.py [--out DIR] [RESULTS.md ...]
       (default: bench/results.md bench/results-pool.md -> bench/charts)
       python3 bench/charts.py --check
       (draws the default results into a temporary folder, checks that every
       SVG parses as XML with one bar per table row, and that the committed
       bench/charts/*.svg are the ones these results give; scripts/test.sh)
"""

import argparse
import math
import os
import re
import sys
import tempfile
import xml.etree.ElementTree as ET
from xml.sax.saxutils import escape

BENCH = os.path.dirname(os.path.abspath(__file__))

# Section title (lower case) -> (file stem, chart title).
SECTIONS = {
    "start + join": ("start", "Start + join of a child that returns at once"),
    "pipes": ("pipes", "Pipes: 8-byte round trip and 1 MiB throughput"),
    "shared memory and locks": ("sync", "Shared memory and locks"),
    "queues": ("queues", "Queues"),
    "pool": ("pool", "Pool"),
}

BROOD = "#d95f02"
RIVAL = "#7f8fa6"
INK = "#222222"
GRID = "#dddddd"

TIME_UNITS = {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0}
NUM = re.compile(r"^\s*([0-9][0-9,]*(?:\.[0-9]+)?)\s*([^\s(]*)")


def parse_value(cell, unit_hint=""):
    """'155.5 µs' / '4.61 µs (4.5–6.7)' / '10,985,456' -> (value, unit) or None."""
    m = NUM.match(cell)
    if not m:
        return None
    v = float(m.group(1).replace(",", ""))
    unit = m.group(2) or unit_hint
    return v, unit, m.group(1)


def is_time(unit):
    return unit in TIME_UNITS


def fmt_time(sec):
    for name, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9)):
        if sec >= scale * 0.9999:
            return f"{fmt_num(sec / scale)} {name}"
    return f"{fmt_num(sec / 1e-9)} ns"


def fmt_num(v):
    """A tick label: 1, 20, 500, 2k, 10M, 0.5."""
    return fmt_si(v) if v >= 1e3 else f"{v:g}"


def fmt_si(v):
    for name, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if v >= scale:
            return f"{v / scale:.3g}{name}"
    return f"{v:.3g}"


def split_row(line):
    return [c.strip() for c in line.strip().strip("|").split("|")]


def read_sections(path):
    """-> (header lines, {section title: [(subtitle, [table rows as lists])]})."""
    header, sections = [], {}
    current, sub, table = None, None, None
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("## "):
                current, sub, table = line[3:].strip(), None, None
                sections.setdefault(current, [])
            elif line.startswith("### "):
                sub, table = line[4:].strip(), None
            elif current is None and line.startswith("- "):
                header.append(line[2:])
            elif current is not None and line.startswith("|"):
                cells = split_row(line)
                if table is None:
                    table = [cells]
                    sections[current].append((sub, table))
                elif not all(re.fullmatch(r":?-*:?", c) for c in cells):
                    table.append(cells)
            else:
                table = None
    return header, sections


def value_columns(head):
    """Indices and titles of the columns to chart (the figures, not ratios)."""
    cols = []
    for i, h in enumerate(head):
        hl = h.lower()
        if hl in ("median", "rate (tasks/s)") or hl.startswith(("round trip", "1 mib")):
            cols.append((i, h))
    if not cols and len(head) == 2:  # the queues subtables: | row | unit |
        cols.append((1, head[1]))
    return cols


def panels_for(title, tables):
    """-> list of panels (title, [(name, value, unit)]) for one section."""
    panels = []
    for sub, table in tables:
        head, rows = table[0], table[1:]
        if head[0].lower() == "ratio" or not rows:
            continue
        cols = value_columns(head)
        if not cols:
            continue
        grouped = head[0].lower() in ("test", "workload") and len(head) > 1 and head[1].lower() == "row"
        name_col = 1 if grouped else 0
        for ci, ctitle in cols:
            paren = re.search(r"\(([^)]*)\)", ctitle)
            hint = ctitle if len(head) == 2 else (paren.group(1) if paren else "")
            groups = {}
            order = []
            for r in rows:
                if ci >= len(r):
                    continue
                pv = parse_value(r[ci], hint)
                if pv is None or pv[0] <= 0:
                    continue
                key = r[0] if grouped else None
                if key not in groups:
                    groups[key] = []
                    order.append(key)
                groups[key].append((r[name_col], pv[0], pv[1], pv[2]))
            for key in order:
                name = re.sub(r"\s*\([^)]*\)$", "", sub) if sub else None
                own = ctitle if (len(cols) > 1 or not grouped) and not sub else None
                bits = [b for b in (key, name, own) if b]
                if not bits:
                    bits = [ctitle]
                panels.append((" · ".join(bits), groups[key]))
    return panels


def machine_and_date(header, section):
    machine = next((h[len("machine:"):].strip() for h in header if h.startswith("machine:")), "")
    # Strip commentary after the kernel version / first sentence.
    machine = re.split(r"(?<=[0-9a-z])\. |; ", machine)[0]
    date = ""
    for h in header:
        low = h.lower()
        if low.startswith(section.lower() + ":"):
            m = re.search(r"\d{4}-\d\d-\d\d(?: \d\d:\d\d UTC)?", h)
            if m:
                date = m.group(0)
    if not date:
        date = next((h[len("date:"):].strip() for h in header if h.startswith("date:")), "")
    return machine, date


def nice_ticks(lo, hi):
    """Log-scale bounds and ticks covering [lo, hi]."""
    a = math.floor(math.log10(lo))
    b = math.ceil(math.log10(hi))
    if b == a:
        b += 1
    ticks = [10.0 ** e for e in range(a, b + 1)]
    if b - a <= 2:  # few decades: 2 and 5 too
        ticks = sorted(t * m for t in ticks for m in (1, 2, 5) if t * m <= 10.0 ** b)
    return 10.0 ** a, 10.0 ** b, ticks


def text_width(s, size):
    return len(s) * size * 0.56


def clip(s, n=58):
    return s if len(s) <= n else s[: n - 1] + "…"


def draw(title, panels, machine, date, source):
    W, LABEL_W, PLOT_X0, PLOT_X1 = 1000, 400, 410, 880
    BAR_H, GAP, FONT = 16, 5, 12
    out = []
    y = 58
    body = []
    for ptitle, rows in panels:
        timed = is_time(rows[0][2])
        vals = [v * TIME_UNITS[u] if timed and u in TIME_UNITS else v for _, v, u, _ in rows]
        unit = "" if timed else rows[0][2]
        lo, hi, ticks = nice_ticks(min(vals), max(vals))
        span = math.log10(hi) - math.log10(lo)

        def x_of(v):
            return PLOT_X0 + (PLOT_X1 - PLOT_X0) * (math.log10(v) - math.log10(lo)) / span

        better = "less is better" if timed else "more is better"
        body.append(
            f'<text x="{PLOT_X0 - LABEL_W + 10}" y="{y + 14}" font-size="13" font-weight="bold" '
            f'fill="{INK}">{escape(ptitle)} <tspan font-weight="normal" fill="#666">'
            f"({escape(unit + ', ' if unit else '')}{better}, log scale)</tspan></text>"
        )
        y += 24
        top = y
        for (name, raw, _, text), v in zip(rows, vals):
            brood = name.lower().startswith("brood")
            col = BROOD if brood else RIVAL
            xe = x_of(v)
            # The table's own figure; thousands separators shortened to k/M.
            shown = fmt_si(raw) if "," in text else text
            label = f"{shown} {rows[0][2]}" if rows[0][2] else shown
            weight = ' font-weight="bold"' if brood else ""
            body.append(
                f'<text x="{PLOT_X0 - 8}" y="{y + BAR_H - 4}" font-size="{FONT}" text-anchor="end" '
                f'fill="{INK}"{weight}>{escape(clip(name))}</text>'
            )
            body.append(
                f'<rect x="{PLOT_X0}" y="{y}" width="{max(xe - PLOT_X0, 1.5):.1f}" height="{BAR_H}" '
                f'fill="{col}"><title>{escape(name)}: {escape(label)}</title></rect>'
            )
            body.append(
                f'<text x="{xe + 5:.1f}" y="{y + BAR_H - 4}" font-size="{FONT - 1}" fill="{INK}">'
                f"{escape(label)}</text>"
            )
            y += BAR_H + GAP
        bottom = y
        grid = []
        for t in ticks:
            x = x_of(t)
            major = abs(math.log10(t) - round(math.log10(t))) < 1e-9
            grid.append(
                f'<line x1="{x:.1f}" y1="{top - 3}" x2="{x:.1f}" y2="{bottom}" '
                f'stroke="{GRID if major else "#eeeeee"}" stroke-width="1"/>'
            )
            tl = fmt_time(t) if timed else fmt_num(t)
            grid.append(
                f'<text x="{x:.1f}" y="{bottom + 13}" font-size="10" text-anchor="middle" '
                f'fill="#555">{escape(tl)}</text>'
            )
        body[len(body) - 3 * len(rows) : len(body) - 3 * len(rows)] = grid  # grid under bars
        y = bottom + 30
    H = y + 40
    out.append(
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
        f'font-family="DejaVu Sans, Helvetica, Arial, sans-serif">'
    )
    out.append(f'<rect width="{W}" height="{H}" fill="white"/>')
    out.append(f'<text x="10" y="24" font-size="17" font-weight="bold" fill="{INK}">{escape(title)}</text>')
    # Legend.
    lx = W - 250
    out.append(f'<rect x="{lx}" y="12" width="14" height="14" fill="{BROOD}"/>')
    out.append(f'<text x="{lx + 20}" y="24" font-size="12" fill="{INK}">brood</text>')
    out.append(f'<rect x="{lx + 80}" y="12" width="14" height="14" fill="{RIVAL}"/>')
    out.append(f'<text x="{lx + 100}" y="24" font-size="12" fill="{INK}">rivals and floors</text>')
    out.extend(body)
    cap1 = f"Machine: {machine or 'unknown'}"
    cap2 = f"Run: {date or 'unknown date'} · source: {source} (bench/run) · bars on a log scale"
    for i, cap in enumerate((cap1, cap2)):
        out.append(
            f'<text x="10" y="{H - 26 + 15 * i}" font-size="11" fill="#444">{escape(clip(cap, 170))}</text>'
        )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def check(files):
    """Draw `files` into a temporary folder and check what comes out."""
    committed = os.path.join(BENCH, "charts")
    with tempfile.TemporaryDirectory() as tmp:
        written = render(files, tmp, log=False)
        if not written:
            sys.exit("charts.py --check: no chart drawn")
        for stem, bars in written.items():
            path = os.path.join(tmp, stem + ".svg")
            root = ET.parse(path).getroot()
            if root.tag != "{http://www.w3.org/2000/svg}svg":
                sys.exit(f"charts.py --check: {stem}.svg: root is {root.tag}, not svg")
            svg_ns = "{http://www.w3.org/2000/svg}"
            rects = [r for r in root.iter(svg_ns + "rect") if r.find(svg_ns + "title") is not None]
            if len(rects) != bars:
                sys.exit(f"charts.py --check: {stem}.svg has {len(rects)} bars, its table {bars} rows")
            with open(path, encoding="utf-8") as f:
                fresh = f.read()
            old = os.path.join(committed, stem + ".svg")
            if not os.path.exists(old) or open(old, encoding="utf-8").read() != fresh:
                sys.exit(f"charts.py --check: bench/charts/{stem}.svg is not what the results give: "
                         "run python3 bench/charts.py and commit it")
        # The queues report's layout (one `| row | unit |` table per test),
        # which the committed results may lack.
        sample = os.path.join(tmp, "queues.md")
        with open(sample, "w", encoding="utf-8") as f:
            f.write(QUEUES_SAMPLE)
        got = render([sample], os.path.join(tmp, "sample"), log=False)
        if got != {"queues": 3}:
            sys.exit(f"charts.py --check: the queues sample gave {got}, not 3 bars")
        ET.parse(os.path.join(tmp, "sample", "queues.svg"))
    print(f"charts.py --check: {', '.join(sorted(written))} parse and match the results", file=sys.stderr)


QUEUES_SAMPLE = """# brood bench results

- date: 2026-01-01 00:00 UTC
- machine: 1 CPUs, a sample CPU, Linux 0

## Queues

### One producer → one consumer, 8-byte messages (M msgs/s, more is better)

| row | M msgs/s |
|---|---:|
| brood Queue<u64> (4 MiB ring) | 1.710 |
| python Queue | 0.063 |

### Ping-pong round trip (µs, less is better)

| row | µs |
|---|---:|
| brood Queue<u64> (4 MiB ring) | 54.000 |

### Ratios and targets

| ratio | value | target | met |
|---|---:|---|---|
| round trip: brood, µs | 54.00 | <= 1.0 | **no** |
"""


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(BENCH, "charts"))
    ap.add_argument("--check", action="store_true")
    ap.add_argument("files", nargs="*")
    args = ap.parse_args(argv)
    files = args.files or [
        p for p in (os.path.join(BENCH, "results.md"), os.path.join(BENCH, "results-pool.md"))
        if os.path.exists(p)
    ]
    if not files:
        sys.exit("charts.py: no results file (run bench/run first)")
    if args.check:
        check(files)
    else:
        render(files, args.out)


def render(files, out, log=True):
    """Write one SVG per table found into `out`; -> {stem: number of bars}."""
    os.makedirs(out, exist_ok=True)
    done, written = set(), {}
    for path in files:
        header, sections = read_sections(path)
        for stitle, tables in sections.items():
            key = stitle.lower()
            if key not in SECTIONS or key in done:
                continue  # an earlier file (results.md) wins
            panels = panels_for(stitle, tables)
            if not panels:
                continue
            stem, ctitle = SECTIONS[key]
            machine, date = machine_and_date(header, stitle)
            source = os.path.relpath(path, os.path.dirname(BENCH))
            if source.startswith(".."):
                source = path
            svg = draw(ctitle, panels, machine, date, source)
            target = os.path.join(out, stem + ".svg")
            with open(target, "w", encoding="utf-8") as f:
                f.write(svg)
            done.add(key)
            written[stem] = sum(len(rows) for _, rows in panels)
            if log:
                print(f"charts.py: wrote {target} ({len(panels)} panels)", file=sys.stderr)
    missing = [t for t in SECTIONS if t not in done]
    if missing and log:
        print(f"charts.py: no table for {', '.join(missing)} in {', '.join(files)}", file=sys.stderr)
    return written


if __name__ == "__main__":
    main()
