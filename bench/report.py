#!/usr/bin/env python3
"""Collects one scripts/bench.sh run into bench/results/latest.{json,md,png}.

Reads the raw loadgen outputs (fanout-*.json, max-*.json, bitcoin-*.json, cluster-*.json) and
logs from the run directory, writes the results in the shape issue 5 asks for (plus more fields),
a Markdown table, a PNG chart when matplotlib is available, and prints the headline ratios. The
cluster benchmarks (issue 11) are also summarised on their own in the run directory
(cluster.json, cluster.md); with --cluster-only that is all that is written. Standard library
only, apart from the optional chart.
"""

import argparse
import datetime
import glob
import json
import os
import platform
import re
import sys

SYSTEMS = ["topic-server", "redis-ws-bridge", "nats", "node-bridge", "limit", "uws"]
# What each baseline does not do, printed next to its numbers.
LIMITATIONS = {
    "uws": "no state, no deltas, no conflation, no views, no selectors (exact topics only)",
    "limit": "no state, no deltas, no conflation, no views (the ceiling: fan-out only)",
    "nats": "no state (no current value for late subscribers), no deltas, no views",
}
# Percent of one core used by processes other than the server and loadgen above which a phase
# is marked noisy (the machine has two cores and everything shares them).
NOISY_OTHER_CPU = 25.0



def read_int(directory, name):
    """The integer a one-line file in `directory` holds, or None when it is missing or not one."""
    try:
        with open(os.path.join(directory, name)) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None

def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as error:
        print(f"warning: cannot read {path}: {error}", file=sys.stderr)
        return None


def machine(fd_limit):
    info = {"cpus": os.cpu_count(), "kernel": platform.release(), "fd_limit_per_process": fd_limit}
    try:
        with open("/proc/cpuinfo") as f:
            models = [l.split(":", 1)[1].strip() for l in f if l.startswith("model name")]
        info["cpu_model"] = models[0] if models else "unknown"
    except OSError:
        pass
    try:
        with open("/proc/meminfo") as f:
            kib = int(next(l for l in f if l.startswith("MemTotal")).split()[1])
        info["memory_bytes"] = kib * 1024
    except (OSError, StopIteration, ValueError):
        pass
    return info


def fanout(raw):
    runs, connects, idle = [], [], []
    for path in sorted(glob.glob(os.path.join(raw, "fanout-*.json"))):
        report = load(path)
        if not report:
            continue
        c = report["connect"]
        connects.append({
            "system": report["system"], "connections": c["connected"],
            "requested": c["requested"], "connections_per_s": round(c["connections_per_s"], 1),
            "seconds": round(c["seconds"], 3), "failed": c["failed"], "first_error": c["first_error"],
        })
        if c["connected"] >= 10000:
            idle.append({
                "system": report["system"], "connections": c["connected"],
                "rss_per_connection_bytes": round(c["rss_per_connection_bytes"]),
                "server_rss_bytes": c["server_rss_connected_bytes"], "measured": True,
            })
        for run in report["runs"]:
            if run["mode"] == "idle":
                continue  # the memory scenario's reading, see memory()
            entry = {k: run[k] for k in (
                "system", "scenario", "mode", "subscribers", "deliveries_per_s", "p50_ms", "p99_ms",
                "p999_ms", "bytes_per_delivery", "server_rss_bytes")}
            entry.update({k: run[k] for k in (
                "max_ms", "published_per_s", "expected_deliveries", "deliveries", "messages_per_frame",
                "server_cpu_percent", "loadgen_cpu_percent", "machine_cpu_percent",
                "other_cpu_percent", "drained", "disconnects", "decode_errors", "latency_samples",
                "rate", "window", "duration_s", "first_problem")})
            entry["server_cpu_us_per_delivery"] = run.get("server_cpu_us_per_delivery", 0.0)
            entry["publish_stalled"] = run.get("publish_stalled", False)
            entry["connections_per_s"] = round(c["connections_per_s"], 1)
            # Other processes took a noticeable share of the 2 cores during this phase.
            entry["noisy"] = run["other_cpu_percent"] > NOISY_OTHER_CPU
            for k, v in list(entry.items()):
                if isinstance(v, float):
                    entry[k] = round(v, 3)
            runs.append(entry)
    order = {s: i for i, s in enumerate(SYSTEMS)}
    runs.sort(key=lambda r: (order.get(r["system"], 99), r["subscribers"], r["mode"]))
    return runs, connects, idle


def max_connections(raw, idle, fd_limit):
    a, b = load(os.path.join(raw, "max-a.json")), load(os.path.join(raw, "max-b.json"))
    if not a:
        return None
    subscribed = a["connect"]["connected"] + (b["connect"]["connected"] if b else 0)
    failed = (b["connect"]["failed"] if b else 0) + a["connect"]["failed"]
    first_error = (b and b["connect"]["first_error"]) or a["connect"]["first_error"]
    peak_fds, base_fds = read_int(raw, "max-fds.txt"), read_int(raw, "max-fds-base.txt")
    # Both loadgens report what they subscribed; the server's own descriptor count says how
    # many it held at once (one descriptor per connection above its idle baseline).
    held = peak_fds - base_fds if peak_fds is not None and base_fds is not None else None
    reached = min(subscribed, held) if held is not None else subscribed
    log = ""
    try:
        with open(os.path.join(raw, "topic-server-max.log"), errors="replace") as f:
            log = f.read()
    except OSError:
        pass
    at_limit = fd_limit and peak_fds is not None and peak_fds >= fd_limit - 16
    if "Too many open files" in log or "os error 24" in log or at_limit:
        stopped_by = (f"the server's open-file limit: {peak_fds} of {fd_limit} descriptors in use "
                      "(RLIMIT_NOFILE per process; accept fails with EMFILE)")
    elif failed:
        stopped_by = f"connection failures: {first_error}"
    else:
        stopped_by = "nothing: every requested connection subscribed (the request was the limit)"
    rss = b["connect"]["server_rss_connected_bytes"] if b else a["connect"]["server_rss_connected_bytes"]
    before = a["connect"]["server_rss_before_bytes"]
    result = {
        "system": "topic-server", "reached": reached, "subscribed_by_loadgens": subscribed,
        "server_connections_peak": held, "failed_attempts": failed,
        "first_error": first_error, "server_peak_fds": peak_fds, "stopped_by": stopped_by,
        "server_rss_bytes": rss,
    }
    if reached:
        per = (rss - before) / reached
        idle.append({"system": "topic-server", "connections": reached,
                     "rss_per_connection_bytes": round(per), "server_rss_bytes": rss, "measured": True})
        # 50k does not fit under the per-process descriptor limit: extrapolate linearly from the
        # memory each added connection cost between the 10k point and this one.
        ten = next((i for i in idle if i["system"] == "topic-server" and i["connections"] >= 10000
                    and i["connections"] < reached), None)
        if ten:
            slope = (rss - ten["server_rss_bytes"]) / (reached - ten["connections"])
            basis = "marginal RSS per connection between the 10k and the largest measured point"
        else:
            slope = per
            basis = "RSS per connection at the largest measured point"
        idle.append({"system": "topic-server", "connections": 50000,
                     "rss_per_connection_bytes": round(slope),
                     "projected_rss_bytes": round(before + 50000 * max(slope, 0)),
                     "measured": False, "extrapolated_from": basis})
    return result


