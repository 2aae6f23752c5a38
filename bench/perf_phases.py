"""Attributes perf samples (recorded with --call-graph dwarf) to the phases of a training step
and to the kind of work at the leaf, from `perf script -F ip,sym,dso` on stdin.

  perf script -i perf.data -F pid,tid,ip,sym,dso | /usr/bin/python3 bench/perf_phases.py > phases.json

Phase = the outermost recognised frame (NLL pass through G, transport pass through F, backward,
Adam, ...); kind = what the leaf frame is (OpenBLAS GEMM, memset/memcpy, the fused linear node's
own loops, other tape ops, tape bookkeeping, ...). Percentages are of the main thread's samples
outside the Trainer's constructor; samples of other threads (OpenBLAS's worker, which spin-waits
in sched_yield for a while after the library loads even when it is given no work) and of process
start-up are left out and reported under "excluded" (as % of all samples). Also lists who calls
memset/memmove.
"""
import json
import re
import sys

FRAME = re.compile(r"^\s*([0-9a-f]+)\s+(.*?)(?:\s+\((.*)\))?\s*$")
HEADER = re.compile(r"^\s*(\d+)/(\d+)\s*$")  # pid/tid (perf script -F pid,tid,...)

PHASES = [  # (name, predicate on a frame's symbol), checked from the root of the stack towards the leaf
    ("init", lambda s: "Trainer<float>::Trainer" in s),
    ("zero_grad (parameter list)", lambda s: "Module<float>::zero_grad" in s),
    ("Adam", lambda s: "Adam<float>::step" in s),
    ("gradient norm", lambda s: "grad_norm<float>" in s or "clip_grad_norm" in s),
    ("backward", lambda s: "Tape<float>::backward" in s or "Tape<float>::run_backward" in s),  # backward tail-calls run_backward
    ("forward: NLL pass through G", lambda s: "Flow<float>::inverse" in s),
    ("forward: transport pass through F", lambda s: "Flow<float>::forward" in s),
    ("data + base sampling", lambda s: "sample_batch" in s or "StandardNormal<float>::sample" in s),
    ("forward: cost terms (log α0, T, map cost)", lambda s: "objective<float>" in s),
]


GEMM_KIND = "GEMM (OpenBLAS or trflow kernels, with packing)"  # summarize.py reads this name too


def kind_of(frames):
    """frames: [(sym, dso)] leaf first (inlined frames carry the dso of the frame below them)."""
    sym, dso = frames[0]
    syms = [s for s, _ in frames]
    if "openblas" in dso or "libblas" in dso:
        return GEMM_KIND
    # trflow's own GEMM kernels, whose leaf frames are often xsimd functions inlined into them:
    # any frame below the op (before the first tape frame) that is one of them
    for s, _ in frames[:24]:
        if "Tape<float>::" in s:
            break
        if "kern::packed::" in s or re.search(r"kern::gemm\b|kern::gemm_|outer_sum", s):
            return GEMM_KIND
    if dso.startswith("[kernel") or re.match(r"^ffffffff", sym or ""):
        return "OS kernel / page faults / VM"
    if sym.startswith("__mem") or sym.startswith("memset") or sym.startswith("memcpy"):
        return "memset/memcpy (libc)"
    if any(k in sym for k in ("malloc", "_int_free", "free", "operator new", "operator delete", "tcache")):
        return "heap allocation"
    head = syms[:24]
    if any("Tape<float>::record" in s or "Tape<float>::run_backward" in s for s in head):
        # inside an op: the fused linear node's own loops vs every other op
        upto = []
        for s in head:
            if "Tape<float>::" in s:
                break
            upto.append(s)
        if any("Linear<float>" in s for s in upto):
            return "fused linear: bias, tanh, tanh', bias grad (non-GEMM)"
        if upto:
            return "other tape ops (gather/scatter, exp, mul, square, reductions)"
    if any(k in sym for k in ("Tape<float>", "grad_sink", "Var<float>", "ad::tape_of", "ad::record")):
        return "tape bookkeeping"
    if any(k in sym for k in ("Adam", "grad_norm")):
        return "optimizer / gradient norm loops"
    if any(k in s for s in head for k in ("Rng", "Dataset", "Mixture", "sample_batch", "fill_normal", "normal")) \
            or any(k in sym for k in ("sincos", "log", "exp")):
        return "RNG / data"
    if "basic_string" in sym or "collect" in sym:
        return "strings (parameter names)"
    return "other"


