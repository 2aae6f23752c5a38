"""Turns the raw results of scripts/bench.sh into one table (stdout) and bench/RESULTS.md.

Inputs (in --out-dir): runs.jsonl (one JSON line per train_bench / torch_realnvp.py /
torch_throughput.py / torch_spline.py run), micro.json and micro_skylakex.json (Google Benchmark),
perf_<shape>.txt (perf report --sort dso,symbol) or callgrind_<shape>.txt, alloc_sites.txt,
alloc_sites_rqs.txt.

The spline-coupling runs (train_bench --coupling rqs, torch_spline.py) get their own section,
between the markers SPLINE_BEGIN / SPLINE_END; with --spline-only only that section of the
existing --markdown file is replaced (or inserted), the rest of the file is kept.
"""
import argparse
import datetime
import json
import os
import re
import statistics
import subprocess

from perf_phases import GEMM_KIND  # (this script's folder is on sys.path)


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return ""


def load_runs(path):
    runs = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                runs.append(json.loads(line))
    return runs


def f1(v, digits=1):
    return "-" if v is None else f"{v:.{digits}f}"


def fmt_rate(v):
    if v is None:
        return "-"
    if v >= 1e5:
        return f"{v / 1e3:.0f}k"
    if v >= 1e4:
        return f"{v / 1e3:.1f}k"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def ratio(a, b):
    return f"{a / b:.2f}x" if a and b else "-"


def best(rows, key):
    vals = [r[key] for r in rows if r.get(key)]
    return max(vals) if vals else None


def is_spline(r):
    return r.get("coupling", "affine") not in ("affine", None)


def shape_rows(runs):
    runs = [r for r in runs if not is_spline(r) and r.get("kind") != "op"]  # the affine tables
    table = []
    for shape in ("A", "B", "C"):
        tf = [r for r in runs if r.get("impl") == "trflow" and r.get("shape") == shape and not r.get("variant")]
        sx = [r for r in runs if r.get("impl") == "trflow" and r.get("shape") == shape and r.get("variant") == "skylakex"]
        tt_all = [r for r in runs if r.get("impl") == "torch" and r.get("kind") == "train" and r.get("config") == shape]
        tp_all = [r for r in runs if r.get("impl") == "torch" and r.get("kind") == "throughput" and r.get("config") == shape]
        tt = [r for r in tt_all if not r.get("timed_out")]
        tp = [r for r in tp_all if not r.get("timed_out")]
        timeouts = [f"{r['kind']} {r['threads']}thr" for r in tt_all + tp_all if r.get("timed_out")]
        if not tf and not tt:
            continue
        by_t = {r["threads"]: r for r in tf}
        t1, t2 = by_t.get(1), by_t.get(2)
        # The side-by-side scaling pairs: per round, 2-thread steps/s over 1-thread steps/s.
        sc = [r for r in runs if r.get("impl") == "trflow" and r.get("shape") == shape and r.get("variant") == "scaling"]
        pairs = {}
        for r in sc:
            pairs.setdefault(r.get("round"), {})[r["threads"]] = r["steps_per_s"]
        scaling = [(p[1], p[2]) for _, p in sorted(pairs.items()) if p.get(1) and p.get(2)]
        tf_best = max(tf, key=lambda r: r["steps_per_s"]) if tf else None
        tt_best = max(tt, key=lambda r: r["steps_per_s"]) if tt else None
        torch_cands = ([(r["steps_per_s"], f"{r['threads']}thr") for r in tt if r.get("steps_per_s")] +
                       [(r["train_steps_per_s"], f"{r['threads']}thr warm") for r in tp if r.get("train_steps_per_s")])
        tp_lp = best(tp, "logprob_sps")
        tp_s = best(tp, "sample_sps")
        row = dict(
            shape=shape,
            tf1=t1["steps_per_s"] if t1 else None,
            tf2=t2["steps_per_s"] if t2 else None,
            # The better of torch_realnvp.py's whole-run average and torch_throughput.py's warm figure.
            torch=max(torch_cands)[0] if torch_cands else None,
            torch_threads=max(torch_cands)[1] if torch_cands else None,
            torch1=next((r["steps_per_s"] for r in tt if r["threads"] == 1), None),
            torch2=next((r["steps_per_s"] for r in tt if r["threads"] == 2), None),
            tf_best=tf_best["steps_per_s"] if tf_best else None,
            rss_tf=tf_best["peak_rss_mb"] if tf_best else None,
            rss_torch=tt_best["peak_rss_mb"] if tt_best else None,
            rss_tf1=t1["peak_rss_mb"] if t1 else None,
            rss_torch1=next((r["peak_rss_mb"] for r in tt if r["threads"] == 1), None),
            lp_tf=best(tf, "logprob_sps"), lp_torch=tp_lp,
            s_tf=best(tf, "sample_sps"), s_torch=tp_s,
            allocs=tf[0]["allocs_per_step"] if tf else None,
            allocs_new=tf[0].get("new_per_step") if tf else None,
            allocs_malloc=tf[0].get("malloc_per_step") if tf else None,
            faults=tf[0].get("faults_per_step") if tf else None,
            alloc_bytes=tf[0]["alloc_bytes_per_step"] if tf else None,
            alloc_window=tf[0].get("alloc_window") if tf else None,
            lp_allocs=tf[0].get("logprob_allocs_per_chunk") if tf else None,
            s_allocs=tf[0].get("sample_allocs_per_chunk") if tf else None,
            params=tf[0]["params"] if tf else None,
            timeouts=timeouts,
            tape=(tf[0].get("tape_nodes"), tf[0].get("tape_value_mb"), tf[0].get("tape_grad_mb"),
                  tf[0].get("tape_scratch_mb"), tf[0].get("params_adam_mb")) if tf else None,
            tf1_cpu=t1.get("cpu_ms_per_step") if t1 else None,
            sx1=sx[0]["steps_per_s"] if sx else None,
            sx1_cpu=sx[0].get("cpu_ms_per_step") if sx else None,
            sx_lp=sx[0].get("logprob_sps") if sx else None,
            torch_warm=best(tp, "train_steps_per_s"),
            torch_cpu=next((r["train_cpu_ms_per_step"] for r in tp
                            if r["threads"] == 1 and r.get("train_cpu_ms_per_step")), None),
            loads=[r.get("load_before") for r in tf + tt_all + tp_all if r.get("load_before") is not None],
            reps=[(r["threads"], r.get("rep_steps_per_s")) for r in tf],
            scaling=scaling,
            scaling_ratio=med([b / a for a, b in scaling]) if scaling else None,
        )
        table.append(row)
    return table


