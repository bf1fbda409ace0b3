#!/usr/bin/env python3
"""Decision quality of the analysis judge: how often it promotes, rolls back or holds
labelled candidates, at the canary shares and traffic rates that matter.

Every run draws per-request traffic for one analysis (a 15 s warm-up, then five 30 s
measurements: 165 s): each
second a Poisson number of requests at the total rate, each sent to the candidate with
probability `share`, each failing with its version's error probability and taking a
log-normal latency (median 50 ms, sigma 0.5) scaled by its version's slowdown. From the same
draws it writes two recordings:

- evidence (the `cutover/v1` format of `cutover record`): per second and version, request
  and error counts and the latency histogram in the proxy's log-linear buckets;
- summaries (the format before evidence): per second and version, the error rate and the
  p99 as the proxy's old 25 %-wide window buckets gave them, with the request count.

and asks each judge (`cutover analyze`, exit 0 promoted, 1 rolled back, 3 held) for its
verdict: the judge under test on the evidence, and a baseline binary (the judge before
evidence) on the summaries, both with bench/decision-quality.yaml.

    pip install numpy orjson
    python3 bench/decision-quality.py --judge target/release/cutover \\
        --baseline /path/to/cutover-before [--seeds 30] [--bad-seeds 10] [--kinds equal,latency+30%]

The kinds, labelled good (should be promoted, and never rolled back) or bad (should be
rolled back, or at least held):

  good  equal            the same version twice
  good  bursty           equal, traffic in bursts (x3 for a fifth of the seconds)
  good  cold-start       equal, but the candidate's first 10 s are 50 % slower (within the
                         release's 15 s initialDelay)
  good  shared-degradation  both versions 5 points more errors and 2x slower mid-analysis
  bad   errors-x2 / x3 / x5   the candidate fails 2, 3, 5 times as often (stable: 2 %)
  bad   errors+5-late    5 points more errors from 40 % of the analysis on
  bad   latency+10% / +30% / +50%   every request that much slower
  bad   tail-only        2 % of requests 5x slower (median unchanged, p99 up)
  bad   slow-leak        slowdown growing from 0 to 60 % over the analysis
  bad   error-spikes     5 s of 30 % errors every 30 s

Each kind runs at canary shares 1, 5, 10 and 50 % and total rates 10, 100 and 1,000 req/s
(12 cells), `--seeds` runs per cell. The table gives, per kind, the share of runs
promoted, rolled back and held; a second table the same for the runs with at least 500
candidate requests per 30 s window (where the targets ask for >= 99 % rollbacks).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections import defaultdict

try:
    import numpy as np
except ImportError:  # pragma: no cover
    sys.exit("this benchmark needs numpy: pip install numpy")
try:
    import orjson

    def dump(document, f):
        f.write(orjson.dumps(document).decode())
except ImportError:  # pragma: no cover: slower, same output
    def dump(document, f):
        json.dump(document, f)

HERE = os.path.dirname(os.path.abspath(__file__))
RELEASE = os.path.join(HERE, "decision-quality.yaml")
SECONDS = 165
WARM_UP = 15
INTERVAL = 30
SHARES = [0.01, 0.05, 0.10, 0.50]
RATES = [10, 100, 1000]
BASE_ERRORS = 0.02
MEDIAN = 0.050
SIGMA = 0.5

GOOD = ["equal", "bursty", "cold-start", "shared-degradation"]
BAD = ["errors-x2", "errors-x3", "errors-x5", "errors+5-late", "latency+10%",
       "latency+30%", "latency+50%", "tail-only", "slow-leak", "error-spikes"]


def effects(kind, t):
    """(candidate error p, candidate slowdown, stable error p, stable slowdown, tail) at second t."""
    c_err, c_slow, s_err, s_slow, tail = BASE_ERRORS, 1.0, BASE_ERRORS, 1.0, 0.0
    if kind == "cold-start" and t < 10:
        c_slow = 1.5
    if kind == "shared-degradation" and SECONDS / 3 <= t < 2 * SECONDS / 3:
        c_err = s_err = BASE_ERRORS + 0.05
        c_slow = s_slow = 2.0
    if kind.startswith("errors-x"):
        c_err = BASE_ERRORS * int(kind[len("errors-x"):])
    if kind == "errors+5-late" and t >= 0.4 * SECONDS:
        c_err = BASE_ERRORS + 0.05
    if kind.startswith("latency+"):
        c_slow = 1.0 + int(kind[len("latency+"):-1]) / 100.0
    if kind == "tail-only":
        tail = 0.02
    if kind == "slow-leak":
        c_slow = 1.0 + 0.6 * t / SECONDS
    if kind == "error-spikes" and t % 30 >= 25:
        c_err = 0.30
    return c_err, c_slow, s_err, s_slow, tail


def log_linear(micros):
    """The proxy's bucket index: exact below 64 us, 64 buckets per power of two above."""
    v = np.minimum(np.maximum(micros, 0), (1 << 36) - 1).astype(np.int64)
    out = v.copy()
    big = v >= 64
    _, e = np.frexp(v[big].astype(np.float64))
    exponent = e.astype(np.int64) - 1
    shift = exponent - 6
    mantissa = v[big] >> shift
    out[big] = 64 + shift * 64 + (mantissa - 64)
    return out


def bounds(index):
    if index < 64:
        return index, index + 1
    shift = (index - 64) // 64
    mantissa = 64 + (index - 64) % 64
    return mantissa << shift, (mantissa + 1) << shift


OLD_BOUNDS = [50.0 * 1.25 ** i for i in range(63)]


