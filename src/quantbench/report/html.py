"""The interactive dashboard: one self-contained HTML file (plotly.js inlined, no network)."""

from __future__ import annotations

import html

from quantbench.report.panels import Panel


def _figure(panel: Panel):
    import plotly.graph_objects as go

    fig = go.Figure()
    d = panel.data
    esc = html.escape
    if panel.reason:
        fig.add_annotation(text=f"nothing to show: {esc(panel.reason)}", showarrow=False,
                           x=0.5, y=0.5, xref="paper", yref="paper", font={"color": "#777"})
        fig.update_xaxes(visible=False)
        fig.update_yaxes(visible=False)
    elif panel.key in ("speed", "speedup", "gpu_util", "memory_reduction"):
        error = None
        if "low" in d:
            error = {"type": "data", "symmetric": False,
                     "array": [hi - y for y, hi in zip(d["y"], d["high"])],
                     "arrayminus": [y - lo for y, lo in zip(d["y"], d["low"])]}
        fig.add_bar(x=d["x"], y=d["y"], error_y=error, name=panel.title)
        if panel.key == "speedup":
            fig.add_hline(y=1.0, line_dash="dash")
    elif panel.key == "memory":
        fig.add_bar(x=d["x"], y=d["weights"], name="weights MB")
        fig.add_bar(x=d["x"], y=d["peak"], name="peak MB")
    elif panel.key == "size_speed":
        for scheme, s in d["series"].items():
            fig.add_scatter(x=s["x"], y=s["y"], mode="markers", name=scheme,
                            text=[esc(t) for t in s["label"]],
                            hovertemplate="%{text}<br>%{x:.1f} M params, %{y:.1f} tok/s")
        fig.update_xaxes(type="log", title="parameters (M)")
        fig.update_yaxes(title=f"decode tok/s ({esc(d['device'])})")
    elif panel.key in ("quality_speed", "quality_bits"):
        fig.add_scatter(x=[p[0] for p in d["points"]], y=[p[1] for p in d["points"]],
                        mode="markers+text", text=[esc(p[2]) for p in d["points"]], name="schemes")
        fig.add_scatter(x=[p[0] for p in d["front"]], y=[p[1] for p in d["front"]],
                        mode="lines", line={"dash": "dash"}, name="Pareto frontier")
        fig.update_xaxes(title=d["x_title"])
        fig.update_yaxes(title="KL vs baseline")
    elif panel.key == "roofline":
        fig.add_bar(x=d["x"], y=d["achieved"], name="achieved tok/s")
        fig.add_bar(x=d["x"], y=d["ceiling"], name="ceiling tok/s")
    elif panel.key.startswith("crossover_"):
        for s in d["series"]:
            error = {"type": "data", "symmetric": False,
                     "array": [hi - y for y, hi in zip(s["y"], s["high"])],
                     "arrayminus": [y - lo for y, lo in zip(s["y"], s["low"])]}
            fig.add_scatter(x=s["x"], y=s["y"], error_y=error, mode="lines+markers",
                            name=esc(s["name"]))
        fig.add_hline(y=1.0, line_dash="dash")
        fig.update_xaxes(type="log", title=d["x_title"])
        fig.update_yaxes(title="x baseline")
    elif panel.key == "pareto_batch":
        for name, s in d["series"].items():
            fig.add_scatter(x=s["x"], y=s["y"], mode="lines+markers+text", name=esc(name),
                            text=[esc(t) + (" *" if f else "") for t, f in zip(s["label"], s["front"])],
                            textposition="top center")
        fig.update_xaxes(title="decode tok/s per device (all sequences)")
        fig.update_yaxes(title="decode tok/s per sequence")
    fig.update_layout(title=panel.title, height=380, margin={"l": 50, "r": 20, "t": 50, "b": 60})
    return fig


def _table(records: list[dict]) -> str:
    """The run table of the Markdown view, column for column (the same spec), with every note."""
    from quantbench.report.columns import cell_text, shown
    from quantbench.report.markdown import scheme_label
    from quantbench.report.table import note_text

    columns = shown(records)
    headers = ["scheme"] + [c.header for c in columns] + ["note"]
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = []
    for r in records:
        values = [scheme_label(r)] + [cell_text(c, r) for c in columns] + [note_text(r)]
        body.append("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in values) + "</tr>")
    return f"<table id='data'><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def render_html(panels: list[Panel], records: list[dict], title: str, lines: list[str]) -> str:
    import plotly.io as pio

    divs = []
    for i, panel in enumerate(panels):
        # plotly.js goes in once, inline: the file opens with no network.
        divs.append(pio.to_html(_figure(panel), full_html=False, include_plotlyjs=(i == 0),
                                div_id=f"panel-{panel.key}", config={"displaylogo": False}))
    notes = "".join(f"<p>{html.escape(line)}</p>" for line in lines)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:20px}} .grid{{display:grid;grid-template-columns:repeat(2,1fr);gap:12px}}
table{{border-collapse:collapse;font-size:13px}} td,th{{border:1px solid #ccc;padding:3px 6px;text-align:right}}</style>
</head><body>
<h1>{html.escape(title)}</h1>
{notes}
<div class="grid">{''.join(divs)}</div>
<h2>Data</h2>
{_table(records)}
</body></html>
"""