# GEMM flops of one training step of train_bench's affine shapes: per pass and coupling, each
# dense layer's forward, x̄ and W̄ products, 2·batch·in·out each (6·batch·Σ in·out), two passes.
SHAPE_DIMS = {"A": (2, 64, 1024, 8), "B": (16, 128, 1024, 8), "C": (64, 512, 2048, 16)}  # d, hidden, batch, couplings


def step_gflop(shape):
    d, h, batch, layers = SHAPE_DIMS[shape]
    a = d // 2
    return 6.0 * batch * (a * h + h * h + h * 2 * a) * layers * 2 / 1e9


def main_table(rows, peak=None):
    head = ["shape", "trflow steps/s 1thr", "torch steps/s 1thr", "per-core ratio", "GEMM GFLOP/step",
            "trflow GFLOP/s (% of peak)", "trflow 2thr", "2thr / 1thr",
            "peak RSS MB trflow/torch (1thr)", "log_prob samples/s trflow/torch", "ratio",
            "sampling samples/s trflow/torch", "ratio", "allocs/step"]
    lines = []
    for r in rows:
        torch1 = max([v for v in (r["torch1"], r["torch_warm"]) if v] or [0]) or None
        gf = step_gflop(r["shape"]) if r["shape"] in SHAPE_DIMS else None
        rate = gf / (r["tf1_cpu"] / 1000) if gf and r["tf1_cpu"] else None
        lines.append([
            r["shape"], fmt_rate(r["tf1"]), fmt_rate(torch1) if torch1 else "-", ratio(r["tf1"], torch1),
            f"{gf:.3g}" if gf else "-",
            (f"{rate:.0f} ({100 * rate / peak:.0f} %)" if peak else f"{rate:.0f}") if rate else "-",
            fmt_rate(r["tf2"]),
            f"{r['scaling_ratio']:.2f}x" if r["scaling_ratio"] else
            (f"{r['tf2'] / r['tf1']:.2f}x" if r["tf1"] and r["tf2"] else "-"),
            f"{r['rss_tf1']:.0f} / {r['rss_torch1']:.0f}" if r.get("rss_tf1") and r.get("rss_torch1") else "-",
            f"{fmt_rate(r['lp_tf'])} / {fmt_rate(r['lp_torch'])}", ratio(r["lp_tf"], r["lp_torch"]),
            f"{fmt_rate(r['s_tf'])} / {fmt_rate(r['s_torch'])}", ratio(r["s_tf"], r["s_torch"]),
            f"{r['allocs']:.0f}" if r["allocs"] is not None else "-",
        ])
    return head, lines


def cpu_table(rows):
    head = ["shape", "trflow CPU ms/step (1thr)", "torch CPU ms/step (1thr, warm)", "torch/trflow",
            "trflow steps/s (1thr)", "torch steps/s (1thr, warm)",
            "trflow CPU ms/step, OPENBLAS_CORETYPE=SkylakeX", "gain"]
    lines = []
    for r in rows:
        lines.append([r["shape"],
                      f"{r['tf1_cpu']:.1f}" if r["tf1_cpu"] else "-",
                      f"{r['torch_cpu']:.1f}" if r["torch_cpu"] else "-",
                      f"{r['torch_cpu'] / r['tf1_cpu']:.2f}x" if r["tf1_cpu"] and r["torch_cpu"] else "-",
                      fmt_rate(r["tf1"]), fmt_rate(r["torch_warm"]),
                      f"{r['sx1_cpu']:.1f}" if r["sx1_cpu"] else "-",
                      f"{r['tf1_cpu'] / r['sx1_cpu']:.2f}x" if r["tf1_cpu"] and r["sx1_cpu"] else "-"])
    return head, lines


def render_text(head, lines):
    widths = [max(len(h), *(len(l[i]) for l in lines)) if lines else len(h) for i, h in enumerate(head)]
    out = ["  ".join(h.ljust(w) for h, w in zip(head, widths)), "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(l, widths)) for l in lines]
    return "\n".join(out)


def render_md(head, lines):
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(l) + " |" for l in lines]
    return "\n".join(out)


