"""Turns the harnesses' TSV lines into the report's tables, one per topic.

Reads lines from the files given (or stdin), the table's name first:

    start<TAB>name<TAB>median_us<TAB>p10_us<TAB>p90_us<TAB>n
    rtt<TAB>cpus<TAB>name<TAB>median_us<TAB>p10_us<TAB>p90_us<TAB>n
    bw<TAB>cpus<TAB>name<TAB>GBps<TAB>slowest_run_GBps<TAB>fastest_run_GBps<TAB>runs<TAB>MiB_per_run

and prints, for each topic that has rows, a table and the ratios that the
issues ask for, each with its target and whether this run met it:

- start + join: each row's median over the raw-fork floor, and on each
  `brood X` row the `python X` median over it (above 1: brood is faster);
- pipes: round trip (`rtt`) and throughput (`bw`) side by side per
  transport and per CPU placement (`cpus`: how many CPUs the harness and
  its children were allowed), each against the raw socketpair in C.

Usage: python3 report.py [--command CMD] FILE...
"""

import argparse
import fileinput

START_FLOOR = "raw fork+_exit+waitpid"
PIPE_FLOOR = "raw socketpair (C)"
BROOD_BYTES = "brood Connection send_bytes/recv_bytes"
BROOD_VALUE = "brood Connection send/recv (serde_bytes)"
PY_BYTES = "python Pipe send_bytes/recv_bytes"
PY_VALUE = "python Pipe send/recv (bytes)"
IPC_BYTES = "ipc-channel IpcBytesSender (fork)"
IPC_VALUE = "ipc-channel IpcSender<ByteBuf> (fork)"

# (what, metric, numerator row, denominator row, target as (op, value) or None)
# A ratio is numerator / denominator of the metric: the median time for
# `start` and `rtt`, GB/s for `bw`.
START_RATIOS = [
    ("brood spawn / re-exec floor", "start", "brood spawn",
     "re-exec floor (same binary, does nothing)", ("<=", 1.2)),
    ("brood forkserver / brood fork", "start", "brood forkserver", "brood fork", ("<=", 1.6)),
    ("brood fork / raw fork", "start", "brood fork", START_FLOOR, None),
    ("python fork / brood fork", "start", "python fork", "brood fork", None),
    ("python spawn / brood spawn", "start", "python spawn", "brood spawn", None),
    ("python forkserver / brood forkserver", "start", "python forkserver",
     "brood forkserver", None),
    ("procspawn / brood spawn", "start", "procspawn (re-exec)", "brood spawn", None),
]
PIPE_RATIOS = [
    ("round trip: brood send_bytes / raw socketpair", "rtt", BROOD_BYTES, PIPE_FLOOR,
     ("<=", 1.15)),
    ("round trip: ipc-channel bytes / brood send_bytes", "rtt", IPC_BYTES, BROOD_BYTES, None),
    ("round trip: python send_bytes / brood send_bytes", "rtt", PY_BYTES, BROOD_BYTES, None),
    ("round trip: python send / brood send", "rtt", PY_VALUE, BROOD_VALUE, None),
    ("throughput: brood send_bytes / raw socketpair", "bw", BROOD_BYTES, PIPE_FLOOR,
     (">=", 0.75)),
    ("throughput: brood send_bytes / python send_bytes", "bw", BROOD_BYTES, PY_BYTES,
     (">=", 10.0)),
    ("throughput: brood send_bytes / ipc-channel bytes", "bw", BROOD_BYTES, IPC_BYTES,
     (">=", 1.5)),
    ("throughput: brood send / python send", "bw", BROOD_VALUE, PY_VALUE, None),
    ("throughput: brood send / ipc-channel IpcSender", "bw", BROOD_VALUE, IPC_VALUE, None),
    ("throughput: raw socketpair / python send_bytes", "bw", PIPE_FLOOR, PY_BYTES, None),
]


def fmt_us(us):
    return f"{us / 1000:.2f} ms" if us >= 1000 else f"{us:.1f} µs" if us >= 100 else f"{us:.2f} µs"


def fmt_ratio(r, as_share, digits=2):
    """`digits` decimals for a ratio, `digits - 2` for a percentage."""
    return f"{r * 100:.{max(digits - 2, 0)}f}%" if as_share else f"{r:.{digits}f}x"


def cpus_label(cpus):
    return "1 CPU" if cpus == 1 else f"{cpus} CPUs"


def ratios_table(specs, data, placements=(None,)):
    """The ratios whose rows are all there, as a markdown table; pipe ratios
    once per CPU placement."""
    lines = []
    for what, metric, num, den, target in specs:
        for cpus in placements:
            rows = data.get(metric if cpus is None else (metric, cpus), {})
            a, b = rows.get(num), rows.get(den)
            if not a or not b:
                continue
            r = a[0] / b[0]
            # A throughput share of the floor reads best as a percentage.
            as_share = metric == "bw" and den == PIPE_FLOOR
            shown = fmt_ratio(r, as_share)
            if target:
                op, value = target
                met = r <= value if op == "<=" else r >= value
                want = f"{'≤' if op == '<=' else '≥'} {fmt_ratio(value, as_share)}"
                verdict = "met" if met else "**missed**"
                # One more decimal where rounding would hide which side it is.
                shown = fmt_ratio(r, as_share, 3)
            else:
                want, verdict = "", ""
            where = "" if cpus is None else f" ({cpus_label(cpus)})"
            lines.append(f"| {what}{where} | {shown} | {want} | {verdict} |")
    if not lines:
        return []
    return ["| ratio | this run | target | |", "|---|---:|---:|---|", *lines]


