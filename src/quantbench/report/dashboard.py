"""The static dashboard: one PNG with every panel (matplotlib)."""

from __future__ import annotations

from pathlib import Path

from quantbench.report.panels import Panel


def _bars(ax, panel: Panel, key: str = "y", color: str = "#4C72B0") -> None:
    d = panel.data
    x = range(len(d["x"]))
    err = None
    if "low" in d:
        err = [[max(y - lo, 0) for y, lo in zip(d[key], d["low"])],
               [max(hi - y, 0) for y, hi in zip(d[key], d["high"])]]
    ax.bar(x, d[key], yerr=err, capsize=4, color=color)
    ax.set_xticks(list(x), d["x"], rotation=30, ha="right", fontsize=8)


def _pair(ax, labels, first, second, names) -> None:
    x = list(range(len(labels)))
    ax.bar([i - 0.2 for i in x], first, width=0.4, label=names[0])
    ax.bar([i + 0.2 for i in x], second, width=0.4, label=names[1])
    ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=8)
    ax.legend(fontsize=8)


def render_png(panels: list[Panel], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = (len(panels) + 3) // 4
    fig, axes = plt.subplots(rows, 4, figsize=(22, 5 * rows))
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    for ax, panel in zip(axes.flat, panels):
        ax.set_title(panel.title, fontsize=10)
        if panel.reason:
            ax.text(0.5, 0.5, f"nothing to show:\n{panel.reason}", ha="center", va="center",
                    wrap=True, fontsize=10, color="#777777", transform=ax.transAxes)
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        d = panel.data
        if panel.key in ("speed", "speedup", "gpu_util", "memory_reduction"):
            _bars(ax, panel)
            if panel.key == "speedup":
                ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
        elif panel.key == "memory":
            _pair(ax, d["x"], d["weights"], d["peak"], ("weights", "peak"))
        elif panel.key == "size_speed":
            for scheme, s in d["series"].items():
                ax.scatter(s["x"], s["y"], label=scheme)
            ax.set_xscale("log")
            ax.set_xlabel("parameters (M)")
            ax.set_ylabel(f"decode tok/s ({d['device']})")
            ax.legend(fontsize=7)
        elif panel.key in ("quality_speed", "quality_bits"):
            for speed, kl, name in d["points"]:
                ax.scatter(speed, kl)
                ax.annotate(name, (speed, kl), fontsize=7)
            front = d["front"]
            ax.plot([p[0] for p in front], [p[1] for p in front], "r--", label="Pareto frontier")
            ax.set_xlabel(d["x_title"])
            ax.set_ylabel("KL vs baseline")
            ax.legend(fontsize=8)
        elif panel.key == "roofline":
            _pair(ax, d["x"], d["achieved"], d["ceiling"], ("achieved", "ceiling"))
        elif panel.key.startswith("crossover_"):
            for s in d["series"]:
                ax.errorbar(s["x"], s["y"], yerr=[[y - lo for y, lo in zip(s["y"], s["low"])],
                                                  [hi - y for y, hi in zip(s["y"], s["high"])]],
                            marker="o", capsize=3, label=s["name"])
            ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
            ax.set_xscale("log")
            ax.set_xlabel(d["x_title"])
            ax.set_ylabel("x baseline")
            ax.legend(fontsize=7)
        elif panel.key == "pareto_batch":
            for name, s in d["series"].items():
                ax.plot(s["x"], s["y"], marker="o", label=name)
                for x, y, text, front in zip(s["x"], s["y"], s["label"], s["front"]):
                    ax.annotate(text + (" *" if front else ""), (x, y), fontsize=7)
            ax.set_xlabel("decode tok/s per device")
            ax.set_ylabel("decode tok/s per sequence")
            ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