# ---------------------------------------------------------------- micro benchmarks
def load_micro(path):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def micro_section(micro, micro_sx):
    if not micro:
        return "", None
    ctx = micro.get("context", {})
    peak = float(ctx.get("fp32_fma_peak_gflops_1core", "nan"))
    sx = {}
    if micro_sx:
        for b in micro_sx["benchmarks"]:
            sx[b["name"]] = b
    lines = [f"Measured fp32 FMA peak, 1 core ({ctx.get('simd_arch', '?')}, 16 independent accumulators): "
             f"**{peak:.0f} GFLOP/s**. OpenBLAS core: {ctx.get('openblas_core', '?')}, "
             f"{ctx.get('blas_threads', '?')} BLAS thread(s); the last two columns force "
             f"OPENBLAS_CORETYPE=SkylakeX (AVX-512 kernels).", "",
             "| benchmark | time | GFLOP/s | % peak | other | SkylakeX GFLOP/s | SkylakeX % peak |",
             "|---|---|---|---|---|---|---|"]
    for b in micro["benchmarks"]:
        name = b["name"]
        t = f"{b['real_time']:.1f} {b['time_unit']}"
        g = b.get("GFLOP/s")
        p = b.get("pct_peak")
        other = ""
        if "items_per_second" in b:
            unit = ("elem/s" if name.startswith(("tanh", "rq_spline")) else
                    ("params/s" if name.startswith("adam") else "rows/s"))
            other = f"{b['items_per_second'] / 1e6:.1f} M{unit}"
        if b.get("label"):
            other = (other + " " + b["label"]).strip()
        s = sx.get(name, {})
        lines.append(f"| {name} | {t} | {g:.1f} | {p:.0f}% | {other} | "
                     f"{s.get('GFLOP/s', float('nan')):.1f} | {s.get('pct_peak', float('nan')):.0f}% |"
                     if g is not None else f"| {name} | {t} | - | - | {other} | | |")
    return "\n".join(lines), peak


# ---------------------------------------------------------------- profile
CATEGORIES = [
    ("GEMM kernel (OpenBLAS)", lambda d, s: "blas" in d and "kernel" in s),
    ("GEMM packing/copy (OpenBLAS)", lambda d, s: "blas" in d and "copy" in s),
    ("OpenBLAS driver/threads", lambda d, s: "blas" in d),
    ("fused linear: bias copy + tanh + tanh' (non-GEMM)", lambda d, s: "Linear<" in s and "ad::" in s),
    ("Adam", lambda d, s: "Adam" in s),
    ("gradient norm", lambda d, s: "grad_norm" in s),
    ("zero_grad / parameter list / names", lambda d, s: "Module<" in s or "basic_string" in s or "collect" in s),
    ("tape bookkeeping (record, grad_sink, backward loop)", lambda d, s: "Tape<" in s or "record" in s),
    ("other tape ops (gather/scatter, exp, square, reductions, ...)", lambda d, s: "ad::" in s),
    ("data + base sampling (RNG, Box-Muller, dataset)", lambda d, s: any(k in s for k in (
        "Dataset", "Rng", "mersenne", "sample", "normal", "Mixture", "log", "sincos", "cos", "sin"))),
    ("memset/memcpy (libc)", lambda d, s: "libc" in d and any(k in s for k in ("mem", "str"))),
    ("heap (malloc/free/new)", lambda d, s: any(k in s for k in ("malloc", "free", "operator new", "operator delete",
                                                                   "_int_", "tcache"))),
    ("OS kernel", lambda d, s: "kernel" in d),
]


def parse_perf(path):
    rows = []
    pat = re.compile(r"^\s*([\d.]+)%\s+(\S+)\s+\[(.)\]\s+(.*?)\s*$")
    with open(path, errors="replace") as f:
        for line in f:
            m = pat.match(line)
            if m:
                sym = re.sub(r"(\s+-)+\s*$", "", m.group(4)).strip()
                rows.append((float(m.group(1)), m.group(2), sym))
    return rows


def categorize(rows):
    cats = {}
    for pct, dso, sym in rows:
        name = "other"
        for cname, pred in CATEGORIES:
            if pred(dso, sym):
                name = cname
                break
        cats[name] = cats.get(name, 0.0) + pct
    return sorted(cats.items(), key=lambda kv: -kv[1])


def short(sym, n=90):
    sym = re.sub(r"\(anonymous namespace\)::", "", sym)
    return sym if len(sym) <= n else sym[: n - 3] + "..."


KIND_COLS = [
    (GEMM_KIND, "GEMM"),
    ("fused linear: bias, tanh, tanh', bias grad (non-GEMM)", "linear non-GEMM"),
    ("other tape ops (gather/scatter, exp, mul, square, reductions)", "other ops"),
    ("memset/memcpy (libc)", "memset/memcpy"),
    ("tape bookkeeping", "tape"),
    ("OS kernel / page faults / VM", "OS/VM"),
]


def phases_table(ph):
    phases = ph["phases"]
    head = ["phase", "total"] + [c for _, c in KIND_COLS] + ["rest"]
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for name, total in phases.items():
        row = ph["matrix"].get(name, {})
        cells = [f"{row.get(k, 0):.1f}" if row.get(k) else "" for k, _ in KIND_COLS]
        rest = max(0.0, total - sum(row.get(k, 0) for k, _ in KIND_COLS))
        out.append(f"| {name} | **{total:.1f}** | " + " | ".join(cells) + f" | {rest:.1f} |")
    kinds = ph["kinds"]
    cells = [f"**{kinds.get(k, 0):.1f}**" for k, _ in KIND_COLS]
    rest = max(0.0, 100.0 - sum(kinds.get(k, 0) for k, _ in KIND_COLS))
    out.append("| **all** | 100 | " + " | ".join(cells) + f" | {rest:.1f} |")
    return "\n".join(out)


