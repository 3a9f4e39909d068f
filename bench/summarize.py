"""Assembles one benchmark run (bench/run.sh) into JSON and a markdown summary.

Reads the figures run.sh exported and the JSON reports ticketnest-load wrote, puts
each TicketNest figure beside the limit of the part it rests on, measured in the same
run, and writes bench/results/<stamp>.json and .md plus latest.json and latest.md.
"""

import json
import os
import platform
import shutil
import subprocess
from pathlib import Path

env = os.environ
work = Path(env["work"])
results = Path(env["results"])
stamp = env["stamp"]


def num(name):
    value = env.get(name, "")
    try:
        return float(value)
    except ValueError:
        return None


def load(name):
    path = work / name
    return json.loads(path.read_text()) if path.exists() else None


def cpu_model():
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


sale20k = load("sale20k.json")
ramp = load("ramp.json")
sale200k = [load("sale200k-1.json"), load("sale200k-2.json")]
big = sale200k[1] or sale200k[0]

xadd = num("xadd_per_s")
pg_batch = num("pg_batch")
pg_naive = num("pg_naive")
knee = ramp.get("knee_per_s") if ramp else None
knee_p99 = ramp.get("knee_accept_p99_ms") if ramp else None
# The accept figure is the knee (highest open-loop rate held at p99 <= 20 ms); the
# decide figure is the worker's rate in the biggest sale run.
decide = (big or sale20k)["decide_per_s"]
# The driver's own ceiling: the same open-loop ramp against GET /healthz, run by the
# same `ramp` command. A knee counts as the server's only when the ceiling is at least
# twice the knee (ticketnest-load's rule, as `knee_limited_by_driver`).
ceiling = ramp.get("driver_ceiling_per_s") if ramp else None
ceiling_at_least = ramp.get("driver_ceiling_at_least") if ramp else None
knee_limited = ramp.get("knee_limited_by_driver") if ramp else None
ceiling_steps = (ramp.get("driver_ceiling") or {}).get("steps", []) if ramp else []


def step_cpu(steps, rate):
    """The load tool's own CPU (cores) in the step offered at `rate`."""
    for s in steps:
        if rate is not None and s.get("offered_per_s") == rate:
            return s.get("driver_cpu_cores")
    return None


wrk_rps = num("wrk_rps")


def ratio(a, b):
    return round(a / b, 3) if a and b else None


mem_total_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
latest = {
    "commit": env["commit"],
    "stamp": stamp,
    "quick": env["quick"] == "true",
    "machine": {"cpus": os.cpu_count(), "cpu": cpu_model(), "memory_gb": mem_total_gb, "kernel": platform.release()},
    "command": "bench/run.sh" + (" --quick" if env["quick"] == "true" else ""),
    "xadd_per_s": xadd,
    "xadd_pipelined_per_s": num("xadd_pipelined_per_s"),
    "pgbench_batch_decisions_per_s": pg_batch,
    "pgbench_batch1000_decisions_per_s": num("pg_batch1000"),
    "pgbench_naive_per_s": pg_naive,
    "accept_per_s": knee,
    "accept_p99_ms": knee_p99,
    "sale20k_accept_per_s": sale20k["accept_per_s"],
    "sale20k_accept_p99_ms": sale20k["accept_latency_ms"]["p99"],
    "sale20k_decide_per_s": sale20k["decide_per_s"],
    "sale20k_correct": sale20k["correct"],
    "sale200k_accept_per_s": big["accept_per_s"] if big else None,
    "sale200k_accept_p99_ms": big["accept_latency_ms"]["p99"] if big else None,
    "sale200k_correct": [s["correct"] for s in sale200k if s],
    "decide_per_s": decide,
    "wrk_accept_per_s": num("wrk_rps"),
    "wrk_accept_p99": env.get("wrk_p99"),
    "wrk_non_2xx": num("wrk_non2xx"),
    "accept_ratio_to_xadd": ratio(knee, xadd),
    "decide_ratio_to_pgbench_batch": ratio(decide, pg_batch),
    "speedup_vs_naive": ratio(decide, pg_naive),
    "rss_mb_api": num("rss_api_after_20k"),
    "rss_mb_worker": num("rss_worker_after_20k"),
    "rss_mb_api_idle": num("rss_api_idle"),
    "rss_mb_worker_idle": num("rss_worker_idle"),
    "rss_mb_api_peak": round(num("peak_api_kb") / 1024, 1) if num("peak_api_kb") else None,
    "rss_mb_worker_peak": round(num("peak_worker_kb") / 1024, 1) if num("peak_worker_kb") else None,
    "rss_mb_api_after_200k": [num("rss_api_200k_1"), num("rss_api_200k_2")],
    "rss_mb_worker_after_200k": [num("rss_worker_200k_1"), num("rss_worker_200k_2")],
    "ramp_steps": ramp["steps"] if ramp else [],
    "driver_ceiling_per_s": ceiling,
    "driver_ceiling_at_least": ceiling_at_least,
    "driver_ceiling_ratio_to_knee": ratio(ceiling, knee),
    "knee_limited_by_driver": knee_limited,
    "knee_ratio_to_wrk": ratio(knee, wrk_rps),
    "driver_cpu_cores_at_knee": step_cpu(ramp["steps"] if ramp else [], knee),
    "driver_cpu_cores_at_ceiling": step_cpu(ceiling_steps, ceiling),
    "wrk_cpu_cores": num("wrk_cpu_cores"),
    "driver_ceiling_steps": ceiling_steps,
}