def bitcoin(raw):
    redis = load(os.path.join(raw, "bitcoin-redis.json"))
    topics = {}
    for path in sorted(glob.glob(os.path.join(raw, "bitcoin-topic-*.json"))):
        report = load(path)
        if report and report["runs"]:
            topics[report["topic"]] = report["runs"][0]
    if not redis or not redis["runs"] or not topics:
        return None
    r = redis["runs"][0]
    updates = r["deliveries"]

    def per_update(run):
        return round(run["bytes_per_delivery"] * run["deliveries"] / updates, 1) if updates else 0.0

    chosen = "redis/views/usd" if "redis/views/usd" in topics else "redis/bitcoin"
    result = {
        "updates": updates,
        "redis_client_bytes_per_update": round(r["bytes_per_delivery"], 1),
        # The topic client's bytes over the same feed updates (a delta or a value each).
        "topic_client_bytes_per_update": per_update(topics[chosen]),
        "topic": chosen,
        "per_topic": {t: {"bytes_per_update": per_update(run), "messages": run["deliveries"],
                          "bytes_per_message": round(run["bytes_per_delivery"], 1)}
                      for t, run in topics.items()},
        "redis_bytes_counted": "raw RESP bytes read from the socket (channel name and framing included)",
        "topic_bytes_counted": "WebSocket frame payload bytes (JSON messages, no WebSocket header)",
    }
    if chosen != "redis/views/usd":
        result["todo"] = ("the view redis/views/usd could not be created on this server: the topic "
                          "figure is for the source topic redis/bitcoin")
    if result["redis_client_bytes_per_update"]:
        result["ratio_topic_to_redis"] = round(
            result["topic_client_bytes_per_update"] / result["redis_client_bytes_per_update"], 4)
    return result


def pick(runs, system, subscribers, mode):
    return next((r for r in runs if r["system"] == system and r["subscribers"] == subscribers
                 and r["mode"] == mode), None)


def ratios(runs):
    out = {}
    for n in (10000, 1000):
        for mode in ("saturate", "fixed-rate"):
            ts = pick(runs, "topic-server", n, mode)
            if not ts:
                continue
            for other, key in (("nats", "nats"), ("node-bridge", "node_bridge"), ("limit", "limit"),
                               ("redis-ws-bridge", "redis_ws_bridge")):
                o = pick(runs, other, n, mode)
                if o and o["deliveries_per_s"]:
                    out[f"topic_server_to_{key}_deliveries_{mode}_{n}"] = round(
                        ts["deliveries_per_s"] / o["deliveries_per_s"], 3)
                if o and o["p99_ms"]:
                    out[f"topic_server_to_{key}_p99_{mode}_{n}"] = round(ts["p99_ms"] / o["p99_ms"], 3)
    return out


def targets(runs, idle, maxc, btc, rat):
    def verdict(ok):
        return None if ok is None else ("met" if ok else "missed")
    rows = []
    r = rat.get("topic_server_to_nats_deliveries_saturate_10000")
    p = rat.get("topic_server_to_nats_p99_saturate_10000")
    rows.append({"target": ">= 1.5x NATS deliveries/s at 10k (saturate)", "value": r,
                 "status": verdict(None if r is None else r >= 1.5)})
    rows.append({"target": "p99 <= NATS p99 at 10k (saturate)", "value": p,
                 "status": verdict(None if p is None else p <= 1.0)})
    pf = rat.get("topic_server_to_nats_p99_fixed-rate_10000")
    rows.append({"target": "p99 <= NATS p99 at 10k (fixed rate)", "value": pf,
                 "status": verdict(None if pf is None else pf <= 1.0)})
    r = rat.get("topic_server_to_node_bridge_deliveries_saturate_10000")
    rows.append({"target": ">= 10x Node bridge deliveries/s at 10k", "value": r,
                 "status": verdict(None if r is None else r >= 10)})
    r = rat.get("topic_server_to_limit_deliveries_saturate_10000")
    rows.append({"target": ">= 60% of the limit server at 10k", "value": r,
                 "status": verdict(None if r is None else r >= 0.6)})
    mem = [i for i in idle if i["system"] == "topic-server"]
    worst = max((i["rss_per_connection_bytes"] for i in mem), default=None)
    rows.append({"target": "<= 8 KiB RSS per idle subscribed connection", "value": worst,
                 "status": verdict(None if worst is None else worst <= 8192)})
    reached = maxc["reached"] if maxc else None
    rows.append({"target": "100k concurrent subscribed connections", "value": reached,
                 "status": verdict(None if reached is None else reached >= 100000)})
    b = btc.get("ratio_topic_to_redis") if btc else None
    rows.append({"target": "bitcoin: topic client <= 5% of Redis client bytes per update", "value": b,
                 "status": verdict(None if b is None else b <= 0.05)})
    return rows

# Issue 13: fanout-fixed, memory, market, views, connect-storm, and the ratios to uWebSockets.
KIB = 1024


def per_connection(rss, before, connected):
    return round((rss - before) / connected) if connected and rss and before else None


def fanout_fixed(runs):
    """The fixed-rate phase (5 updates/s, one message per frame) of each 10k fan-out run."""
    rows = []
    for r in runs:
        if r["subscribers"] >= 10000 and r["mode"] == "fixed-rate" and r["scenario"] == "fanout-100B":
            rows.append({k: r[k] for k in (
                "system", "subscribers", "rate", "deliveries_per_s", "server_cpu_us_per_delivery",
                "server_cpu_percent", "p50_ms", "p99_ms", "p999_ms", "messages_per_frame",
                "drained", "noisy")})
    return rows


def memory(raw, memory_after):
    """RSS per connection at 10k: idle, right after the saturating phase, and memory_after s later."""
    rows = []
    for path in sorted(glob.glob(os.path.join(raw, "fanout-*-10000.json"))):
        report = load(path)
        if not report:
            continue
        c = report["connect"]
        before, connected = c["server_rss_before_bytes"], c["connected"]
        phase = {r["mode"]: r for r in report["runs"]}
        sat, idle = phase.get("saturate"), phase.get("idle")
        rows.append({
            "system": report["system"], "connections": connected,
            "idle_bytes": round(c["rss_per_connection_bytes"]) if c["rss_per_connection_bytes"] else None,
            "after_saturate_bytes": per_connection(sat and sat["server_rss_bytes"], before, connected),
            "later_bytes": per_connection(idle and idle["server_rss_bytes"], before, connected),
            "later_seconds": round(idle["duration_s"], 1) if idle else memory_after,
            "server_rss_before_bytes": before,
        })
    order = {s: i for i, s in enumerate(SYSTEMS)}
    rows.sort(key=lambda r: order.get(r["system"], 99))
    return rows


