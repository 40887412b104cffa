"""Two trees side by side: one scenario of `bench/run.py`, the trees taking turns, one row each
turn, so that the machine's drift touches both alike (this VM's figures move 10-30% in minutes).

    git worktree add /tmp/before fd86514
    .venv/bin/python bench/ab.py --trees /tmp/before,. --scenario five-orgs-32-0ms --workers 2
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run as bench_run


def one(
    tree: Path, scenario: bench_run.Scenario, workers: int, duration: float, warmup: float
) -> str:
    operation = bench_run.GATEWAY_OPERATIONS[scenario.operation]
    with bench_run.start_mocks() as (mocks, _):
        port = bench_run.free_port()
        with bench_run.python_gateway(workers, tree=tree)(mocks, port) as child:
            base = f"http://{bench_run.HOST}:{port}"
            bench_run.wait_until(
                lambda: bench_run.http("GET", f"{base}/healthz")[0] == 200, "the gateway"
            )
            pids = bench_run.tree(child.pid)
            result, calls, cpu_ms, _, cores, _ = bench_run.measure(
                f"{base}/graphql",
                operation,
                bench_run.GATEWAY_HEADERS,
                scenario,
                mocks,
                lambda: pids,
                duration,
                warmup,
            )
    return (
        f"| {tree} | {result.rps:,.0f} | {result.p50_ms:.2f} | {result.p99_ms:.2f} | "
        f"{calls:.2f} | {cpu_ms:.2f} | {cores:.2f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trees", required=True, help="two or more checkouts, comma-separated")
    parser.add_argument("--scenario", required=True, choices=[s.name for s in bench_run.SCENARIOS])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration", type=float, default=8)
    parser.add_argument("--warmup", type=float, default=3)
    args = parser.parse_args()
    scenario = next(s for s in bench_run.SCENARIOS if s.name == args.scenario)
    trees = [Path(tree).resolve() for tree in args.trees.split(",")]
    print(f"{scenario.what}, {args.workers} worker(s)")
    print("| tree | requests/s | p50 ms | p99 ms | upstream calls/query | CPU ms/request | cores |")
    print("|---|---|---|---|---|---|---|")
    for _ in range(args.rounds):
        for tree in trees:
            print(one(tree, scenario, args.workers, args.duration, args.warmup), flush=True)


if __name__ == "__main__":
    main()