targets = [
    ("accept rate >= 30% of unpipelined XADD", latest["accept_ratio_to_xadd"], 0.30),
    ("decide rate >= 40% of pgbench batch (100)", latest["decide_ratio_to_pgbench_batch"], 0.40),
    ("decide rate >= 10x the naive shape", latest["speedup_vs_naive"], 10.0),
]

def fmt(v, digits=0):
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return str(v)

md = [
    f"# Benchmark {stamp}",
    "",
    f"Commit `{latest['commit']}`, command `{latest['command']}`, machine: {latest['machine']['cpus']} CPUs "
    f"({latest['machine']['cpu']}), {mem_total_gb} GiB, kernel {latest['machine']['kernel']}. "
    "Everything (PostgreSQL, Redis, pub-api, sub-worker, the load tool) on this one machine.",
    "",
    "## Limits of the parts (same run)",
    "",
    "| part | figure |",
    "|---|---|",
    f"| redis-benchmark XADD, 50 clients, unpipelined | {fmt(xadd)} /s |",
    f"| redis-benchmark XADD, 50 clients, pipeline 16 | {fmt(num('xadd_pipelined_per_s'))} /s |",
    f"| pgbench worker-shaped batch of 100 (1 client) | {fmt(pg_batch)} decisions/s |",
    f"| pgbench worker-shaped batch of 1,000 (1 client) | {fmt(num('pg_batch1000'))} decisions/s |",
    f"| pgbench naive row lock per booking (8 clients) | {fmt(pg_naive)} bookings/s |",
    "",
    "## TicketNest",
    "",
    "| figure | value | ratio to its part's limit |",
    "|---|---|---|",
    f"| accept rate at the knee (open loop, p99 <= 20 ms) | {fmt(knee)} /s, p99 {fmt(knee_p99, 2)} ms"
    + (" (limited by the driver: a lower bound)" if knee_limited else "")
    + f" | {fmt(latest['accept_ratio_to_xadd'], 3)} of XADD; {fmt(latest['knee_ratio_to_wrk'], 3)} of wrk |",
    f"| driver's ceiling (the same ramp against GET /healthz) | {'at least ' if ceiling_at_least else ''}{fmt(ceiling)} /s | "
    f"{fmt(latest['driver_ceiling_ratio_to_knee'], 2)}x the knee: "
    + {True: "under 2x, the knee is the driver's", False: "at least 2x, the knee is the server's", None: "not judged"}[knee_limited]
    + " |",
    f"| sale 20,000 / 1,000 (64 in flight): accept | {fmt(sale20k['accept_per_s'])} /s, p99 {fmt(sale20k['accept_latency_ms']['p99'], 2)} ms | |",
]
if big:
    md.append(f"| sale 200,000 / 10,000 (64 in flight): accept | {fmt(big['accept_per_s'])} /s, p99 {fmt(big['accept_latency_ms']['p99'], 2)} ms | |")