def old_p99(micros):
    """The p99 the proxy's old window buckets reported: the upper bound of its bucket."""
    rank = max(1, int(np.ceil(0.99 * len(micros))))
    value = np.sort(micros)[rank - 1]
    for bound in OLD_BOUNDS:
        if value <= bound:
            return bound / 1e6
    return OLD_BOUNDS[-1] / 1e6


def draw(kind, share, rate, rng):
    """Per-second rows of both recordings, and the candidate's requests per window."""
    evidence, summaries = [], []
    candidate_total = 0
    for t in range(SECONDS):
        c_err, c_slow, s_err, s_slow, tail = effects(kind, t)
        level = rate
        if kind == "bursty":
            level = rate * (3.0 if rng.random() < 0.2 else 0.5)
        n = rng.poisson(level)
        c = rng.binomial(n, share)
        for side, count, p_err, slow in (("candidate", c, c_err, c_slow),
                                         ("stable", n - c, s_err, s_slow)):
            if count == 0:
                continue
            errors = int(rng.binomial(count, p_err))
            latency = MEDIAN * slow * np.exp(SIGMA * rng.standard_normal(count))
            if side == "candidate" and tail > 0:
                latency = np.where(rng.random(count) < tail, latency * 5.0, latency)
            micros = np.maximum(1, (latency * 1e6).astype(np.int64))
            index, counts = np.unique(log_linear(micros), return_counts=True)
            le, below = [], 0
            for i, k in zip(index.tolist(), counts.tolist()):
                lo, hi = bounds(i)
                if not le or le[-1][0] < lo / 1e6:
                    le.append([lo / 1e6, below])
                below += k
                le.append([hi / 1e6, below])
            evidence.append({"time": t + 1, "version": side, "requests": count,
                             "errors": errors, "le": le})
            summaries.append((t + 1, "error-rate", side, errors / count, count))
            summaries.append((t + 1, "latency-p99", side, old_p99(micros), count))
            if side == "candidate" and t >= WARM_UP:
                candidate_total += count
    return evidence, summaries, candidate_total / ((SECONDS - WARM_UP) / INTERVAL)


def verdict(binary, samples, explain=None):
    result = subprocess.run([binary, "analyze", RELEASE, "--samples", samples],
                            capture_output=True, text=True)
    outcome = {0: "promoted", 1: "rolled back", 3: "held"}.get(result.returncode,
                                                              f"exit {result.returncode}")
    if explain and outcome == "rolled back":
        reasons = [line.strip() for line in result.stdout.splitlines() if "=> failure" in line]
        print(f"{explain}: {' / '.join(reasons)}", file=sys.stderr)
    return outcome


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--judge", required=True, help="the cutover binary under test")
    parser.add_argument("--baseline", help="a cutover binary with the judge before evidence")
    parser.add_argument("--seeds", type=int, default=30, help="runs per cell of the good kinds")
    parser.add_argument("--bad-seeds", type=int, help="runs per cell of the bad kinds (default: --seeds)")
    parser.add_argument("--kinds", help="comma-separated kinds (default: all)")
    parser.add_argument("--explain", action="store_true",
                        help="print why each good candidate was rolled back")
    args = parser.parse_args()
    kinds = args.kinds.split(",") if args.kinds else GOOD + BAD
    judges = [("evidence", args.judge)] + ([("before", args.baseline)] if args.baseline else [])
    tally = defaultdict(lambda: defaultdict(int))
    with tempfile.TemporaryDirectory() as tmp:
        ev_path = os.path.join(tmp, "evidence.json")
        sum_path = os.path.join(tmp, "summaries.csv")
        for kind in kinds:
            for share in SHARES:
                for rate in RATES:
                    seeds = args.seeds if kind in GOOD else (args.bad_seeds or args.seeds)
                    for seed in range(seeds):
                        rng = np.random.default_rng([seed, int(share * 1000), rate, kinds.index(kind)])
                        evidence, summaries, per_window = draw(kind, share, rate, rng)
                        with open(ev_path, "w") as f:
                            dump({"recording": "cutover/v1", "release": "bench",
                                  "seconds": evidence}, f)
                        with open(sum_path, "w") as f:
                            f.write("time,metric,version,value,requests\n")
                            for row in summaries:
                                f.write("%d,%s,%s,%r,%d\n" % row)
                        for name, binary in judges:
                            path = ev_path if name == "evidence" else sum_path
                            explain = (args.explain and kind in GOOD
                                       and f"{name} {kind} share {share} rate {rate} seed {seed}")
                            outcome = verdict(binary, path, explain)
                            tally[(name, kind, "all")][outcome] += 1
                            if per_window >= 500:
                                tally[(name, kind, ">=500")][outcome] += 1
            print(f"done: {kind}", file=sys.stderr)
    for subset in ("all", ">=500"):
        print(f"\nruns: {subset} ({'every cell' if subset == 'all' else 'cells with >= 500 candidate requests per window'})")
        print("| kind | label | judge | runs | promoted | rolled back | held |")
        print("|---|---|---|---:|---:|---:|---:|")
        for kind in kinds:
            label = "good" if kind in GOOD else "bad"
            for name, _ in judges:
                counts = tally[(name, kind, subset)]
                runs = sum(counts.values())
                if runs == 0:
                    continue
                pct = lambda o: f"{100.0 * counts[o] / runs:.1f} %"  # noqa: E731
                print(f"| {kind} | {label} | {name} | {runs} | {pct('promoted')} | "
                      f"{pct('rolled back')} | {pct('held')} |")


if __name__ == "__main__":
    main()
