#!/usr/bin/env python3
"""The α–β model of data-parallel training with a ring allreduce (docs/scaling.md).

Reads bench/mpi_scaling.sh's summary.json (measured here) and prints markdown tables:
the fit of this machine's MPI_Allreduce, t(n) = a + b·n, and for shape C and a model
10× larger the projected step time and efficiency on 8, 64 and 512 nodes over
10, 25 and 100 Gb/s links, with the per-node and global batch that keep 80 % efficiency.

    /usr/bin/python3 bench/scaling_model.py [build/mpi-scaling/summary.json]

Model (Patarasuk & Yuan 2009; Thakur, Rabenseifner & Gropp 2005): a ring allreduce of n bytes
over p nodes takes
    T_ar(p, n) = 2(p − 1)·α + 2·(p − 1)/p · n · (1/B + γ)
α: per-message latency, B: link bandwidth, γ: per-byte cost of reducing and copying at a node
(taken from this machine's measured per-byte time, an upper bound). trflow does not overlap the
allreduce with the backward pass, so a step takes T_step = T_comp(b) + T_ar with T_comp(b) = c·b
for b rows per node, and the efficiency is E = T_comp / T_step. E ≥ 0.8 ⇔ c·b ≥ 4·T_ar.
"""
import json
import sys

path = sys.argv[1] if len(sys.argv) > 1 else "build/mpi-scaling/summary.json"
s = json.load(open(path))

# Least-squares t = a + b·n on the bandwidth-bound sizes that stay in cache here (64 KiB to
# 16 MiB; the 64 MiB point runs at this VM's memory bandwidth and is reported, not fitted).
rows = s["allreduce"]
ns = [r["bytes"] for r in rows if 65536 <= r["bytes"] <= 16 << 20]
ts = [r["median_us"] * 1e-6 for r in rows if 65536 <= r["bytes"] <= 16 << 20]
big = [r for r in rows if r["bytes"] > 16 << 20]
k = len(ns)
mn, mt = sum(ns) / k, sum(ts) / k
b = sum((n - mn) * (t - mt) for n, t in zip(ns, ts)) / sum((n - mn) ** 2 for n in ns)
a = mt - b * mn
# Latency from the small messages alone (the least-squares intercept is dominated by the large ones).
small = [r["median_us"] * 1e-6 for r in rows if r["bytes"] <= 1024]
a_small = sorted(small)[len(small) // 2] if small else a
print("## Measured here (2 ranks, shared memory)\n")
print(f"MPI_Allreduce, float32 sum, 2 ranks: latency (median, ≤ 1 KiB) {a_small * 1e6:.1f} µs; "
      f"per byte {b * 1e9:.3f} ns (≈ {1 / b / 1e9:.2f} GB/s effective); least-squares fit "
      f"t(n) = {a * 1e6:.1f} µs + n · {b * 1e9:.3f} ns (64 KiB to 16 MiB)" +
      "".join(f"; {r['bytes'] >> 20} MiB: {r['median_us'] / 1e3:.1f} ms ({r['bytes'] / r['median_us'] / 1e3:.2f} GB/s)" for r in big) +
      ".\n")
# At p = 2 a ring allreduce is 2α + n·(1/B + γ): the per-byte term is γ_here + 1/B_memory, used as γ.
gamma = b

shape = s["shapes"]["C"]
med = lambda v: sorted(v)[len(v) // 2]
steps_per_s_node = med(shape["r1t2"])  # one node = this 2-core machine, 2 threads
params = s.get("params_C")
batch_C = 2048
c = 1.0 / steps_per_s_node / batch_C  # seconds per row per node
print(f"Shape C on one node (this machine, 1 rank × 2 threads): {steps_per_s_node:.3f} steps/s at batch {batch_C}, "
      f"c = {c * 1e3:.3f} ms per row; {params} parameters ({4 * params / 1e6:.1f} MB of float32 gradients).\n")

links = {"10 Gb/s": (10e9 / 8, 10e-6), "25 Gb/s": (25e9 / 8, 5e-6), "100 Gb/s": (100e9 / 8, 2e-6)}
print("Assumed links: α = 10 µs at 10 Gb/s (TCP over Ethernet), 5 µs at 25 Gb/s (RoCE), 2 µs at 100 Gb/s "
      "(InfiniBand-class); B = the line rate.\n")

for label, scale in (("shape C", 1), ("shape C × 10 (10× the parameters and the flops per row)", 10)):
    n = 4.0 * params * scale + 4.0 * 11  # the gradients plus the step's 11 values
    cc = c * scale
    print(f"### {label}\n")
    print("Strong scaling at the global batch of one node (2048 rows split across the nodes), and the batch that keeps 80 %:\n")
    print("| nodes | link | allreduce ms | step ms at global batch 2048 | efficiency | rows per node for 80 % | global batch for 80 % | step s at that batch |")
    print("|---|---|---|---|---|---|---|---|")
    for p in (8, 64, 512):
        for name, (B, alpha) in links.items():
            t_ar = 2 * (p - 1) * alpha + 2 * (p - 1) / p * n * (1 / B + gamma)
            t_comp = cc * batch_C / p
            eff = t_comp / (t_comp + t_ar)
            b80 = 4 * t_ar / cc
            print(f"| {p} | {name} | {t_ar * 1e3:.2f} | {(t_comp + t_ar) * 1e3:.1f} | {100 * eff:.0f} % | {b80:,.0f} | "
                  f"{p * b80:,.0f} | {cc * b80 + t_ar:.2f} |")
    print()
