"""Timing shared by the benchmarks: alternating runs after a warm-up, median wall seconds."""
import statistics, time

def timed(fns:dict, repeats:int)->dict:
    "Median wall seconds of each function over `repeats` runs after one warm-up each; runs alternate."
    for fn in fns.values(): fn()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter(); fn(); times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}
