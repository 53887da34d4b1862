"""Dashboard panels that real runs only fill later (quality, roofline, GPU utilization): their
drawing code is exercised here with hand-made records, so it is not first run by a user."""

import copy

from quantbench.report import dashboard, html, panels


def _record(scheme, speed, kl=None, baseline=False, ceiling=None, util=None, bits=None):
    summary = {"median": speed, "median_ci": [speed * 0.9, speed * 1.1], "samples": [speed]}
    rec = {"scheme": scheme, "status": "ok", "baseline": baseline, "device": "cuda:0",
           "random_weights": False, "metrics": {"decode_tok_s": summary}, "model": "m",
           "memory": {"weights_bytes": 1e9, "peak_bytes": 2e9}, "info": {"parameters": 1e9},
           "run_id": "r", "cell_id": scheme, "measured_in_run": "r",
           "vs_baseline": None if baseline else {"decode_speedup": {"ratio": 1.2, "ci95": [1.1, 1.3],
                                                                   "significant": True},
                                                 "weights_reduction_pct": 50.0}}
    if kl is not None:
        rec["quality"] = {"kl_mean": kl}
    if ceiling:
        rec["roofline"] = {"ceiling_tok_s": ceiling}
    if bits:
        rec["bits_per_weight"] = {"model": bits + 1, "layers": bits}
    if util is not None:
        rec["metrics"]["gpu_util_pct"] = {"median": util}
    return rec


def test_pareto_frontier():
    points = [(100, 0.0, "bf16"), (150, 0.01, "int8"), (140, 0.05, "bad-int8"), (200, 0.1, "int4")]
    assert [p[2] for p in panels.pareto(points)] == ["bf16", "int8", "int4"]


def test_quality_roofline_and_utilization_panels_draw(tmp_path):
    records = [_record("bf16", 100, kl=0.0, baseline=True, ceiling=1200, util=40, bits=16),
               _record("int8", 150, kl=0.01, ceiling=2000, util=50, bits=8.1),
               _record("int4", 200, kl=0.1, ceiling=3500, util=60, bits=4.5),
               _record("rtn-int4", 190, kl=0.3, ceiling=3500, util=60, bits=4.6)]
    built = {p.key: p for p in panels.build(records, copy.deepcopy(records))}
    assert all(p.reason is None for p in built.values()), {k: p.reason for k, p in built.items()}
    assert [p[2] for p in built["quality_speed"].data["front"]] == ["bf16", "int8", "int4"]
    # Fewer bits and less drift both win: rtn-int4 has more bits and more KL than int4.
    assert [p[2] for p in built["quality_bits"].data["front"]] == ["int4", "int8", "bf16"]
    assert [p[0] for p in built["quality_bits"].data["points"]] == [16, 8.1, 4.5, 4.6]
    assert built["roofline"].data["ceiling"] == [1200, 2000, 3500, 3500]
    dashboard.render_png(list(built.values()), "synthetic", tmp_path / "d.png")
    assert (tmp_path / "d.png").stat().st_size > 10_000
    page = html.render_html(list(built.values()), [], "synthetic", [])
    assert page.count('id="panel-') == 9 and "Pareto frontier" in page
    assert "bits per weight as stored" in page
