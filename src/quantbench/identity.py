"""A cell's identity in two parts: what is measured (model, scheme with its settings, runtime,
workload, device type: the comparison key) and what it is measured with (the environment
fingerprint: host, CPU or GPU model, driver, CUDA, library versions, quantbench version and
commit). Reuse needs both to match. A comparison needs the first and says whether the second
matched: a ratio between two environments measures the machines as much as the schemes."""

from __future__ import annotations

import json

from quantbench.config import stable_hash


def environment_fingerprint(env: dict, device: str) -> dict:
    """The parts of a recorded environment that can move a measurement on `device`.

    `hardware_measured_at` stands in for the machine on records made before the host was
    recorded: each fresh machine measures its ceilings once, so two lent machines of the same
    model differ there even when every version matches."""
    out = {
        "quantbench": env.get("quantbench"),
        "git_commit": env.get("git_commit"),
        "host": env.get("host"),
        "cpu": env.get("cpu"),
        "cpu_cores_logical": env.get("cpu_cores_logical"),
        "torch_threads": env.get("torch_threads"),
        "python": env.get("python"),
        "cuda": env.get("cuda"),
        "libraries": env.get("libraries") or {},
        "hardware_measured_at": (env.get("hardware") or {}).get("measured_at"),
    }
    if device.startswith("cuda"):
        gpus = env.get("gpus") or []
        index = int(device.split(":")[1]) if ":" in device else 0
        gpu = next((g for g in gpus if g.get("index") == index), gpus[0] if gpus else {})
        out["gpu"] = {k: gpu.get(k) for k in ("name", "memory_bytes", "capability", "driver")}
    else:
        # A forked cell counts only the library pages it touches in its resident memory.
        out["cpu_cell_start"] = env.get("cpu_cell_start")
    return out


def environment_key(env: dict, device: str) -> str:
    return stable_hash(environment_fingerprint(env, device))[:12]


def comparison_key(record: dict) -> tuple:
    """What two records must share to be the same measurement of the same thing."""
    return (record["model"], record["scheme"], record["runtime"],
            json.dumps(record["workload"], sort_keys=True), record["device"].split(":")[0])


def environment_differences(a: dict, b: dict, device: str) -> list[str]:
    """The fingerprint fields in which two environments differ, for saying why."""
    fa, fb = environment_fingerprint(a, device), environment_fingerprint(b, device)
    out = []
    for key in fa:
        if key == "libraries":
            libs = sorted(k for k in set(fa[key]) | set(fb[key]) if fa[key].get(k) != fb[key].get(k))
            out += [f"{lib} {fa[key].get(lib)} vs {fb[key].get(lib)}" for lib in libs]
        elif fa[key] != fb[key]:
            out.append(key.replace("_", " ") if key != "hardware_measured_at" else "machine")
    return out
