"""The `escape-sweep` command line (argparse). Exit codes: 0 done, 2 bad input, 1 run-time failure."""

from __future__ import annotations

import argparse
import sys


class UsageError(Exception):
    """Bad input: reported as one line on stderr with exit code 2, before any compute."""


def _bench(args) -> int:
    from . import bench

    return bench.main(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="escape-sweep", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser("bench", help="kernel throughput (walker-steps/s) next to numpy and scalar numba")
    b.add_argument("--json", action="store_true", help="print JSON instead of a table")
    b.add_argument("--batch", type=int, nargs="+", default=[1, 8, 64], help="batch sizes (default 1 8 64)")
    b.add_argument("--min-seconds", type=float, default=0.3, help="minimum time of one timed call")
    b.set_defaults(func=_bench)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UsageError as e:
        print(f"escape-sweep: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("escape-sweep: interrupted", file=sys.stderr)
        return 130