def profile_section(out_dir):
    parts = []
    for shape in ("A", "B"):
        p = os.path.join(out_dir, f"perf_{shape}.txt")
        j = os.path.join(out_dir, f"perf_{shape}_phases.json")
        c = os.path.join(out_dir, f"callgrind_{shape}.txt")
        if os.path.exists(j) and os.path.getsize(j) > 0:
            ph = json.load(open(j))
            exc = ph.get("excluded", {})
            exc_txt = ("; left out: " + ", ".join(f"{k} {v:.0f}%" for k, v in exc.items()) + " of all samples") if exc else ""
            parts.append(f"#### Shape {shape}: phases of a training step x kind of work "
                         f"(% of the main thread's {ph['samples']} samples, 1 BLAS thread{exc_txt})\n")
            parts.append(phases_table(ph))
            if ph.get("mem_callers"):
                parts.append("\nmemset/memcpy callers: " + "; ".join(
                    f"{short(k, 140)}: {v:.1f}%" for k, v in list(ph["mem_callers"].items())[:4]) + "\n")
        if os.path.exists(p) and os.path.getsize(p) > 0:
            rows = parse_perf(p)
            if rows:
                parts.append(f"Top symbols, shape {shape} (self time, all threads of the process):\n")
                parts.append("| % | object | symbol |\n|---|---|---|")
                parts += [f"| {pct:.1f}% | {dso} | `{short(sym)}` |" for pct, dso, sym in rows[:14]]
                parts.append("")
        elif os.path.exists(c):
            parts.append(f"#### Shape {shape} (callgrind, instructions)\n\n```\n{open(c).read()[:6000]}\n```\n")
    return "\n".join(parts)


def findings(rows, micro, micro_sx, out_dir):
    """Data-driven bullet points for RESULTS.md."""
    f = []
    if micro:
        ctx = micro.get("context", {})
        peak = float(ctx.get("fp32_fma_peak_gflops_1core", "nan"))
        by = {b["name"]: b for b in micro["benchmarks"]}
        sx = {b["name"]: b for b in micro_sx["benchmarks"]} if micro_sx else {}
        hid = [n for n in by if n.startswith("sgemm/") and "/hidden/" in n]
        if hid:
            g = [by[n]["GFLOP/s"] for n in hid]
            core = ctx.get('openblas_core', '?')
            avx512_core = core in ("SkylakeX", "Cooperlake", "SapphireRapids")
            line = ((f"**OpenBLAS runs its AVX-512 kernels here** (core `{core}`)" if avx512_core else
                     f"**OpenBLAS runs its AVX2 kernels on this AVX-512 CPU.** OpenBLAS 0.3.21 does not know this "
                     f"CPU and picks core `{core}`") +
                    f": the hidden-layer GEMMs reach "
                    f"{min(g):.0f}-{max(g):.0f} GFLOP/s, {100 * min(g) / peak:.0f}-{100 * max(g) / peak:.0f}% of the "
                    f"measured {peak:.0f} GFLOP/s fp32 FMA peak")
            if sx:
                gs = [sx[n]["GFLOP/s"] for n in hid if n in sx]
                if gs:
                    line += (f"; with `OPENBLAS_CORETYPE=SkylakeX` (AVX-512 kernels) the same GEMMs reach "
                             f"{min(gs):.0f}-{max(gs):.0f} GFLOP/s ({100 * min(gs) / peak:.0f}-{100 * max(gs) / peak:.0f}%)")
            sxr = [r for r in rows if r.get("sx1_cpu") and r.get("tf1_cpu")]
            if sxr:
                line += ", and a training step gets " + ", ".join(
                    f"{r['tf1_cpu'] / r['sx1_cpu']:.2f}x (shape {r['shape']})" for r in sxr) + " faster in CPU time"
            f.append(line + (". Forcing the variable changes nothing on this machine (the same kernels)." if avx512_core else
                             ". Setting the variable before the process starts (OpenBLAS reads it when the "
                             "library loads), or a newer OpenBLAS that knows Zen 4/5, is a free win for trflow and torch alike."))
        pairs = [(n[: -len("/blas")], by[n], by.get(n[: -len("/blas")] + "/kern"))
                 for n in by if n.startswith("gemm/") and n.endswith("/blas")]
        used = [(base, b, k) for base, b, k in pairs if k and "xsimd" in k.get("label", "")]
        if used:
            f.append("Shapes that `ad::kern::gemm` sends to trflow's own kernels instead of cblas_sgemm (skinny ones, "
                     "where cblas_sgemm's call and packing overhead dominate, and the hidden layers and wide "
                     "outputs, the packed kernel; "
                     "cblas -> trflow kernel, GFLOP/s): " +
                     "; ".join(f"{base[len('gemm/'):]} {b['GFLOP/s']:.0f} -> {k['GFLOP/s']:.0f} ({k['label']})"
                               for base, b, k in used) + ".")
    for shape in ("A", "B"):
        j = os.path.join(out_dir, f"perf_{shape}_phases.json")
        if not os.path.exists(j):
            continue
        ph = json.load(open(j))
        k = ph["kinds"]
        g = k.get(GEMM_KIND, 0)
        ms = k.get("memset/memcpy (libc)", 0)
        lin = k.get("fused linear: bias, tanh, tanh', bias grad (non-GEMM)", 0)
        oth = k.get("other tape ops (gather/scatter, exp, mul, square, reductions)", 0)
        tape = k.get("tape bookkeeping", 0)
        bw = ph["phases"].get("backward", 0)
        memsets = {kk: v for kk, v in ph.get("mem_callers", {}).items()}
        zero = sum(v for kk, v in memsets.items() if "grad_sink" in kk)
        bias = sum(v for kk, v in memsets.items() if "memcpy" in kk and "Linear" in kk)
        f.append(f"Shape {shape} profile: GEMM {g:.0f}% of the step, the fused linear node's own loops {lin:.0f}%, "
                 f"other tape ops {oth:.0f}%, memset/memcpy {ms:.0f}% (adjoint zeroing in `Tape::grad_sink` "
                 f"{zero:.1f}%, bias broadcast copy in the linear forward {bias:.1f}%), tape bookkeeping {tape:.1f}%, "
                 f"backward {bw:.0f}% of all time.")
    for r in rows:
        if r.get("allocs") is not None:
            f.append(f"Shape {r['shape']}: {r['allocs']:.0f} heap allocations per steady-state step "
                     f"({f1(r['allocs_new'], 0)} operator new, {f1(r['allocs_malloc'], 0)} malloc-family; "
                     f"{f1(r['faults'])} page faults/step); log_prob and sampling allocate "
                     f"{f1(r['lp_allocs'], 0)} / {f1(r['s_allocs'], 0)} per 1024-row chunk.")
    return f


