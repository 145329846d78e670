#!/usr/bin/env python3
"""How fast pulled records become an Arrow table, for the routing-decision kind.

Usage (from the repository root, after `cargo build --release` and
`pip install './python[arrow]'`):

    python3 python/benches/bench_to_arrow.py [--tasks 50000] [--repeat 5] [--bin PATH]

Fills a temporary data directory with `arbiter-events demo --tasks N` (one routing
decision per task), then measures, each the median of --repeat runs, wall clock:

1. `to_arrow("routing_decision")` of records already read (the table construction);
2. `read_export` (read, checksum, header checks, MessagePack decoding) of a
   `--kinds routing_decision` export, then `to_arrow` (the two together);
3. `Puller(data_dir=...).pull()` of every record (the CLI export of all kinds and its
   verification), then `to_arrow("routing_decision")`.

A warm-up conversion precedes the measurements. Each row gives wall-clock rates and, beside them, rates per CPU second of this process
(less sensitive to other load on a shared machine; the CLI child of step 3 is not in it).
Prints a markdown table and one JSON line. Nothing is asserted: the figures go to
BENCHMARKS.md with the command that made them.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import arbiter_events as ae

KIND = "routing_decision"


def median_time(fn, repeat):
    """(median wall seconds, median CPU seconds of this process, last result)."""
    walls, cpus, result = [], [], None
    for _ in range(repeat):
        start, cpu = time.perf_counter(), time.process_time()
        result = fn()
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus), result


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=50000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--bin", help="the arbiter-events binary (default: $ARBITER_EVENTS_BIN, "
                        "else this repository's target/release/arbiter-events)")
    args = parser.parse_args(argv)
    repo_binary = pathlib.Path(__file__).resolve().parents[2] / "target" / "release" / "arbiter-events"
    binary = args.bin or os.environ.get("ARBITER_EVENTS_BIN") or str(repo_binary)

    with tempfile.TemporaryDirectory() as tmp:
        data_dir = pathlib.Path(tmp) / "data"
        subprocess.run([binary, "demo", "--data-dir", str(data_dir), "--tasks", str(args.tasks),
                        "--threads", "2", "--seed", "7"], check=True, capture_output=True)
        only = pathlib.Path(tmp) / "routing.msgpack"
        subprocess.run([binary, "export", "--data-dir", str(data_dir), "--kinds", KIND,
                        "--out", str(only)], check=True, capture_output=True)
        read = ae.read_export(only)
        n = len(read)
        read.to_arrow(KIND)  # warm up: pyarrow's import and first conversions are not measured

        t_arrow, c_arrow, table = median_time(lambda: read.to_arrow(KIND), args.repeat)
        assert table.num_rows == n
        t_read, c_read, _ = median_time(lambda: ae.read_export(only), args.repeat)
        t_both, c_both, _ = median_time(lambda: ae.read_export(only).to_arrow(KIND), args.repeat)

        pulls = iter(range(args.repeat))

        def pull_then_table():
            i = next(pulls)
            p = ae.Puller(f"bench-{i}", data_dir=data_dir, bin=binary,
                          state_dir=pathlib.Path(tmp) / f"state-{i}")
            batch = p.pull()
            return len(batch), batch.to_arrow(KIND).num_rows

        t_pull, c_pull, (pulled, pulled_kind) = median_time(pull_then_table, args.repeat)
        assert pulled_kind == n

    rows = [
        ("to_arrow(routing_decision) of records read", n, t_arrow, c_arrow, n),
        ("read_export (verify, decode) of a routing-only export", n, t_read, c_read, n),
        ("read_export + to_arrow", n, t_both, c_both, n),
        ("Puller.pull() of all kinds + to_arrow(routing_decision)", pulled, t_pull, c_pull, n),
    ]
    print(f"{n} routing decisions ({pulled} records of all kinds); median of {args.repeat}; "
          f"python {platform.python_version()}, load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores")
    print()
    print("| step | records | median wall s | records/s (wall) | routing decisions/s (wall) "
          "| records/s (CPU of this process) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, count, t, c, kind_count in rows:
        print(f"| {name} | {count} | {t:.3f} | {count / t:,.0f} | {kind_count / t:,.0f} "
              f"| {count / c:,.0f} |")
    print(json.dumps({"routing_decisions": n, "records": pulled,
                      "to_arrow_per_s": round(n / t_arrow),
                      "to_arrow_per_cpu_s": round(n / c_arrow), "read_per_s": round(n / t_read),
                      "read_and_arrow_per_s": round(n / t_both),
                      "pull_and_arrow_records_per_s": round(pulled / t_pull),
                      "pull_and_arrow_routing_per_s": round(n / t_pull)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