def phase_row(report, run):
    return {
        "system": report["system"], "mode": run["mode"], "subscribers": run["subscribers"],
        "published_per_s": round(run["published_per_s"], 1),
        "deliveries_per_s": round(run["deliveries_per_s"]),
        "expected_deliveries": run["expected_deliveries"], "deliveries": run["deliveries"],
        "server_cpu_percent": round(run["server_cpu_percent"], 1),
        "server_cpu_us_per_delivery": round(run.get("server_cpu_us_per_delivery", 0.0), 3),
        "loadgen_cpu_percent": round(run["loadgen_cpu_percent"], 1),
        "other_cpu_percent": round(run["other_cpu_percent"], 1),
        "noisy": run["other_cpu_percent"] > NOISY_OTHER_CPU,
        "p50_ms": run["p50_ms"], "p99_ms": run["p99_ms"], "p999_ms": run["p999_ms"],
        "messages_per_frame": round(run["messages_per_frame"], 2),
        "bytes_per_delivery": round(run["bytes_per_delivery"], 1),
        "drained": run["drained"], "disconnects": run["disconnects"],
        "publish_stalled": run.get("publish_stalled", False),
        "decode_errors": run["decode_errors"], "first_problem": run["first_problem"],
        "connections_per_s": round(report["connect"]["connections_per_s"], 1),
    }


def drained_text(r):
    """The drained column: whether every owed message arrived, and whether the publisher stalled."""
    return ("yes" if r["drained"] else "no") + (", publisher stalled" if r.get("publish_stalled") else "")


def market(raw):
    rows, skipped = [], {}
    for path in sorted(glob.glob(os.path.join(raw, "market-*.json"))):
        report = load(path)
        if report:
            rows += [phase_row(report, run) for run in report["runs"]]
    for path in sorted(glob.glob(os.path.join(raw, "market-*.skipped"))):
        system = os.path.basename(path)[len("market-"):-len(".skipped")]
        with open(path) as f:
            skipped[system] = f.read().strip()
    order = {s: i for i, s in enumerate(SYSTEMS)}
    rows.sort(key=lambda r: (r["mode"] != "fixed-rate", order.get(r["system"], 99)))
    return {"runs": rows, "skipped": skipped} if rows or skipped else None


def views(raw):
    report = load(os.path.join(raw, "views-topic-server.json")) \
        if os.path.exists(os.path.join(raw, "views-topic-server.json")) else None
    if not report:
        return None
    rows = []
    for run in report["runs"]:
        row = phase_row(report, run)
        cores = run["server_cpu_percent"] / 100.0
        # Source updates taken in and passed through the three views, per second of server CPU.
        row["source_updates_per_core_s"] = round(run["published_per_s"] / cores) if cores > 0 else None
        rows.append(row)
    return {"runs": rows, "subscribers": report["connect"]["connected"]}


def connect_storm(raw):
    rows = []
    for path in sorted(glob.glob(os.path.join(raw, "storm-*.json"))):
        report = load(path)
        if not report:
            continue
        c = report["connect"]
        a = c.get("attempts") or {}
        rows.append({
            "system": report["system"], "requested": c["requested"], "connected": c["connected"],
            "seconds": round(c["seconds"], 3), "connections_per_s": round(c["connections_per_s"]),
            "refused": a.get("refused", 0), "reset": a.get("reset", 0),
            "timed_out": a.get("timed_out", 0), "other": a.get("other", 0),
            "retries": a.get("retries", 0), "gave_up": c["failed"], "first_error": c["first_error"],
        })
    order = {s: i for i, s in enumerate(SYSTEMS)}
    rows.sort(key=lambda r: order.get(r["system"], 99))
    return rows


def ratio(a, b):
    return round(a / b, 3) if a is not None and b else None


def uws_targets(runs, fixed, mem, mkt, vws, storm):
    """The figures of issue 13's table: topic-server against uWebSockets (and NATS for market)."""
    by = lambda rows, system, **kw: next((r for r in rows if r["system"] == system
                                          and all(r.get(k) == v for k, v in kw.items())), None)
    verdict = lambda ok: None if ok is None else ("met" if ok else "missed")
    rows = []

    noisy_rows = []

    def add(figure, ts, other, value, target, ok):
        # A verdict on phases measured while other processes were busy is marked as such.
        noisy = any(r and r.get("noisy") for r in noisy_rows)
        status = verdict(ok)
        rows.append({"figure": figure, "topic_server": ts, "uws": other, "value": value,
                     "target": target, "status": status and status + (" (noisy)" if noisy else ""),
                     "noisy": noisy})

    ts, uw = by(fixed, "topic-server"), by(fixed, "uws")
    noisy_rows = [ts, uw]
    r = ratio(ts and ts["server_cpu_us_per_delivery"], uw and uw["server_cpu_us_per_delivery"])
    add("fanout-fixed: server CPU µs per delivery", ts and ts["server_cpu_us_per_delivery"],
        uw and uw["server_cpu_us_per_delivery"], r, "<= 0.6x uws", None if r is None else r <= 0.6)
    r = ratio(ts and ts["p99_ms"], uw and uw["p99_ms"])
    add("fanout-fixed: p99 ms", ts and ts["p99_ms"], uw and uw["p99_ms"], r, "<= 0.5x uws",
        None if r is None else r <= 0.5)
    ts, uw = pick(runs, "topic-server", 10000, "saturate"), pick(runs, "uws", 10000, "saturate")
    noisy_rows = [ts, uw]
    r = ratio(ts and ts["deliveries_per_s"], uw and uw["deliveries_per_s"])
    add("single topic 10k saturating: deliveries/s", ts and ts["deliveries_per_s"],
        uw and uw["deliveries_per_s"], r, ">= 1.2x uws", None if r is None else r >= 1.2)
    r = ratio(ts and ts["server_cpu_us_per_delivery"], uw and uw["server_cpu_us_per_delivery"])
    add("single topic 10k saturating: server CPU µs per delivery", ts and ts["server_cpu_us_per_delivery"],
        uw and uw["server_cpu_us_per_delivery"], r, "<= 1.0x uws", None if r is None else r <= 1.0)
    mruns = mkt["runs"] if mkt else []
    ts, uw, na = (by(mruns, s, mode="saturate") for s in ("topic-server", "uws", "nats"))
    noisy_rows = [ts, uw, na]
    r, rn = (ratio(ts and ts["deliveries_per_s"], o and o["deliveries_per_s"]) for o in (uw, na))
    add("market saturating: deliveries/s (value: vs uws; vs NATS in target)", ts and ts["deliveries_per_s"],
        uw and uw["deliveries_per_s"], r, f">= 1.0x uws and >= 5x NATS (NATS: {rn})",
        None if r is None or rn is None else r >= 1.0 and rn >= 5)
    ts, uw, na = (by(mruns, s, mode="fixed-rate") for s in ("topic-server", "uws", "nats"))
    noisy_rows = [ts, uw, na]
    r, rn = (ratio(ts and ts["p99_ms"], o and o["p99_ms"]) for o in (uw, na))
    add("market fixed rate: p99 ms", ts and ts["p99_ms"], uw and uw["p99_ms"], r,
        f"<= 1.0x uws and <= 1.0x NATS (NATS: {rn})",
        None if r is None or rn is None else r <= 1.0 and rn <= 1.0)
    flood = by(vws["runs"], "topic-server", mode="flood") if vws else None
    noisy_rows = [flood]
    per_core = flood and flood["source_updates_per_core_s"]
    add("views: source updates/s per core (flood)", per_core, None, per_core, ">= 1.5M",
        None if per_core is None else per_core >= 1.5e6)
    ts, uw = by(mem, "topic-server"), by(mem, "uws")
    noisy_rows = []
    add("RSS per idle subscribed connection (bytes)", ts and ts["idle_bytes"], uw and uw["idle_bytes"],
        ratio(ts and ts["idle_bytes"], uw and uw["idle_bytes"]), "<= 2 KiB",
        None if not ts or ts["idle_bytes"] is None else ts["idle_bytes"] <= 2 * KIB)
    later = ts and ts["later_bytes"]
    add(f"RSS per connection {ts['later_seconds'] if ts else '?'} s after saturating (bytes)", later,
        uw and uw["later_bytes"], ratio(later, uw and uw["later_bytes"]), "<= 3 KiB (30 s after)",
        None if later is None else later <= 3 * KIB)
    ts, uw = by(storm, "topic-server"), by(storm, "uws")
    failed = ts and ts["refused"] + ts["reset"] + ts["timed_out"] + ts["other"]
    r = ratio(ts and ts["seconds"], uw and uw["seconds"])
    add("connect-storm: seconds until 10k subscribed (value: vs uws)", ts and ts["seconds"],
        uw and uw["seconds"], r, f"no failed attempts (topic-server: {failed}) and <= 1.0x uws",
        None if r is None or failed is None else failed == 0 and r <= 1.0
        and ts["connected"] == ts["requested"])
    return rows