md += [
    f"| decide rate | {fmt(decide)} /s | {fmt(latest['decide_ratio_to_pgbench_batch'], 3)} of pgbench batch; {fmt(latest['speedup_vs_naive'], 1)}x the naive shape |",
    f"| wrk, accept path alone (64 connections) | {fmt(num('wrk_rps'))} /s, p99 {env.get('wrk_p99', 'n/a')}, non-2xx {fmt(num('wrk_non2xx'))} | cross-check of the load tool |",
    f"| CPU of the load generators (cores) | ticketnest-load {fmt(latest['driver_cpu_cores_at_knee'], 2)} at the knee, "
    f"{fmt(latest['driver_cpu_cores_at_ceiling'], 2)} at its ceiling; wrk {fmt(latest['wrk_cpu_cores'], 2)} | same machine as the server |",
    "",
    "Correctness: every sale's decision log checked (no oversell, no user twice, exact FIFO, every accepted request decided): "
    + ("OK" if sale20k["correct"] and all(s["correct"] for s in sale200k if s) else "BREACHED"),
    "",
    "## Memory (resident, MB)",
    "",
    "| | pub-api | sub-worker |",
    "|---|---|---|",
    f"| idle | {fmt(num('rss_api_idle'), 1)} | {fmt(num('rss_worker_idle'), 1)} |",
    f"| peak during sale 20k and ramp | {fmt(latest['rss_mb_api_peak'], 1)} | {fmt(latest['rss_mb_worker_peak'], 1)} |",
    f"| after sale 20k and ramp | {fmt(num('rss_api_after_20k'), 1)} | {fmt(num('rss_worker_after_20k'), 1)} |",
]
if big:
    md.append(f"| after 200k sale #1 / #2 | {fmt(num('rss_api_200k_1'), 1)} / {fmt(num('rss_api_200k_2'), 1)} | {fmt(num('rss_worker_200k_1'), 1)} / {fmt(num('rss_worker_200k_2'), 1)} |")
md += ["", "## Targets", "", "| target | measured | met |", "|---|---|---|"]
for name, value, goal in targets:
    md.append(f"| {name} | {fmt(value, 3)} | {'yes' if value is not None and value >= goal else 'no'} |")
md.append(f"| p99 accept latency under 20 ms at the knee | {fmt(knee_p99, 2)} ms | {'yes' if knee_p99 is not None and knee_p99 < 20 else 'no'} |")
def steps_table(steps):
    rows = ["| offered/s | accepted/s | p50 ms | p99 ms | errors | driver CPU (cores) | held |", "|---|---|---|---|---|---|---|"]
    for s in steps:
        errors = sum(v for k, v in s["statuses"].items() if k != "accepted_202")
        rows.append(f"| {fmt(s['offered_per_s'])} | {fmt(s['accept_per_s'])} | {s['accept_latency_ms']['p50']:.2f} | {s['accept_latency_ms']['p99']:.2f} | {errors} | {fmt(s.get('driver_cpu_cores'), 2)} | {'yes' if s['held'] else 'no'} |")
    return rows


if ramp:
    md += ["", "## Ramp", ""] + steps_table(ramp["steps"])
if ceiling_steps:
    md += ["", "## Driver's ceiling (the same ramp against GET /healthz)", "",
           "A knee counts as the server's only when this ceiling is at least twice the knee.", ""]
    md += steps_table(ceiling_steps)

results.mkdir(parents=True, exist_ok=True)
(results / f"{stamp}.json").write_text(json.dumps(latest, indent=2) + "\n")
(results / f"{stamp}.md").write_text("\n".join(md) + "\n")
shutil.copy(results / f"{stamp}.json", results / "latest.json")
shutil.copy(results / f"{stamp}.md", results / "latest.md")
print("\n".join(md))
print(f"\nwritten: {results}/{stamp}.json, {results}/{stamp}.md, {results}/latest.json, {results}/latest.md")