def main():
    samples, threads = [], []
    frames = []
    main_thread = True
    for line in sys.stdin:
        if not line.strip():
            if frames:
                samples.append(frames)
                threads.append(main_thread)
            frames = []
            continue
        h = HEADER.match(line)
        if h:
            main_thread = h.group(1) == h.group(2)
            continue
        m = FRAME.match(line)
        if not m:
            continue
        sym, dso = m.group(2), m.group(3) or ""
        inlined = sym.endswith("(inlined)") or dso == "inlined"
        sym = sym.replace(" (inlined)", "").strip()
        if dso == "inlined":
            dso = ""
        frames.append([sym, dso])
    if frames:
        samples.append(frames)
        threads.append(main_thread)
    # Inlined frames inherit the dso of the next real frame below them.
    for fr in samples:
        nxt = ""
        for f in reversed(fr):
            if f[1]:
                nxt = f[1]
            else:
                f[1] = nxt
        # inlined leaf frames: take the dso of the first real frame towards the root
        d = ""
        for f in fr:
            if f[1]:
                d = f[1]
                break
        for f in fr:
            if not f[1]:
                f[1] = d
            else:
                break

    matrix, phases, kinds, mem_callers, others = {}, {}, {}, {}, {}
    total = all_samples = 0
    excluded = {}
    for fr, is_main in zip(samples, threads):
        syms = [s for s, _ in fr]
        phase = "other"
        if any(PHASES[0][1](s) for s in syms):
            phase = "init"
        elif not is_main:
            phase = "other threads (OpenBLAS workers)"
        elif "main" not in syms and any(s.startswith("_dl_") or s == "_start" for s in syms):
            phase = "process start (dynamic loader)"
        elif "main" not in syms:
            phase = "main thread, call stack not unwound"
        else:
            for s in syms:  # the innermost recognised frame: Flow::inverse inside objective is the NLL pass
                hit = next((name for name, pred in PHASES if pred(s)), None)
                if hit:
                    phase = hit
                    break
        all_samples += 1
        if phase in ("init", "other threads (OpenBLAS workers)", "process start (dynamic loader)"):
            excluded[phase] = excluded.get(phase, 0) + 1
            continue
        total += 1
        kind = kind_of(fr)
        phases[phase] = phases.get(phase, 0) + 1
        kinds[kind] = kinds.get(kind, 0) + 1
        matrix.setdefault(phase, {})
        matrix[phase][kind] = matrix[phase].get(kind, 0) + 1
        if kind == "other":
            others[fr[0][0] + " | " + " < ".join(syms[1:3])] = others.get(fr[0][0] + " | " + " < ".join(syms[1:3]), 0) + 1
        if kind == "memset/memcpy (libc)":
            caller = next((s for s in syms[1:] if (s.startswith("ad::") or s.startswith("flows::") or s.startswith("nn::")
                                                     or "_of<float" in s or s in ("forward", "vjp"))
                           and "kern::" not in s), "?")
            callers = [s for s in syms[1:] if s.startswith(("ad::", "flows::", "nn::")) or "_of<float" in s][:2]
            key = f"{fr[0][0].split('_avx')[0]} <- {' <- '.join(callers) or caller}"
            mem_callers[key] = mem_callers.get(key, 0) + 1

    def pct(d):
        return {k: round(100.0 * v / total, 2) for k, v in sorted(d.items(), key=lambda kv: -kv[1])}

    print(json.dumps(dict(samples=total, all_samples=all_samples,
                          excluded={k: round(100.0 * v / max(1, all_samples), 2) for k, v in excluded.items()},
                          phases=pct(phases), kinds=pct(kinds),
                          matrix={p: pct(m) for p, m in matrix.items()},
                          mem_callers=pct(mem_callers),
                          other_leaves=dict(list(pct(others).items())[:12])), indent=1))


if __name__ == "__main__":
    main()
