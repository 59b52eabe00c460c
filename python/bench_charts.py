"""Charts of a `bench` run: `python bench_charts.py <bench.json> <out dir>` (needs matplotlib).

Writes latency.png (HTTP vs floor CDF and histogram), throughput.png (req/s vs users, both sides) and cold.png
(cold-start distributions). A chart whose numbers are missing from the JSON (section not run) is not drawn.
"""

import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402

HTTP, FLOOR = "#d62728", "#1f77b4"


def cdf(ax, samples, label, color):
    xs = sorted(samples)
    ys = [(i + 1) / len(xs) for i in range(len(xs))]
    ax.step(xs, ys, where="post", label=f"{label} (n={len(xs)})", color=color)


def latency(data, out):
    lat = data.get("latency", {}).get("execute")
    if not lat:
        return
    h, f = lat["http_samples"], lat["floor_samples"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    cdf(a, h, "HTTP (sandboxed)", HTTP)
    cdf(a, f, "floor (direct, bare kernel)", FLOOR)
    for side, color in ((lat["http"], HTTP), (lat["floor"], FLOOR)):
        a.axvline(side["p50_ms"], color=color, ls=":", lw=1)
    a.set_xscale("log")
    a.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    a.xaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    a.tick_params(axis="x", which="minor", labelsize=7)
    a.set_xlabel("latency (ms, log)")
    a.set_ylabel("fraction of requests")
    a.set_title("`x += 1; print(x)`: CDF (dotted: p50)")
    a.grid(alpha=0.3, which="both")
    a.legend(loc="lower right")
    hi = max(lat["http"]["p99_ms"], lat["floor"]["p99_ms"]) * 1.2
    bins = [hi * i / 60 for i in range(61)]
    b.hist([min(x, hi) for x in f], bins=bins, alpha=0.6, color=FLOOR, label="floor")
    b.hist([min(x, hi) for x in h], bins=bins, alpha=0.6, color=HTTP, label="HTTP")
    b.set_xlabel(f"latency (ms; values above {hi:.1f} counted in the last bin)")
    b.set_ylabel("requests")
    b.set_title("histogram up to 1.2 x p99")
    b.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out, "latency.png"), dpi=110)
    plt.close(fig)


def throughput(data, out):
    levels = data.get("throughput", {}).get("levels")
    if not levels:
        return
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for key, label, color in (("http", "HTTP (sandboxed)", HTTP), ("floor", "floor (direct, bare kernels)", FLOOR)):
        pts = [(p["users"], p[key]["req_per_s"]) for p in levels if p.get(key)]
        if pts:
            ax.plot([u for u, _ in pts], [r for _, r in pts], "o-", color=color, label=label)
            for u, r in pts:
                ax.annotate(f"{r:.0f}", (u, r), textcoords="offset points", xytext=(4, 6), fontsize=8, color=color)
    q = data.get("throughput", {}).get("one_session_queue")
    if q:
        d = q["depth"]
        ax.plot([d], [q["http"]["req_per_s"]], "x", color=HTTP, ms=10, mew=2, label=f"{d} requests queued on ONE session (HTTP)")
        ax.plot([d], [q["floor"]["req_per_s"]], "x", color=FLOOR, ms=10, mew=2, label=f"{d} requests queued on ONE session (floor)")
    ax.set_xscale("log", base=2)
    users = sorted({p["users"] for p in levels})
    ax.set_xticks(users)
    ax.set_xticklabels([str(u) for u in users])
    ax.set_xlabel("concurrent users (closed loops, log2)")
    ax.set_ylabel("requests/s (aggregate)")
    tops = [p[k]["req_per_s"] for p in levels for k in ("http", "floor") if p.get(k)]
    ax.set_ylim(0, max(tops + [1]) * 1.15)
    ax.set_title("throughput of `x += 1; print(x)` vs users")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "throughput.png"), dpi=110)
    plt.close(fig)


def cold(data, out):
    c = data.get("cold", {})
    groups = []
    for key, name in (("sequential", "new user,\none at a time"), ("concurrent", "new users\nat once"),
                      ("warm_acquisition", "warm\nacquisition")):
        g = c.get(key)
        if g:
            n = f" ({g['n']})" if "n" in g else ""
            groups.append((name + n, g["http_samples"], g["floor_samples"]))
    if not groups:
        return
    fig, ax = plt.subplots(figsize=(8, 4.5))
    pos_h = [3 * i + 1 for i in range(len(groups))]
    pos_f = [3 * i + 2 for i in range(len(groups))]
    for pos, idx, color in ((pos_h, 1, HTTP), (pos_f, 2, FLOOR)):
        vals = [g[idx] or [float("nan")] for g in groups]
        bp = ax.boxplot(vals, positions=pos, widths=0.8, patch_artist=True, showfliers=True)
        for patch in bp["boxes"]:
            patch.set_facecolor(color)
            patch.set_alpha(0.5)
        for p, v in zip(pos, vals):
            ax.plot([p] * len(v), v, ".", color=color, alpha=0.6, ms=4)
    ax.set_xticks([3 * i + 1.5 for i in range(len(groups))])
    ax.set_xticklabels([g[0] for g in groups])
    ax.set_yscale("log")
    ax.set_ylabel("request to first answer (ms, log)")
    ax.set_title("new session to first result: HTTP (red) vs floor: bare kernel start (blue)")
    ax.grid(alpha=0.3, axis="y", which="both")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "cold.png"), dpi=110)
    plt.close(fig)


def main():
    path, out = sys.argv[1], sys.argv[2]
    with open(path) as f:
        data = json.load(f)
    for chart in (latency, throughput, cold):
        chart(data, out)
    print(f"charts in {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