def headline(result):
    """One line of bench/results/history.jsonl: the run's headline figures per system and scenario."""
    figures = {}

    def put(system, key, value):
        if value is not None:
            figures.setdefault(system, {})[key] = value
    for r in result["runs"]:
        if r["subscribers"] >= 10000 and r["mode"] == "saturate":
            put(r["system"], "fanout_10k_saturate_deliveries_per_s", r["deliveries_per_s"])
            put(r["system"], "fanout_10k_saturate_cpu_us_per_delivery", r["server_cpu_us_per_delivery"])
            put(r["system"], "fanout_10k_saturate_p99_ms", r["p99_ms"])
    for r in result["fanout_fixed"]:
        put(r["system"], "fanout_fixed_cpu_us_per_delivery", r["server_cpu_us_per_delivery"])
        put(r["system"], "fanout_fixed_p99_ms", r["p99_ms"])
    for r in result["memory"]:
        put(r["system"], "rss_idle_bytes_per_connection", r["idle_bytes"])
        put(r["system"], "rss_after_saturate_bytes_per_connection", r["after_saturate_bytes"])
        put(r["system"], "rss_later_bytes_per_connection", r["later_bytes"])
    for r in (result["market"] or {}).get("runs", []):
        mode = r["mode"].replace("-", "_")
        put(r["system"], f"market_{mode}_deliveries_per_s", r["deliveries_per_s"])
        put(r["system"], f"market_{mode}_p99_ms", r["p99_ms"])
        put(r["system"], f"market_{mode}_cpu_us_per_delivery", r["server_cpu_us_per_delivery"])
    for r in (result["views"] or {}).get("runs", []):
        mode = r["mode"].replace("-", "_")
        put("topic-server", f"views_{mode}_source_updates_per_s", r["published_per_s"])
        put("topic-server", f"views_{mode}_deliveries_per_s", r["deliveries_per_s"])
    for r in result["connect_storm"]:
        put(r["system"], "connect_storm_seconds", r["seconds"])
        put(r["system"], "connect_storm_failed_attempts",
            r["refused"] + r["reset"] + r["timed_out"] + r["other"])
    return {"date": result["generated_at"], "commit": result["commit"], "command": result["command"],
            "elapsed_s": result["elapsed_s"], "figures": figures}


def append_history(path, line):
    with open(path, "a") as f:
        f.write(json.dumps(line, sort_keys=True) + "\n")


def read_history(path):
    lines = []
    try:
        with open(path) as f:
            for number, text in enumerate(f, 1):
                if text.strip():
                    try:
                        lines.append(json.loads(text))
                    except ValueError:
                        print(f"warning: {path}:{number} is not JSON: skipped", file=sys.stderr)
    except OSError:
        pass
    return lines


# The trend chart: one panel per figure, one line per system.
HISTORY_PANELS = [
    ("fanout_fixed_cpu_us_per_delivery", "fanout-fixed: server CPU µs / delivery"),
    ("fanout_10k_saturate_deliveries_per_s", "10k saturating: deliveries/s"),
    ("market_saturate_deliveries_per_s", "market saturating: deliveries/s"),
    ("rss_idle_bytes_per_connection", "RSS per idle connection, bytes"),
]


