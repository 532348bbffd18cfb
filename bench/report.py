"""Turns the harnesses' TSV lines into a markdown table.

Reads `name<TAB>median_us<TAB>p10_us<TAB>p90_us<TAB>n` lines from the files
given (or stdin) and prints the table:

- "vs raw fork" is the row's median over the `raw fork+_exit+waitpid` median;
- "Python / brood" sits on each `brood X` row that has a `python X` row: the
  Python median over the brood median (above 1: brood is faster).
"""

import fileinput

FLOOR = "raw fork+_exit+waitpid"


def fmt_us(us):
    return f"{us / 1000:.2f} ms" if us >= 1000 else f"{us:.1f} µs"


def main():
    rows = []
    for line in fileinput.input():
        parts = line.rstrip("\n").split("\t")
        if len(parts) != 5:
            continue
        name, med, p10, p90, n = parts
        rows.append((name, float(med), float(p10), float(p90), int(n)))
    medians = {r[0]: r[1] for r in rows}
    floor = medians.get(FLOOR)

    print("| workload | median | p10 | p90 | n | vs raw fork | Python / brood |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, med, p10, p90, n in rows:
        vs_floor = f"{med / floor:.2f}x" if floor else ""
        py_vs = ""
        if name.startswith("brood "):
            py = medians.get("python " + name[len("brood "):])
            if py:
                py_vs = f"{py / med:.2f}x"
        print(
            f"| {name} | {fmt_us(med)} | {fmt_us(p10)} | {fmt_us(p90)} | {n} "
            f"| {vs_floor} | {py_vs} |"
        )


if __name__ == "__main__":
    main()
