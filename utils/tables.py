"""The results of a seed sweep (sweep.py) as a markdown table with paired differences, and as a per-seed plot."""
import numpy as np


def stats(values):
    v = np.asarray(values, dtype=float)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def table(result):
    """Markdown: per run n, mean ± std, per seed, and against the first run paired differences and wins."""
    names = list(result["runs"])
    first = result["runs"][names[0]] if names else {}
    rows = ["| run | n | mIoU % mean ± std | per seed (" + " ".join(str(s) for s in result["seeds"]) + ") | "
            f"Δ vs {names[0] if names else '-'} (paired, mean ± std) | seeds won |", "|---|---|---|---|---|---|"]
    for name in names:
        got = result["runs"][name]
        ok = {s: v for s, v in got.items() if v is not None}
        per_seed = " ".join("fail" if s in result["failed"].get(name, {}) else
                            ("-" if got.get(s) is None else f"{100 * got[s]:.2f}") for s in map(str, result["seeds"]))
        mean = "-" if not ok else "{:.2f} ± {:.2f}".format(*(100 * x for x in stats(list(ok.values()))))
        paired = [s for s in ok if first.get(s) is not None]
        if name == names[0] or not paired:
            delta, won = "", ""
        else:
            diffs = [ok[s] - first[s] for s in paired]
            delta = "{:+.2f} ± {:.2f}".format(*(100 * x for x in stats(diffs)))
            won = f"{sum(d > 0 for d in diffs)}/{len(diffs)}"
        rows.append(f"| {name} | {len(ok)} | {mean} | {per_seed} | {delta} | {won} |")
    lines = rows + ["", f"Common args: `{result['common']}`", ""]
    lines += [f"- `{n}`: `{c}`" for n, c in result["commands"].items()]
    for name, fails in result["failed"].items():
        lines += [f"- FAILED `{name}` seed {s}: {why}" for s, why in fails.items()]
    return "\n".join(lines) + "\n"


def plot(result, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["runs"])
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(names) + 1.5), 3.8))
    for i, name in enumerate(names):
        values = [100 * v for v in result["runs"][name].values() if v is not None]
        if values:
            jitter = np.linspace(-0.12, 0.12, len(values)) if len(values) > 1 else [0.0]
            ax.scatter(i + np.asarray(jitter), values, s=18, alpha=0.7, color=f"C{i % 10}")
            ax.hlines(np.mean(values), i - 0.3, i + 0.3, color="black", lw=2)
        n_failed = len(result["failed"].get(name, {}))
        if n_failed:
            ax.annotate(f"{n_failed} failed", (i, 0.02), xycoords=("data", "axes fraction"), ha="center",
                        color="red", fontsize=7)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("best val mIoU (%)")
    ax.set_title("per-seed best val mIoU (bar: mean)", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