def pyplot(what):
    """matplotlib's pyplot for drawing WHAT off-screen, or None (with a warning) without it."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"warning: matplotlib missing: no {what}", file=sys.stderr)
        return None
    return plt


def history_chart(history, path):
    plt = pyplot("history chart")
    if plt is None:
        return False
    if not history:
        return False
    fig, axes = plt.subplots(2, 2, figsize=(13, 8))
    labels = [f"{h['date'][:16]}\n{h['commit'][:8]}" for h in history]
    for ax, (key, title) in zip(axes.flat, HISTORY_PANELS):
        for system in SYSTEMS:
            points = [(i, h["figures"].get(system, {}).get(key)) for i, h in enumerate(history)]
            points = [(i, v) for i, v in points if v is not None]
            if points:
                ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=system)
        ax.set_title(title, fontsize=10)
        ax.set_xticks(range(len(history)))
        ax.set_xticklabels(labels, fontsize=6, rotation=30)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("scripts/bench.sh full runs over time (bench/results/history.jsonl)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return True


def fmt_kib(n):
    return "-" if n is None else f"{n / KIB:.1f} KiB"


def issue13_markdown(result):
    lines = []
    fixed = result["fanout_fixed"]
    if fixed:
        lines += ["", "## fanout-fixed: one topic, 10k subscribers, 5 updates/s", "",
                  "The fixed-rate phase of the 10k fan-out run: one message per frame.", "",
                  "| system | deliveries/s | server CPU µs/delivery | server CPU % | p50 ms | p99 ms "
                  "| p99.9 ms | msgs/frame |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for r in fixed:
            flag = ("" if r["drained"] else " (not drained)") + (" †" if r["noisy"] else "")
            lines.append(f"| {r['system']}{flag} | {r['deliveries_per_s']:,.0f} | "
                         f"{r['server_cpu_us_per_delivery']:.2f} | {r['server_cpu_percent']:.0f} | "
                         f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['p999_ms']:.1f} | "
                         f"{r['messages_per_frame']:.2f} |")
    mkt = result["market"]
    if mkt:
        lines += ["", "## market: 2,000 topics, 10k subscribers on 20 each", "",
                  "Ticks on md/SYMBOL in turn; topic server: one selector set per subscriber; NATS: 20 "
                  "SUBs; limit and uws: `/?topics=` with 20.", "",
                  "| system | mode | published/s | deliveries/s | expected | p50 ms | p99 ms "
                  "| server CPU µs/delivery | server CPU % | msgs/frame | bytes/delivery | drained |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        for r in mkt["runs"]:
            lines.append(f"| {r['system']}{' †' if r['noisy'] else ''} | {r['mode']} | "
                         f"{r['published_per_s']:,.0f} | {r['deliveries_per_s']:,.0f} | "
                         f"{r['expected_deliveries']:,} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
                         f"{r['server_cpu_us_per_delivery']:.2f} | {r['server_cpu_percent']:.0f} | "
                         f"{r['messages_per_frame']:.1f} | {r['bytes_per_delivery']:.1f} | "
                         f"{drained_text(r)} |")
        for system, why in mkt["skipped"].items():
            lines.append(f"\n- {system}: skipped ({why}).")
    vws = result["views"]
    if vws:
        lines += ["", f"## views: the market feed through three views (topic server only; "
                  f"{vws['subscribers']:,} subscribers on their symbols' reference topics)", "",
                  "| mode | source updates/s | per core-second of server CPU | deliveries/s | p99 ms "
                  "| server CPU % | drained |", "|---|---:|---:|---:|---:|---:|---|"]
        for r in vws["runs"]:
            per_core = r["source_updates_per_core_s"]
            lines.append(f"| {r['mode']}{' †' if r['noisy'] else ''} | {r['published_per_s']:,.0f} | "
                         f"{'-' if per_core is None else f'{per_core:,.0f}'} | {r['deliveries_per_s']:,.0f} | "
                         f"{r['p99_ms']:.1f} | {r['server_cpu_percent']:.0f} | "
                         f"{drained_text(r)} |")
    mem = result["memory"]
    if mem:
        later = mem[0]["later_seconds"]
        lines += ["", "## memory: server RSS per connection at 10k", "",
                  f"| system | idle, subscribed | right after saturating | {later} s later |",
                  "|---|---:|---:|---:|"]
        for r in mem:
            lines.append(f"| {r['system']} | {fmt_kib(r['idle_bytes'])} | {fmt_kib(r['after_saturate_bytes'])} "
                         f"| {fmt_kib(r['later_bytes'])} |")
    storm = result["connect_storm"]
    if storm:
        lines += ["", "## connect-storm: 10k clients connecting at once", "",
                  "Time from the first attempt until all are subscribed; failed attempts are retried "
                  "after 100 ms (doubling, up to 5 times).", "",
                  "| system | subscribed | seconds | refused | reset | timed out | other | retries | gave up |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in storm:
            lines.append(f"| {r['system']} | {r['connected']:,} of {r['requested']:,} | {r['seconds']:.2f} | "
                         f"{r['refused']} | {r['reset']} | {r['timed_out']} | {r['other']} | "
                         f"{r['retries']} | {r['gave_up']} |")
    targets = result["targets_issue13"]
    if targets:
        lines += ["", "## Against uWebSockets (issue 13 targets)", "",
                  "| figure | topic-server | uws | ratio | target | status |", "|---|---:|---:|---:|---|---|"]
        for t in targets:
            lines.append(f"| {t['figure']} | {t['topic_server']} | {t['uws']} | {t['value']} | "
                         f"{t['target']} | {t['status'] or 'not measured'} |")
    present = {r["system"] for r in result["runs"]}
    notes = [f"- {s}: {LIMITATIONS[s]}" for s in SYSTEMS if s in present and s in LIMITATIONS]
    if notes:
        lines += ["", "What the baselines do not do:", ""] + notes
    return lines


# Cluster mode (issue 11). Configurations of the overhead test, in the order they are shown.
CLUSTER_CONFIGURATIONS = ["one-node", "cluster-1", "cluster-3"]


def node_and_redis(run):
    """Server CPU and RSS of a phase split into the topic-server nodes and the rest (Redis)."""
    procs = run.get("server_processes") or []
    nodes = [p for p in procs if p.get("name") == "topic-server"]
    others = [p for p in procs if p.get("name") != "topic-server"]
    total = lambda ps, k: sum(p[k] for p in ps)
    return {
        "nodes": len(nodes),
        "nodes_cpu_percent": total(nodes, "cpu_percent"),
        "redis_cpu_percent": total(others, "cpu_percent"),
        "nodes_rss_bytes": total(nodes, "rss_bytes"),
        "redis_rss_bytes": total(others, "rss_bytes"),
    }


def cpu_us_per_delivery(cpu_percent, run):
    d = run["deliveries"]
    return cpu_percent / 100.0 * run["duration_s"] * 1e6 / d if d else 0.0


def cluster_overhead(raw):
    """The 10k-subscriber runs (cluster-overhead-*) and the latency probes (cluster-probe-*)."""
    rows = []
    paths = sorted(glob.glob(os.path.join(raw, "cluster-overhead-*.json"))
                   + glob.glob(os.path.join(raw, "cluster-probe-*.json")))
    for path in paths:
        m = re.match(r"cluster-(?:overhead|probe)-(.+)-(\d+)\.json$", os.path.basename(path))
        report = load(path)
        if not m or not report:
            continue
        for run in report["runs"]:
            split = node_and_redis(run)
            rows.append({
                "configuration": m.group(1), "round": int(m.group(2)), "mode": run["mode"],
                "subscribers": run["subscribers"], "deliveries_per_s": round(run["deliveries_per_s"]),
                "p50_ms": run["p50_ms"], "p99_ms": run["p99_ms"], "p999_ms": run["p999_ms"],
                "published_per_s": round(run["published_per_s"], 1),
                "messages_per_frame": round(run["messages_per_frame"], 1),
                "nodes_cpu_percent": round(split["nodes_cpu_percent"], 1),
                "redis_cpu_percent": round(split["redis_cpu_percent"], 1),
                "nodes_cpu_us_per_delivery": round(cpu_us_per_delivery(split["nodes_cpu_percent"], run), 3),
                "server_cpu_us_per_delivery": round(cpu_us_per_delivery(run["server_cpu_percent"], run), 3),
                "loadgen_cpu_percent": round(run["loadgen_cpu_percent"], 1),
                "other_cpu_percent": round(run["other_cpu_percent"], 1),
                "noisy": run["other_cpu_percent"] > NOISY_OTHER_CPU,
                "drained": run["drained"], "disconnects": run["disconnects"],
                "publish_rejections": run["publish_rejections"], "first_problem": run["first_problem"],
            })
    order = {c: i for i, c in enumerate(CLUSTER_CONFIGURATIONS)}
    rows.sort(key=lambda r: (-r["subscribers"], r["mode"] != "fixed-rate",
                             order.get(r["configuration"], 99), r["round"]))
    means = {}
    for r in rows:
        means.setdefault((r["configuration"], r["mode"], r["subscribers"]), []).append(r)
    summary = []
    for (configuration, mode, subscribers), every in means.items():
        # Rounds measured while other processes were busy understate the system: left out of
        # the mean when a quiet round exists.
        rs = [r for r in every if not r["noisy"]] or every
        mean = lambda k: sum(r[k] for r in rs) / len(rs)
        summary.append({"configuration": configuration, "mode": mode, "subscribers": subscribers,
                        "rounds": len(rs),
                        "noisy_rounds_left_out": len(every) - len(rs),
                        "all_noisy": all(r["noisy"] for r in rs),
                        **{k: round(mean(k), 3) for k in (
                            "deliveries_per_s", "p50_ms", "p99_ms", "messages_per_frame",
                            "nodes_cpu_us_per_delivery", "server_cpu_us_per_delivery")}})
    return rows, summary


def cluster_connections(raw):
    merged = load(os.path.join(raw, "cluster-connections-merged.json")) \
        if os.path.exists(os.path.join(raw, "cluster-connections-merged.json")) else None
    if not merged or not merged["runs"]:
        return None
    run, c = merged["runs"][0], merged["connect"]
    split = node_and_redis(run)
    connected = c["connected"]

    fds = []
    try:
        with open(os.path.join(raw, "cluster-connections-fds.txt")) as f:
            fds = [int(line.split()[1]) for line in f if line.strip()]
    except (OSError, ValueError, IndexError):
        pass
    base = read_int(raw, "cluster-connections-rss-base.txt")
    per = lambda n: round(n / connected) if connected else None
    # The observers' own CPU figures cover their whole observation; the script sampled their
    # CPU over the publishing window itself.
    ticks = read_int(raw, "cluster-connections-observer-ticks.txt")
    observers_cpu = ticks / 100.0 / run["duration_s"] * 100.0 if ticks is not None and run["duration_s"] else None
    other_cpu = (run["machine_cpu_percent"] - run["server_cpu_percent"] - observers_cpu
                 if observers_cpu is not None else run["other_cpu_percent"])
    return {
        "requested": c["requested"], "connected": connected, "failed": c["failed"],
        "first_error": c["first_error"], "nodes": split["nodes"],
        "node_descriptors": fds, "loadgen_processes": merged["processes"] - 1,
        "ramp_seconds": read_int(raw, "cluster-connections-ramp-seconds.txt"),
        "published": run["published"], "rate_per_s": run["rate"], "duration_s": round(run["duration_s"], 1),
        "deliveries": run["deliveries"], "expected_deliveries": run["expected_deliveries"],
        "delivery_ratio": round(run["deliveries"] / run["expected_deliveries"], 6)
        if run["expected_deliveries"] else None,
        "p50_ms": run["p50_ms"], "p99_ms": run["p99_ms"], "p999_ms": run["p999_ms"], "max_ms": run["max_ms"],
        "latency_samples": run["latency_samples"],
        "nodes_rss_bytes": split["nodes_rss_bytes"], "redis_rss_bytes": split["redis_rss_bytes"],
        "nodes_rss_before_bytes": base,
        # The servers' RSS summed over connections, and the part the connections added.
        "rss_per_connection_bytes": per(split["nodes_rss_bytes"]),
        "added_rss_per_connection_bytes": per(split["nodes_rss_bytes"] - base) if base else None,
        "loadgen_rss_per_connection_bytes": per(c["loadgen_rss_bytes"]),
        "nodes_cpu_percent": round(split["nodes_cpu_percent"], 1),
        "redis_cpu_percent": round(split["redis_cpu_percent"], 1),
        "disconnects": run["disconnects"], "decode_errors": run["decode_errors"],
        "first_problem": run["first_problem"],
        "machine_cpu_percent": round(run["machine_cpu_percent"], 1),
        "loadgen_cpu_percent": round(observers_cpu, 1) if observers_cpu is not None else None,
        "other_cpu_percent": round(max(other_cpu, 0.0), 1),
        "messages_per_frame": round(run["messages_per_frame"], 2),
    }


def cluster(raw):
    rows, summary = cluster_overhead(raw)
    conn = cluster_connections(raw)
    if not rows and not conn:
        return None
    mode = "cluster"
    try:
        with open(os.path.join(raw, "cluster-mode.txt")) as f:
            mode = f.read().strip()
    except OSError:
        pass
    pick_mean = lambda c, m, n=10000: next((s for s in summary if s["configuration"] == c
                                            and s["mode"] == m and s["subscribers"] == n), None)
    one_sat, three_sat = pick_mean("one-node", "saturate"), pick_mean("cluster-3", "saturate")
    one_fix, three_fix = pick_mean("one-node", "fixed-rate"), pick_mean("cluster-3", "fixed-rate")
    one_probe, three_probe = pick_mean("one-node", "fixed-rate", 100), pick_mean("cluster-3", "fixed-rate", 100)
    ratio = (round(three_sat["deliveries_per_s"] / one_sat["deliveries_per_s"], 3)
             if one_sat and three_sat and one_sat["deliveries_per_s"] else None)
    p99_gap = round(three_fix["p99_ms"] - one_fix["p99_ms"], 2) if one_fix and three_fix else None
    probe_gap = round(three_probe["p99_ms"] - one_probe["p99_ms"], 2) if one_probe and three_probe else None
    verdict = lambda ok: None if ok is None else ("met" if ok else "missed")
    reached = conn["connected"] if conn else None
    targets = [
        {"target": "3 cluster nodes >= 70% of one node's deliveries/s (10k subscribers, saturate)",
         "value": ratio, "status": verdict(None if ratio is None else ratio >= 0.7)},
        {"target": "p99 within 2 ms of one node's at a fixed rate (10k subscribers)",
         "value": p99_gap, "status": verdict(None if p99_gap is None else p99_gap <= 2.0)},
        {"target": "p99 within 2 ms of one node's at a fixed rate (latency probe: 100 subscribers)",
         "value": probe_gap, "status": verdict(None if probe_gap is None else probe_gap <= 2.0)},
        {"target": "100k concurrent subscribed connections across >= 6 nodes", "value": reached,
         "status": verdict(None if reached is None else reached >= 100000 and conn["nodes"] >= 6)},
    ]
    return {"mode": mode, "overhead": rows, "overhead_means": summary, "connections": conn,
            "ratio_deliveries_saturate": ratio, "p99_gap_fixed_rate_ms": p99_gap,
            "p99_gap_probe_ms": probe_gap, "targets": targets}


def cluster_markdown(c):
    lines = ["## Cluster mode (issue 11)", ""]
    if c["mode"] != "cluster":
        lines += ["**Harness check only** (`--cluster-independent`): the nodes ran without "
                  "`--cluster`, so only the publishing node's subscribers received.", ""]
    if c["overhead"]:
        lines += ["### Overhead: one node vs cluster nodes on one Redis", "",
                  "| configuration | subscribers | round | mode | deliveries/s | p50 ms | p99 ms | p99.9 ms "
                  "| msgs/frame | nodes CPU % | Redis CPU % | nodes CPU µs/delivery | with Redis "
                  "| loadgen CPU % | other CPU % |",
                  "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in c["overhead"]:
            flag = ("" if r["drained"] else " (not drained)") + (" †" if r["noisy"] else "")
            lines.append(
                f"| {r['configuration']} | {r['subscribers']:,} | {r['round']} | {r['mode']}{flag} | "
                f"{r['deliveries_per_s']:,} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['p999_ms']:.1f} | "
                f"{r['messages_per_frame']:.1f} | {r['nodes_cpu_percent']:.0f} | "
                f"{r['redis_cpu_percent']:.0f} | {r['nodes_cpu_us_per_delivery']:.3f} | "
                f"{r['server_cpu_us_per_delivery']:.3f} | {r['loadgen_cpu_percent']:.0f} | "
                f"{r['other_cpu_percent']:.0f} |")
        lines += ["", "Means over the quiet rounds († rounds left out; all rounds where none was quiet, "
                  "marked †):", "", "| configuration | subscribers | mode | rounds | deliveries/s | p50 ms "
                  "| p99 ms | msgs/frame | nodes CPU µs/delivery | with Redis |",
                  "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
        for s in c["overhead_means"]:
            flag = " †" if s["all_noisy"] else ""
            lines.append(f"| {s['configuration']} | {s['subscribers']:,} | {s['mode']}{flag} | {s['rounds']} "
                         f"| {s['deliveries_per_s']:,.0f} | {s['p50_ms']:.1f} | {s['p99_ms']:.2f} "
                         f"| {s['messages_per_frame']:.1f} | {s['nodes_cpu_us_per_delivery']:.3f} "
                         f"| {s['server_cpu_us_per_delivery']:.3f} |")
    k = c["connections"]
    if k:
        lines += ["", f"### {k['connected']:,} subscribed connections over {k['nodes']} cluster nodes", "",
                  f"- connected {k['connected']:,} of {k['requested']:,} ({k['failed']} failed"
                  + (f": {k['first_error']}" if k["first_error"] else "") + f"), "
                  f"{k['loadgen_processes']} loadgen processes, ramp {k['ramp_seconds']} s; "
                  f"descriptors per node: {', '.join(str(n) for n in k['node_descriptors'])}",
                  f"- {k['published']} updates at {k['rate_per_s']}/s: {k['deliveries']:,} deliveries of "
                  f"{k['expected_deliveries']:,} expected, ratio **{k['delivery_ratio']}**",
                  f"- publish→receive p50 {k['p50_ms']:.1f} ms, **p99 {k['p99_ms']:.1f} ms**, "
                  f"p99.9 {k['p999_ms']:.1f} ms, max {k['max_ms']:.1f} ms ({k['latency_samples']:,} samples)",
                  f"- nodes' RSS {fmt_bytes(k['nodes_rss_bytes'])}: **{fmt_bytes(k['rss_per_connection_bytes'])} "
                  f"per connection** ({fmt_bytes(k['added_rss_per_connection_bytes'])} above the idle nodes); "
                  f"Redis {fmt_bytes(k['redis_rss_bytes'])}; loadgen {fmt_bytes(k['loadgen_rss_per_connection_bytes'])} "
                  "per connection",
                  f"- CPU while updating (percent of one core; the machine has two): nodes "
                  f"{k['nodes_cpu_percent']}%, Redis {k['redis_cpu_percent']}%, loadgens {k['loadgen_cpu_percent'] if k['loadgen_cpu_percent'] is not None else '?'}%, "
                  f"other processes {k['other_cpu_percent']}%, machine {k['machine_cpu_percent']}%; "
                  f"{k['messages_per_frame']} messages per frame; disconnects {k['disconnects']}, "
                  f"decode errors {k['decode_errors']}"]
    lines += ["", "| target (issue 11) | value | status |", "|---|---:|---|"]
    for t in c["targets"]:
        lines.append(f"| {t['target']} | {t['value']} | {t['status'] or 'not measured'} |")
    return "\n".join(lines) + "\n"


def write_cluster(raw, c):
    with open(os.path.join(raw, "cluster.json"), "w") as f:
        json.dump(c, f, indent=2)
        f.write("\n")
    with open(os.path.join(raw, "cluster.md"), "w") as f:
        f.write(cluster_markdown(c))
    print("\n" + cluster_markdown(c))
    print(f"wrote {raw}/cluster.json, cluster.md")



def fmt_bytes(n):
    if not n:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def markdown(result):
    lines = [f"# Benchmark results ({result['generated_at']})", "",
             f"Command: `{result['command']}`. Machine: {result['machine'].get('cpus')} CPUs "
             f"({result['machine'].get('cpu_model', '?')}), "
             f"{fmt_bytes(result['machine'].get('memory_bytes', 0))} RAM, "
             f"{result['machine'].get('fd_limit_per_process')} open files per process. "
             "Everything (servers, Redis, loadgen) shares the same 2 cores; see docs/performance.md.", "",
             "## Fan-out, 100-byte payload, one topic", "",
             "| system | subscribers | mode | deliveries/s | p50 ms | p99 ms | p99.9 ms | bytes/delivery "
             "| msgs/frame | server RSS | server CPU % | loadgen CPU % | other CPU % | conn/s |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["runs"]:
        flag = ("" if r["drained"] else " (not drained)") + (" †" if r.get("noisy") else "") \
            + (" (publisher stalled)" if r.get("publish_stalled") else "")
        lines.append(
            f"| {r['system']} | {r['subscribers']} | {r['mode']}{flag} | {r['deliveries_per_s']:,.0f} | "
            f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['p999_ms']:.1f} | {r['bytes_per_delivery']:.1f} | "
            f"{r['messages_per_frame']:.1f} | {fmt_bytes(r['server_rss_bytes'])} | "
            f"{r['server_cpu_percent']:.0f} | {r['loadgen_cpu_percent']:.0f} | {r['other_cpu_percent']:.0f} | "
            f"{r['connections_per_s']:,.0f} |")
    noisy = [r for r in result["runs"] if r.get("noisy")]
    if noisy:
        lines += ["", f"† {len(noisy)} phase(s) ran while other processes used more than "
                  f"{NOISY_OTHER_CPU:.0f}% of a core (column 'other CPU %'): their figures understate "
                  "the system; rerun on a quiet machine."]
    lines += ["", "## Ratios", ""]
    for k, v in result["ratios"].items():
        lines.append(f"- `{k}`: {v}")
    lines += ["", "## Idle memory", "", "| system | connections | RSS per connection | measured |",
              "|---|---:|---:|---|"]
    for i in result["idle_memory"]:
        lines.append(f"| {i['system']} | {i['connections']} | {fmt_bytes(i['rss_per_connection_bytes'])} | "
                     f"{'yes' if i['measured'] else 'extrapolated'} |")
    if result.get("max_connections"):
        m = result["max_connections"]
        lines += ["", "## Largest number of subscribed connections", "",
                  f"topic-server: **{m['reached']}** subscribed connections (peak server descriptors "
                  f"{m['server_peak_fds']}); stopped by {m['stopped_by']}."]
    if result.get("bitcoin"):
        b = result["bitcoin"]
        lines += ["", "## Bitcoin feed through the pipeline", "",
                  f"- updates: {b['updates']}",
                  f"- Redis client bytes per update: {b['redis_client_bytes_per_update']}",
                  f"- topic client bytes per update ({b['topic']}): {b['topic_client_bytes_per_update']}",
                  f"- ratio: {b.get('ratio_topic_to_redis')}"]
        for t, v in b["per_topic"].items():
            lines.append(f"- {t}: {v['bytes_per_update']} bytes per update, {v['messages']} messages "
                         f"of {v['bytes_per_message']} bytes")
        if b.get("todo"):
            lines.append(f"- TODO: {b['todo']}")
    lines += ["", "## Targets (issue 5)", "", "| target | value | status |", "|---|---:|---|"]
    for t in result["targets"]:
        lines.append(f"| {t['target']} | {t['value']} | {t['status'] or 'not measured'} |")
    lines += issue13_markdown(result)
    if result.get("cluster"):
        lines += ["", cluster_markdown(result["cluster"]).rstrip("\n")]
    return "\n".join(lines) + "\n"


def chart(result, path):
    plt = pyplot("chart")
    if plt is None:
        return False
    systems = [s for s in SYSTEMS if any(r["system"] == s for r in result["runs"])]
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    width = 0.38
    for ax, (metric, title, log) in zip(axes, (
            ("deliveries_per_s", "Saturating: deliveries per second", False),
            ("p99_ms", "Fixed rate (50k deliveries/s): p99 latency, ms", True))):
        mode = "saturate" if metric == "deliveries_per_s" else "fixed-rate"
        for i, n in enumerate((1000, 10000)):
            values = []
            for s in systems:
                r = pick(result["runs"], s, n, mode)
                values.append(r[metric] if r else 0)
            xs = [x + (i - 0.5) * width for x in range(len(systems))]
            bars = ax.bar(xs, values, width, label=f"{n:,} subscribers")
            for b, v in zip(bars, values):
                label = f"{v/1e6:.2f}M" if metric == "deliveries_per_s" else f"{v:.0f}"
                ax.annotate(label, (b.get_x() + b.get_width() / 2, b.get_height()),
                            ha="center", va="bottom", fontsize=7)
        ax.set_xticks(range(len(systems)))
        ax.set_xticklabels(systems, rotation=15)
        ax.set_title(title)
        if log:
            ax.set_yscale("log")
        ax.legend()
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"Fan-out of a 100-byte payload on one topic, 2 cores shared with loadgen "
                 f"({result['generated_at'][:10]}, {result['command']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--raw", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--quick", default="0")
    parser.add_argument("--command", default="scripts/bench.sh")
    parser.add_argument("--elapsed", type=int, default=0)
    parser.add_argument("--fd-limit", default="")
    parser.add_argument("--commit", default="unknown", help="commit measured (-dirty: with changes)")
    parser.add_argument("--memory-after", type=float, default=30,
                        help="seconds between the saturating phase and the later memory reading")
    parser.add_argument("--history", help="append the headline figures to this JSON-lines file "
                        "and draw history.png beside it (full runs only)")
    parser.add_argument("--cluster-only", action="store_true",
                        help="summarise the cluster benchmarks only (into the run directory)")
    args = parser.parse_args()

    clu = cluster(args.raw)
    if clu:
        write_cluster(args.raw, clu)
    if args.cluster_only:
        return

    runs, connects, idle = fanout(args.raw)
    fd_limit = int(args.fd_limit) if args.fd_limit.isdigit() else None
    maxc = max_connections(args.raw, idle, fd_limit)
    btc = bitcoin(args.raw)
    rat = ratios(runs)
    result = {
        "generated_at": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": args.command, "quick": args.quick == "1", "elapsed_s": args.elapsed,
        "raw_dir": os.path.relpath(args.raw, os.path.dirname(os.path.dirname(os.path.abspath(args.out)))),
        "machine": machine(fd_limit),
        "runs": runs, "connect": connects, "bitcoin": btc or {}, "idle_memory": idle,
        "max_connections": maxc, "ratios": rat,
    }
    if clu:
        result["cluster"] = clu
    result["commit"] = args.commit
    result["fanout_fixed"] = fanout_fixed(runs)
    result["memory"] = memory(args.raw, args.memory_after)
    result["market"] = market(args.raw)
    result["views"] = views(args.raw)
    result["connect_storm"] = connect_storm(args.raw)
    result["targets"] = targets(runs, idle, maxc, btc, rat)
    result["targets_issue13"] = uws_targets(runs, result["fanout_fixed"], result["memory"],
                                            result["market"], result["views"], result["connect_storm"])
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "latest.json"), "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    with open(os.path.join(args.out, "latest.md"), "w") as f:
        f.write(markdown(result))
    chart(result, os.path.join(args.out, "latest.png"))

    print("\nRatios (topic-server / other), 10k subscribers:")
    for name, key in (("NATS", "nats"), ("Node bridge", "node_bridge"), ("limit", "limit")):
        sat = rat.get(f"topic_server_to_{key}_deliveries_saturate_10000")
        p99 = rat.get(f"topic_server_to_{key}_p99_fixed-rate_10000")
        print(f"  topic-server/{name}: deliveries/s (saturate) {sat}, p99 (fixed rate) {p99}")
    print("\nAgainst uWebSockets (issue 13):")
    for t in result["targets_issue13"]:
        print(f"  {t['status'] or 'not measured':>12}  {t['figure']}: topic-server {t['topic_server']}, "
              f"uws {t['uws']}, ratio {t['value']} (target {t['target']})")
    if args.history:
        append_history(args.history, headline(result))
        chart_path = os.path.join(os.path.dirname(os.path.abspath(args.history)), "history.png")
        if history_chart(read_history(args.history), chart_path):
            print(f"appended to {args.history}; drew {chart_path}")
        else:
            print(f"appended to {args.history}")
    print("\nTargets:")
    for t in result["targets"]:
        print(f"  {t['status'] or 'not measured':>12}  {t['target']}: {t['value']}")
    print(f"\nwrote {args.out}/latest.json, latest.md" +
          (", latest.png" if os.path.exists(os.path.join(args.out, "latest.png")) else ""))


if __name__ == "__main__":
    main()