def start_table(data):
    rows = data.get("start", {})
    if not rows:
        return []
    floor = rows.get(START_FLOOR)
    out = [
        "| workload | median | p10 | p90 | n | vs raw fork | Python / brood |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, (med, p10, p90, n) in rows.items():
        vs_floor = f"{med / floor[0]:.2f}x" if floor else ""
        py_vs = ""
        if name.startswith("brood "):
            py = rows.get("python " + name[len("brood "):])
            if py:
                py_vs = f"{py[0] / med:.2f}x"
        out.append(
            f"| {name} | {fmt_us(med)} | {fmt_us(p10)} | {fmt_us(p90)} | {n:.0f} "
            f"| {vs_floor} | {py_vs} |"
        )
    return out


def placements(data):
    """The CPU counts the pipes table ran with, most first."""
    return sorted({k[1] for k in data if isinstance(k, tuple)}, reverse=True)


def pipes_table(data):
    cpus_list = placements(data)
    names = list(dict.fromkeys(n for k in data if isinstance(k, tuple) for n in data[k]))
    if not names:
        return []
    head = ["transport"]
    for metric, what, vs in (("rtt", "round trip", "vs raw"), ("bw", "1 MiB throughput", "of raw")):
        for cpus in cpus_list:
            head += [f"{what}, {cpus_label(cpus)}", vs]
    out = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for name in names:
        cells = [name]
        for cpus in cpus_list:
            rows = data.get(("rtt", cpus), {})
            floor = rows.get(PIPE_FLOOR)
            if name in rows:
                med, p10, p90, _ = rows[name]
                cells += [
                    f"{fmt_us(med)} ({p10:.1f}–{p90:.1f})",
                    f"{med / floor[0]:.2f}x" if floor else "",
                ]
            else:
                cells += ["", ""]
        for cpus in cpus_list:
            rows = data.get(("bw", cpus), {})
            floor = rows.get(PIPE_FLOOR)
            if name in rows:
                gbps, slow, fast = rows[name][:3]
                cells += [
                    f"{gbps:.2f} GB/s ({slow:.2f}–{fast:.2f})",
                    f"{gbps / floor[0] * 100:.0f}%" if floor else "",
                ]
            else:
                cells += ["", ""]
        out.append("| " + " | ".join(cells) + " |")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--command", default="bench/run", help="the command that made the lines")
    ap.add_argument("files", nargs="*")
    args = ap.parse_args()
    data = {}
    for line in fileinput.input(args.files):
        parts = line.rstrip("\n").split("\t")
        if len(parts) >= 6 and parts[0] == "start":
            data.setdefault("start", {})[parts[1]] = tuple(float(x) for x in parts[2:])
        elif len(parts) >= 7 and parts[0] in ("rtt", "bw"):
            key = (parts[0], int(parts[1]))
            data.setdefault(key, {})[parts[2]] = tuple(float(x) for x in parts[3:])

    sections = [
        (
            "Start + join",
            "start",
            "Start a child whose function returns at once, and join it: median, p10 "
            "and p90 per iteration. `re-exec floor` is `posix_spawn` of this same "
            "binary with `__BROOD_BOOTSTRAP=noop` (brood's pre-main bootstrap exits "
            "0 at once) and `waitpid`: what any re-exec start costs.",
            start_table(data),
            ratios_table(START_RATIOS, data),
        ),
        (
            "Pipes",
            "pipes",
            "Between a parent and one child: the round trip of an 8-byte message "
            "(parent sends, child echoes; median, p10 and p90 of 20000 after 2000 "
            "warm-up), and the throughput of 1 MiB messages one way (4 runs of "
            "512 MiB, the child acks each run; GB/s = 10^9 payload bytes per second, "
            "all runs' bytes over all their time; the slowest and fastest run in "
            "brackets, after p10–p90 for round trips). Rust and C rows run interleaved "
            "in one process tree; the Python rows run after them. The table runs twice: "
            "as the scheduler places parent and child (on one CPU or two, as it "
            "likes: a round trip across CPUs adds a wake-up on the other CPU), and "
            "pinned to one CPU with `taskset` (parent and child take turns: a round "
            "trip is the software path alone, syscalls, copies and two context "
            "switches).",
            pipes_table(data),
            ratios_table(PIPE_RATIOS, data, placements(data)),
        ),
    ]
    first = True
    for title, only, blurb, table, ratios in sections:
        if not table:
            continue
        if not first:
            print()
        first = False
        print(f"## {title}")
        print()
        print(blurb)
        print()
        print(f"Command: `{args.command}` (this table alone: `bench/run --only {only}`)")
        print()
        print("\n".join(table))
        if ratios:
            print()
            print("\n".join(ratios))


if __name__ == "__main__":
    main()
