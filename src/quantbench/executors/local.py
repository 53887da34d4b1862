"""This machine: one thread per device, each taking the next comparison that may run there
(pinned ones wait for their own device), each cell a subprocess."""

from __future__ import annotations

import threading

from quantbench.executors import run_threads


def measure(bench, store, run_id: str, env_id: str, spans, done: set[int],
            memory_limit: int | None, lanes: list[str]) -> None:
    if len(lanes) == 1:
        for span in spans:
            bench._measure_comparison(store, run_id, env_id, span, done, memory_limit, lanes[0])
        return
    todo = list(spans)
    lock = threading.Lock()  # the store and the list of comparisons left
    errors: list[BaseException] = []
    cancel = threading.Event()

    def next_for(lane: str):
        with lock:
            for i, span in enumerate(todo):
                if lane in span[0].lanes:
                    return todo.pop(i)
        return None

    def lane_worker(lane: str) -> None:
        while not cancel.is_set():
            span = next_for(lane)
            if span is None:
                return
            try:
                bench._measure_comparison(store, run_id, env_id, span, done, memory_limit, lane,
                                          lock, cancel)
            except BaseException as exc:  # noqa: BLE001  (re-raised by the driver)
                errors.append(exc)
                cancel.set()

    threads = [threading.Thread(target=lane_worker, args=(lane,), daemon=True,
                                name=f"quantbench-{lane}") for lane in lanes]
    run_threads(threads, cancel)  # Ctrl-C or SIGTERM: every device's cell stops
    if errors:
        raise errors[0]