# ---------------------------------------------------------------- spline couplings
SPLINE_BEGIN = "<!-- SPLINE_BEGIN: written by bench/summarize.py from the rqs runs of scripts/bench.sh -->"
SPLINE_END = "<!-- SPLINE_END -->"


def med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def spline_section(runs, out_dir, elapsed=None):
    """The rational-quadratic spline flow: trflow (train_bench --coupling rqs) against
    bench/torch_spline.py, 1 thread each, medians over the interleaved rounds; the spline op alone."""
    tf_all = [r for r in runs if r.get("impl") == "trflow" and is_spline(r)]
    th_all = [r for r in runs if r.get("impl") == "torch" and r.get("kind") == "train" and is_spline(r)]
    if not tf_all and not th_all:
        return None
    rows, details = [], []
    for shape in ("A", "B", "C"):
        tf = [r for r in tf_all if r.get("shape") == shape and r.get("threads") == 1]
        th_all_s = [r for r in th_all if r.get("config") == shape and r.get("threads") == 1]
        th = [r for r in th_all_s if not r.get("timed_out") and r.get("polish", True)]
        tn = [r for r in th_all_s if not r.get("timed_out") and r.get("polish") is False]
        if not tf and not th:
            continue
        tf_sps, th_sps, tn_sps = (med([r.get("steps_per_s") for r in x]) for x in (tf, th, tn))
        tf_cpu, th_cpu, tn_cpu = (med([r.get("cpu_ms_per_step") for r in x]) for x in (tf, th, tn))
        allocs = max((r["allocs_per_step"] for r in tf if r.get("allocs_per_step") is not None), default=None)
        new = max((r.get("new_per_step", 0) for r in tf), default=None)
        mal = max((r.get("malloc_per_step", 0) for r in tf), default=None)
        loads = [r.get("load_before") for r in tf + th_all_s if r.get("load_before") is not None]
        k = (tf or th)[0]
        rows.append([
            shape, f"{k.get('d', '?')}", f"{k.get('bins', '?')}", f"{k.get('tail_bound', '?')}",
            f"{k.get('params', '?')}",
            fmt_rate(tf_sps), fmt_rate(th_sps), ratio(tf_sps, th_sps),
            fmt_rate(tn_sps), ratio(tf_sps, tn_sps),
            f1(tf_cpu), f1(th_cpu), f"{th_cpu / tf_cpu:.2f}x" if tf_cpu and th_cpu else "-",
            f"{allocs:.1f} ({f1(new)} new + {f1(mal)} malloc)" if allocs is not None else "-",
            f"{fmt_rate(med([r.get('logprob_sps') for r in tf]))} / {fmt_rate(med([r.get('sample_sps') for r in tf]))}",
            f"{f1(med([r.get('peak_rss_mb') for r in tf]), 0)} / {f1(med([r.get('peak_rss_mb') for r in th]), 0)}",
            f"{min(loads):.2f}-{max(loads):.2f}" if loads else "-",
        ])
        details.append(f"| {shape} | {', '.join(fmt_rate(r['steps_per_s']) for r in tf)} | "
                       f"{', '.join(fmt_rate(r['steps_per_s']) for r in th) or '-'} | "
                       f"{', '.join(fmt_rate(r['steps_per_s']) for r in tn) or '-'} | "
                       f"{len([r for r in th_all_s if r.get('timed_out')])} | "
                       f"{f1(med([r.get('test_nll') for r in th]), 3)} | "
                       f"{', '.join(f'{l:.2f}' for l in loads)} |")
    head = ["shape", "d", "K", "B", "params", "trflow steps/s", "torch steps/s", "ratio",
            "torch, plain inverse", "ratio", "trflow CPU ms/step", "torch CPU ms/step", "torch/trflow CPU",
            "trflow allocs/step", "trflow log_prob / sampling samples/s", "peak RSS MB trflow / torch", "load"]
    md = [SPLINE_BEGIN, "## Spline couplings (rational-quadratic, `--coupling rqs`)", "",
          "`scripts/bench.sh` (spline part: `scripts/bench.sh --only-spline`): L = 8 rational-quadratic spline "
          "couplings of K bins on [-B, B] (B as `trflow train` picks it for the data), conditioner MLP "
          "hidden x 2 tanh with 3K - 1 outputs per updated coordinate, batch 1024, loss NLL + 0.01 T, Adam; "
          "trflow: `train_bench --coupling rqs --threads 1` (median of its timed repetitions after 60 warm-up "
          "steps); PyTorch: `bench/torch_spline.py --threads 1` (the same flow written from the same equations, "
          "median of its timed repetitions after warm-up; same shapes and data as torch_realnvp.py, shape B "
          "on trflow's gaussian:16 rows). One thread on each side: trflow's `--threads 1` with one OpenBLAS "
          "thread, torch `set_num_threads(1)` and OPENBLAS_NUM_THREADS=1 for both. Runs are interleaved "
          "(trflow, torch, torch with the plain inverse, per round); figures are medians over the rounds. "
          "\"torch\" inverts with the closed-form root plus the one safeguarded Newton step trflow takes "
          "(identical maths); \"plain inverse\" is the closed-form root alone (as nflows), a little less work "
          "for torch. Steps/s are wall-clock; CPU ms/step is process CPU time per step (robust to other "
          "load). `allocs/step`: heap allocations per steady-state training step (worst round). "
          "The conditioner's last layer has |A| (3K - 1) outputs (shape B: 128 -> 184, 11x the affine "
          "coupling's 16), so at shape B the dense layers' GEMMs, which both sides run in the same OpenBLAS, "
          "take most of a step and bound the ratio; the spline op alone is compared further down.", "",
          render_md(head, rows), ""]
    md += ["Per-round steps/s (trflow; torch; torch plain inverse), torch timeouts, torch test NLL after its "
           "short run, and the 1-minute load before each run:", "",
           "| shape | trflow | torch | torch plain inverse | torch timeouts | torch test NLL | loads |",
           "|---|---|---|---|---|---|---|"] + details + [""]
    # the op alone: micro_bench's rq_spline entries against torch_spline.py --op-bench
    micro = load_micro(os.path.join(out_dir, "micro.json"))
    ops = [r for r in runs if r.get("kind") == "op" and r.get("impl") == "torch"]
    tmb = {}
    for r in ops:
        for b in r.get("benchmarks", []):
            tmb.setdefault(b["name"], []).append(b["elements_per_s"])
    trb = {b["name"]: b for b in micro["benchmarks"]} if micro else {}
    names = [n for n in trb if n.startswith("rq_spline/")] or sorted(tmb)
    if names:
        md += ["The spline op alone (`ad::rq_spline` on a tape, micro_bench `rq_spline/*`; torch: `rq_spline()` "
               "of torch_spline.py, `--op-bench`): m = 1024 rows x n coordinates, K = 8, B = 3, parameters "
               "~ U(-2, 2), about 5% of the values outside [-B, B]; million spline elements (m n) per CPU-second, "
               "1 thread. fwd: forward values + log-det; fwd_bwd: the same plus backward to values and "
               "parameters; inv / inv_bwd: the closed-form inverse.", "",
               "| benchmark | trflow M elem/s | time per call | torch M elem/s | trflow / torch |",
               "|---|---|---|---|---|"]
        for n in names:
            b = trb.get(n)
            te = med(tmb.get(n, []))
            ips = b.get("items_per_second") if b else None
            t_call = f"{b['real_time']:.1f} {b['time_unit']}" if b else "-"
            md.append(f"| {n} | {f'{ips / 1e6:.1f}' if ips else '-'} | {t_call} | "
                      f"{f'{te / 1e6:.2f}' if te else '-'} | {ratio(ips, te)} |")
        md.append("")
    checks = [r for r in runs if r.get("kind") == "check_logprob"]
    if checks:
        md += ["Agreement of the PyTorch flow with trflow (`torch_spline.py --trflow-model M --check-logprob P`): "
               "a model trained by `trflow train --coupling rqs --layers 8 --steps 300` is rebuilt in PyTorch with trflow's "
               "parameters; log p of the rows of P (half N(0, (B/2)^2), a quarter uniform on [-1.5B, 1.5B], a "
               "quarter with coordinates exactly at +-B, 0, +-3B, just inside B), F(x) and log|det| on base "
               "points, and the gradients of sum log p and of T, against bench/logprob_dump (trflow's "
               "flows::Inference / tape, float32 as trained and the same model rebuilt as Flow<double>). "
               "float64 against float64 checks the formulas; float32 against float32 also carries each side's "
               "own float32 rounding (the two `float32 vs float64` columns), which bin-relative positions "
               "xi = (x - X_k)/dx amplify in narrow bins.", "",
               "| data (model) | d | rows outside box | log p range | max abs diff log p, float64 | "
               "float32 | float32, rows in box | torch float32 vs float64 | trflow float32 vs float64 | "
               "F(x), log det: float64 / float32 | grad sum log p (rel), float64 | grad T (rel), float64 | pass |",
               "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for c in checks:
            lo, hi = c.get("logp_range", [None, None])
            md.append(f"| {c.get('label', os.path.basename(str(c.get('model'))))} | {c.get('d')} | "
                      f"{c.get('rows_outside_box')} | {lo} .. {hi} | "
                      f"{c['max_abs_diff_torch64_vs_trflow64']:.1e} | {c['max_abs_diff_torch32_vs_trflow32']:.1e} | "
                      f"{(c.get('max_abs_diff_torch32_vs_trflow32_rows_in_box') or 0):.1e} | "
                      f"{c['max_abs_diff_torch32_vs_torch64']:.1e} | {c['max_abs_diff_trflow32_vs_trflow64']:.1e} | "
                      f"{c['push_max_abs_diff_torch64_vs_trflow64']:.1e} / {c['push_max_abs_diff_torch32_vs_trflow32']:.1e} | "
                      f"{c['grad_max_rel_diff_torch64_vs_trflow64']:.1e} | "
                      f"{c['transport_grad_max_rel_diff_torch64_vs_trflow64']:.1e} | {'yes' if c.get('pass') else '**no**'} |")
        md.append("")
    sites = os.path.join(out_dir, "alloc_sites_rqs.txt")
    if os.path.exists(sites):
        keep = [l for l in open(sites).read().splitlines()
                if l.startswith("allocation sites") or re.match(r"^\s+[\d.]+\s+(new|malloc)\s", l)]
        if keep:
            md += ["Heap allocations per steady-state step, spline flow, shape A "
                   "(`TRFLOW_BENCH_ALLOC_TRACE=1 train_bench --shape A --coupling rqs`):", "", "```", *keep[:20],
                   *(["(none: no heap allocation in the window)"] if len(keep) <= 1 else []), "```", ""]
    md.append(f"Spline runs: {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}"
              + (f", commit {sh('git -C ' + os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + ' rev-parse --short HEAD')}")
              + (f", PyTorch {next((r.get('torch') for r in th_all if r.get('torch')), '?')}")
              + (f" ({elapsed} s)" if elapsed else "") + ".")
    md += ["", SPLINE_END]
    return "\n".join(md)


def splice_spline(path, section):
    """Replaces the spline section of an existing RESULTS.md (or inserts it before the
    micro-benchmarks, or at the end); every other line of the file is kept."""
    text = open(path).read() if os.path.exists(path) else "# trflow benchmark results\n"
    if SPLINE_BEGIN.split(":")[0] in text and SPLINE_END in text:
        a = text.index(SPLINE_BEGIN.split(":")[0])
        b = text.index(SPLINE_END) + len(SPLINE_END)
        text = text[:a] + section + text[b:]
    elif "\n## Micro-benchmarks" in text:
        a = text.index("\n## Micro-benchmarks") + 1
        text = text[:a] + section + "\n\n" + text[a:]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    with open(path, "w") as f:
        f.write(text)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", required=True)
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--markdown", required=True)
    ap.add_argument("--elapsed", type=int, default=0)
    ap.add_argument("--spline-only", action="store_true",
                    help="update only the spline section of --markdown (the runs are spline runs alone)")
    a = ap.parse_args()

    runs = load_runs(a.results)
    spline = spline_section(runs, a.out_dir, a.elapsed if a.spline_only else None)
    if a.spline_only:
        if spline:
            print(spline)
            splice_spline(a.markdown, spline)
            print(f"updated the spline section of {a.markdown}")
        return
    rows = shape_rows(runs)
    micro = load_micro(os.path.join(a.out_dir, "micro.json"))
    micro_sx = load_micro(os.path.join(a.out_dir, "micro_skylakex.json"))
    micro_md, peak = micro_section(micro, micro_sx)
    head, lines = main_table(rows, peak)
    print()
    print(render_text(head, lines))
    print()
    chead, clines = cpu_table(rows)
    print("Load-robust view (CPU time per training step, 1 thread, both sides warm):")
    print(render_text(chead, clines))
    print()

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    commit = sh(f"git -C {root} rev-parse --short HEAD")
    # Uncommitted changes other than this file itself (which the previous run wrote).
    dirty = [l for l in sh(f"git -C {root} status --porcelain --untracked-files=no").splitlines()
             if l.strip() and not l.endswith("bench/RESULTS.md")]
    model = sh("lscpu | sed -n 's/^Model name: *//p'")
    cores = sh("nproc")
    corename = sh("sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -1")
    torch_ver = next((r.get("torch") for r in runs if r.get("torch")), "?")
    ocore = micro.get("context", {}).get("openblas_core", "?") if micro else "?"

    md = ["# trflow benchmark results", "",
          f"- date: {datetime.datetime.now().strftime('%Y-%m-%d %H:%M %Z').strip()}",
          f"- machine: {model or corename} ({cores} cores), OpenBLAS 0.3.21 core `{ocore}`"
          + (f", fp32 FMA peak {peak:.0f} GFLOP/s/core (measured)" if peak else ""),
          f"- commit: {commit}{' (with uncommitted changes)' if dirty else ''}; PyTorch {torch_ver}",
          f"- command: `scripts/bench.sh` ({a.elapsed} s)", "",
          "## Training, log_prob and sampling throughput", "",
          "A training step = NLL pass + transport pass (β = 0.01, direction gen) + backward + Adam "
          "(trflow: `flows::Trainer<float>::step`; PyTorch: `torch_realnvp.py --beta 0.01`). "
          "trflow figures are the median of several timed repetitions after warm-up; the torch "
          "1-thread figure is the better of torch_realnvp.py's own steps/s over its whole run "
          "and the warm-started rate of the same training loop from bench/torch_throughput.py. "
          "`per-core ratio` = trflow 1 thread / torch 1 thread (> 1: trflow faster), both with "
          "OPENBLAS_NUM_THREADS=1. `GEMM GFLOP/step`: the dense layers' forward, x̄ and W̄ products of both "
          "passes (6 · batch · Σ in·out per pass and coupling); GFLOP/s divides it by trflow's CPU time per "
          "1-thread step, against the fp32 FMA peak measured below. `2thr / 1thr`: trflow's own scaling "
          "on the two cores, the median over rounds of the ratio of a 2-thread run to the 1-thread run just "
          "before it (`train_bench --no-eval`, pairs listed under the per-run details; the `trflow 2thr` "
          "column is the run beside torch's, minutes from the 1-thread one). log_prob and sampling: chunks of "
          "1024 rows, best of 1 and 2 threads on both sides (torch under `torch.no_grad()`). "
          "Peak RSS: ru_maxrss of the 1-thread runs (torch_realnvp.py's includes its "
          "20000-sample test evaluation and the Python/torch runtime, ~240 MB on its own). "
          "`allocs/step`: heap allocations (operator new + malloc family) per steady-state trflow "
          "training step. Threads: trflow splits each batch's rows across N threads, each with its own "
          "tape and single-threaded BLAS (`--threads N`, flows/parallel.hpp); the torch runs get "
          "`--threads N` (intra-op threads) and OPENBLAS_NUM_THREADS=N (torch.set_num_threads alone "
          "leaves PyTorch's OpenBLAS at 2 threads).", "",
          render_md(head, lines), "",
          "The machine is shared (other sessions compile at nice 0), so wall-clock rates depend on "
          "what else ran. CPU time per step is not deflated by other processes: trflow's is "
          "train_bench's process CPU time per timed step; torch's comes from "
          "`bench/torch_throughput.py --train-steps`, which runs torch_realnvp.py's own training "
          "loop warm (after warm-up steps) and reads `time.process_time()`.", "",
          render_md(*cpu_table(rows)), ""]
    md.append("Per-run details (load = 1-minute load average just before the run; the machine is shared):\n")
    md.append("| shape | trflow reps steps/s (1thr; 2thr) | torch 1thr / 2thr steps/s | params | "
              "alloc window | allocs/step: new + malloc (bytes) | page faults/step | log_prob / sampling allocs per 1024-chunk | loads |")
    md.append("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        reps = "; ".join(f"{', '.join(f'{v:.1f}' for v in rr)}" for _, rr in sorted(r["reps"], key=lambda x: x[0]) if rr)
        t1s = fmt_rate(r['torch1']) if r['torch1'] else ("timed out" if "train 1thr" in r["timeouts"] else "-")
        t2s = fmt_rate(r['torch2']) if r['torch2'] else ("timed out" if "train 2thr" in r["timeouts"] else "-")
        md.append(f"| {r['shape']} | {reps} | {t1s} / {t2s} | {r['params']} | "
                  f"{r['alloc_window']} | {f1(r['allocs_new'])} + {f1(r['allocs_malloc'])} ({f1(r['alloc_bytes'], 0)} B) | "
                  f"{f1(r['faults'])} | "
                  f"{f1(r['lp_allocs'])} / {f1(r['s_allocs'])} | "
                  f"{', '.join(f'{l:.1f}' for l in r['loads'])} |")
    if any(r.get("scaling") for r in rows):
        md += ["", "trflow's scaling, side by side (`train_bench --no-eval`, a 1-thread run, then a 2-thread run "
               "just after it, per round): steps/s 1thr / 2thr and their ratio per round.", "",
               "| shape | rounds: 1thr / 2thr steps/s (ratio) | median ratio |", "|---|---|---|"]
        for r in rows:
            if r.get("scaling"):
                cells = ", ".join(f"{fmt_rate(a)} / {fmt_rate(b)} ({b / a:.2f})" for a, b in r["scaling"])
                md.append(f"| {r['shape']} | {cells} | {r['scaling_ratio']:.2f}x |")
    md.append("")
    if any(r.get("tape") and r["tape"][0] for r in rows):
        md += ["Memory of one trflow training step (a fresh tape after objective + backward, as `Trainer::step` "
               "records it; \"scratch\" is the nodes' scratch arrays plus the tape's one workspace, where `linear_act` puts z̄ = ȳ ⊙ act'(y) for its GEMMs, one node at a time):", "",
               "| shape | tape nodes | values MB | adjoints MB | scratch MB | params + grads + Adam MB | "
               "peak RSS trflow MB | peak RSS torch MB |", "|---|---|---|---|---|---|---|---|"]
        for r in rows:
            t = r.get("tape")
            if t and t[0]:
                md.append(f"| {r['shape']} | {t[0]} | {t[1]:.0f} | {t[2]:.0f} | {t[3]:.0f} | {t[4]:.0f} | "
                          f"{f1(r['rss_tf'], 0)} | {f1(r['rss_torch'], 0)} |")
        md.append("")
    if spline:
        md += [spline, ""]
        print(spline)
        print()
    if micro_md:
        md += ["## Micro-benchmarks (Google Benchmark, 1 BLAS thread)", "", micro_md, ""]
    fl = findings(rows, micro, micro_sx, a.out_dir)
    if fl:
        md += ["## Findings", ""] + [f"- {x}" for x in fl] + [""]
    prof = profile_section(a.out_dir)
    if prof:
        md += ["## Profile: where a training step's time goes", "",
               "`perf record -F 999 --call-graph dwarf` of `train_bench --threads 1 --no-eval` (5 warm-up "
               "steps, 40 timed; cpu-clock sampling: the VM exposes no hardware counters), attributed by "
               "`bench/perf_phases.py`: rows are the phase of the step a sample falls in (innermost "
               "recognised frame), columns what the leaf frame is doing. \"linear non-GEMM\" is the fused "
               "linear node's own loops (bias broadcast, tanh, tanh', bias gradient); \"other ops\" "
               "every other tape op (take/scatter columns, exp, mul, square, row sums, ...); \"OS/VM\" "
               "is kernel time, mostly timer-interrupt and hypervisor entry (pvm_irq_enable; there are "
               "no page faults in the steady state). Percentages are of the main thread's samples; "
               "OpenBLAS's worker thread, which spin-waits in sched_yield for a while after the "
               "library loads although it is given no work with 1 thread (in the timed steps "
               "train_bench's CPU time equals its wall time, so the spin is a start-up transient), "
               "and process start-up are left out.", "", prof]
    sites = os.path.join(a.out_dir, "alloc_sites.txt")
    if os.path.exists(sites):
        txt = open(sites).read().strip()
        keep = [l for l in txt.splitlines() if l.startswith("allocation sites") or re.match(r"^\s+[\d.]+\s+(new|malloc)\s", l)]
        if keep:
            md += ["## Heap allocations per steady-state training step (shape A)", "",
                   "train_bench counts every heap allocation between steps 11 and 60 (2 and 3 for shape C): "
                   "a replaced operator new and an interposed malloc/calloc/realloc/posix_memalign "
                   "(xtensor's arrays and OpenBLAS allocate through the C allocator). "
                   "`TRFLOW_BENCH_ALLOC_TRACE=1 train_bench --shape A` groups them by the innermost "
                   "project frames (dladdr; inlined frames do not appear; "
                   "`TRFLOW_BENCH_ALLOC_ABORT=1` under gdb gives the full stack):", "",
                   "```", *keep[:40], *(["(none: no heap allocation in the window)"] if len(keep) <= 1 else []),
                   "```", ""]
    # Sections written by other scripts (bench/d_scaling.sh's table) between KEEP markers carry over.
    if os.path.exists(a.markdown):
        text = open(a.markdown).read()
        md += [m.group(0) + "\n" for m in re.finditer(r"<!-- KEEP_BEGIN.*?<!-- KEEP_END -->", text, re.S)]
    with open(a.markdown, "w") as f:
        f.write("\n".join(md) + "\n")
    print(f"wrote {a.markdown}")


if __name__ == "__main__":
    main()
