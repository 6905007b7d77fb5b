#!/usr/bin/env python3
"""Draws a soak run's samples.csv (written by the `soak` binary) as one PNG: resident memory and
open descriptors of every watched process, the topic servers' queued bytes, and the delivery
rate with the p99 latency, against time; the end of the warm-up is marked.

Usage: soak_plot.py SAMPLES.csv OUT.png [TITLE]
"""
import csv
import sys


def columns(rows, suffix):
    """The process names that have a column NAME_suffix, in header order."""
    return [k[: -len(suffix)] for k in rows[0].keys() if k.endswith(suffix) and k != "soak" + suffix]


def series(rows, key, scale=1.0):
    """(minutes, value) pairs of a column, skipping empty cells (a process that had gone)."""
    xs, ys = [], []
    for r in rows:
        if r.get(key, "") != "":
            xs.append(float(r["elapsed_s"]) / 60.0)
            ys.append(float(r[key]) * scale)
    return xs, ys


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    with open(sys.argv[1], newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        sys.exit(f"{sys.argv[1]} has no samples")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    warmup_end = next((float(r["elapsed_s"]) / 60.0 for r in rows if r["phase"] == "measure"), None)
    fig, axes = plt.subplots(2, 2, figsize=(13, 8), sharex=True)
    (rss, fds), (queued, flow) = axes
    for name in columns(rows, "_rss_bytes"):
        rss.plot(*series(rows, name + "_rss_bytes", 1 / 1048576), label=name)
        fds.plot(*series(rows, name + "_fds"), label=name + " descriptors")
    # Beside descriptors: the sessions a topic server holds (connected, or waiting to be
    # resumed) and its connections, on the same scale.
    for name in columns(rows, "_sessions"):
        xs, ys = series(rows, name + "_sessions")
        if xs:
            fds.plot(xs, ys, linestyle="--", label=name + " sessions")
    for name in columns(rows, "_queued_bytes"):
        xs, ys = series(rows, name + "_queued_bytes", 1 / 1024)
        if xs:
            queued.plot(xs, ys, label=name)
    flow.plot(*series(rows, "deliveries_per_s"), color="tab:blue", label="deliveries/s")
    flow.set_ylabel("deliveries/s")
    latency = flow.twinx()
    latency.plot(*series(rows, "p99_ms"), color="tab:red", alpha=0.6, label="p99 (ms)")
    latency.set_ylabel("p99 publish→receive, ms")
    latency.set_ylim(bottom=0)
    for ax, title, unit in (
        (rss, "Resident memory", "MiB"),
        (fds, "Open descriptors and sessions", "count"),
        (queued, "Bytes queued for sessions", "KiB"),
        (flow, "Deliveries and p99 latency (source and mirror subscribers)", None),
    ):
        ax.set_title(title)
        if unit:
            ax.set_ylabel(unit)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        if warmup_end is not None:
            ax.axvline(warmup_end, color="grey", linestyle="--", linewidth=1)
        ax.legend(loc="lower right", fontsize=8)
    for ax in (queued, flow):
        ax.set_xlabel("minutes (dashed: end of the warm-up)")
    title = sys.argv[3] if len(sys.argv) > 3 else "soak"
    fig.suptitle(f"Soak: {title}", fontsize=11)
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=100)


if __name__ == "__main__":
    main()
