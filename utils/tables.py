"""The results of a seed sweep (sweep.py) as a markdown table with paired differences and their tests, and as a
per-seed plot; and whether a file is an older sweep.py's (unstamped) table."""
import json
import math

import numpy as np


def stats(values):
    v = np.asarray(values, dtype=float)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def paired_tests(diffs):
    """(95% CI half-width, paired t-test p, Wilcoxon signed-rank p) of paired differences; NaN where undefined."""
    from scipy import stats as st  # here: importing scipy.stats costs every CLI 0.7 s

    d = np.asarray(diffs, dtype=float)
    if len(d) < 2:
        return math.nan, math.nan, math.nan
    half = float(st.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d)))
    t = float(st.ttest_1samp(d, 0.0).pvalue) if d.std() > 0 else math.nan
    try:
        w = float(st.wilcoxon(d).pvalue)
    except ValueError:  # every difference zero
        w = math.nan
    return half, t, w


def _p(x):
    return "-" if math.isnan(x) else f"{x:.3f}"


def cost_ratio(costs, name, ref):
    """'time / FLOPs': row ``name``'s mean training cost (wall seconds of its training epochs; FLOPs) over row
    ``ref``'s; '-' where a row has no measurement."""
    def ratio(per_row):
        a = [v for v in per_row.get(name, {}).values() if v]
        b = [v for v in per_row.get(ref, {}).values() if v]
        return f"{np.mean(a) / np.mean(b):.2f}" if a and b else "-"

    return f"{ratio(costs['train_seconds'])} / {ratio(costs['flops'])}"


def table(result):
    """Markdown: per run n, best- and final-epoch mean ± std, the per-seed best, and against the first run the paired
    difference (mean ± std, its 95% confidence interval, paired t-test and Wilcoxon signed-rank p-values, the seeds
    won, and the final-epoch paired difference), or against the row ``result["versus"]`` names for a run (then a
    "vs" column says which); with published numbers (``result["paper"]``), the paper's mIoU and
    its gain over the paper's first run too; with costs (``result["train_seconds"]``, ``result["flops"]``), each
    row's training cost over the first row's, by wall time on this machine and by FLOPs."""
    names = list(result["runs"])
    final = result.get("final") or {}
    versus = result.get("versus") or {}
    paper = result.get("paper") or {}
    costs = {key: result.get(key) or {} for key in ("train_seconds", "flops")}
    with_cost = any(v for per_row in costs.values() for v in per_row.values())
    head = "| run | vs | n |" if versus else "| run | n |"
    rows = [head + " best-epoch mIoU % | final-epoch mIoU % | per seed, best (" + " ".join(str(s) for s in
                                                                                 result["seeds"]) + ") | "
            + ("Δ best (paired)" if versus else f"Δ best vs {names[0] if names else '-'} (paired)")
            + " | 95% CI | p (t / Wilcoxon) | seeds won | Δ final |" + (" paper mIoU % | paper Δ |" if paper else "")
            + (f" cost x {names[0] if names else '-'} (time / FLOPs) |" if with_cost else ""),
            "|---|---|---|---|---|---|---|---|---|---|" + ("---|" if versus else "") + ("---|---|" if paper else "")
            + ("---|" if with_cost else "")]
    for name in names:
        ref = versus.get(name, names[0])
        first, first_final = result["runs"][ref], final.get(ref, {})
        got = result["runs"][name]
        ok = {s: v for s, v in got.items() if v is not None}
        last = {s: v for s, v in final.get(name, {}).items() if v is not None}
        stopped = (result.get("stopped") or {}).get(name, {})
        per_seed = " ".join("fail" if s in result["failed"].get(name, {}) else "stop" if s in stopped else
                            ("-" if got.get(s) is None else f"{100 * got[s]:.2f}") for s in map(str, result["seeds"]))
        mean = "-" if not ok else "{:.2f} ± {:.2f}".format(*(100 * x for x in stats(list(ok.values()))))
        mean_final = "-" if not last else "{:.2f} ± {:.2f}".format(*(100 * x for x in stats(list(last.values()))))
        paired = [s for s in ok if first.get(s) is not None]
        if name == ref or not paired:
            delta, ci, p, won, delta_final = "", "", "", "", ""
        else:
            diffs = [ok[s] - first[s] for s in paired]
            delta = "{:+.2f} ± {:.2f}".format(*(100 * x for x in stats(diffs)))
            half, t, w = paired_tests(diffs)
            mid = 100 * float(np.mean(diffs))
            ci = "-" if math.isnan(half) else f"[{mid - 100 * half:+.2f}, {mid + 100 * half:+.2f}]"
            p = f"{_p(t)} / {_p(w)}"
            won = f"{sum(d > 0 for d in diffs)}/{len(diffs)}"
            both = [s for s in last if first_final.get(s) is not None]
            delta_final = f"{100 * float(np.mean([last[s] - first_final[s] for s in both])):+.2f}" if both else "-"
        published = ""
        if paper:
            base = paper.get(ref)
            published = (f" {paper[name]:.2f} | " if name in paper else " - | ") + (
                f"{paper[name] - base:+.2f} |" if name in paper and base is not None and name != ref else " |")
        vs = (f" {ref if name != ref else ''} |" if versus else "")
        rows.append(f"| {name} |{vs} {len(ok)} | {mean} | {mean_final} | {per_seed} | {delta} | {ci} | {p} | {won} | "
                    f"{delta_final} |{published}" + (f" {cost_ratio(costs, name, names[0])} |" if with_cost else ""))
    lines = rows + ["", f"Common args: `{result['common']}`", ""]
    lines += [f"- `{n}`: `{c}`" for n, c in result["commands"].items()]
    budget = result.get("budget")
    if budget and budget["iterations"]:
        what = "FLOPs" if budget["by"] == "flops" else "wall seconds (on this machine)"
        lines += ["", f"Equal compute: each row `<name>.{budget['by']}` trains the iterations that give it the "
                      f"training {what} of `{budget['ref']}`, its mean over the seeds (the rows without a suffix "
                      f"train the common args' length): "
                  + ", ".join(f"`{n}` {k}" for n, k in budget["iterations"].items()) + "."]
    for name, fails in result["failed"].items():
        lines += [f"- FAILED `{name}` seed {s}: {why}" for s, why in fails.items()]
    for name, stops in (result.get("stopped") or {}).items():
        lines += [f"- STOPPED `{name}` seed {s}: {why}" for s, why in stops.items()]
    return "\n".join(lines) + "\n"


def plot(result):
    """The per-seed best mIoU of every run, as a matplotlib figure (the caller saves and closes it)."""
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
    return fig


def earlier_table(path):
    """Whether ``path`` is the JSON table of an older sweep.py (unstamped; then its .md and .png are too)."""
    try:
        with open(path) as f:
            obj = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(obj, dict) and "written_by" not in obj and {"runs", "commands", "seeds"} <= set(obj)
