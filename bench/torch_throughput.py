"""log_prob and sampling throughput of the PyTorch reference model (the yardstick for trflow's
train_bench): the very Flow of torch_realnvp.py, imported from it, under torch.no_grad().

  log_prob: -flow.nll(y) on data rows, in chunks of --chunk rows (1024, as trflow's bench).
  sampling: x ~ N(0, I) drawn with torch.randn, then pushed through the couplings, in chunks.

Warm-up pass, then --reps timed passes of --n samples; prints one JSON line with the medians
(samples/s) and the peak RSS. Throughput does not depend on the data values, so the data rows
are plain normal draws of the right dimension.

With --train-steps S (> 0) it also times torch_realnvp.py's training step (the same loop: data
batch, lam*NLL + beta*T, zero_grad, backward, Adam; beta 0.01) after --train-warmup steps, in
--reps repetitions of S steps: median wall-clock steps/s and CPU ms/step (time.process_time, all
threads), a warm-started figure that, unlike torch_realnvp.py's whole-run average, matches how
trflow's train_bench measures, and a CPU-time figure that other load on a shared machine does
not deflate (process CPU time; the main thread's alone is reported too). Run it with
OPENBLAS_NUM_THREADS equal to --threads: torch.set_num_threads does not limit the OpenBLAS that
PyTorch's CPU GEMMs call, whose worker thread otherwise computes and spin-waits beside a
"1-thread" run.

  /usr/bin/python3 bench/torch_throughput.py --config B --threads 1 [--realnvp ../shared/bench/torch_realnvp.py]
"""
import argparse
import importlib.util
import json
import os
import resource
import statistics
import time

import torch


def load_reference(path):
    spec = importlib.util.spec_from_file_location("torch_realnvp", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser()
    p.add_argument("--config", choices=["A", "B", "C"], required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--n", type=int, default=0, help="samples per timed pass (default: 16384; 8192 for C)")
    p.add_argument("--chunk", type=int, default=1024)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-steps", type=int, default=0)
    p.add_argument("--train-warmup", type=int, default=10)
    p.add_argument("--beta", type=float, default=0.01)
    p.add_argument("--data", default=None, help="training data for --train-steps (default: the config's)")
    p.add_argument("--realnvp", default=os.path.join(here, "..", "..", "shared", "bench", "torch_realnvp.py"))
    a = p.parse_args()
    ref = load_reference(a.realnvp)
    cfg = ref.CONFIGS[a.config]
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    d = 2 if cfg["data"] == "8gaussians" else int(cfg["data"][5:])
    n = a.n or (8192 if a.config == "C" else 16384)
    flow = ref.Flow(d, cfg["layers"], cfg["hidden"], cfg["depth"], a.seed)
    # Non-zero last layers, so that exp(w) is not the identity (as after some training).
    with torch.no_grad():
        for f in flow.layers:
            f.h[-1].weight.uniform_(-0.05, 0.05)
            f.h[-1].bias.uniform_(-0.05, 0.05)
    y = torch.randn(n, d)

    def log_prob_pass():
        s = 0.0
        for start in range(0, n, a.chunk):
            s += (-flow.nll(y[start:start + a.chunk]))[0].item()
        return s

    def sample_pass():
        s = 0.0
        for start in range(0, n, a.chunk):
            x = torch.randn(min(a.chunk, n - start), d)
            for f in flow.layers:
                x = f(x)
            s += x[0, 0].item()
        return s

    rates = {}
    if a.train_steps > 0:
        import numpy as np
        tflow = ref.Flow(d, cfg["layers"], cfg["hidden"], cfg["depth"], a.seed)
        opt = torch.optim.Adam(tflow.parameters(), lr=1e-3)
        rng = np.random.default_rng(a.seed)
        data = a.data or cfg["data"]

        def train_step():
            yb = torch.from_numpy(ref.toy(data, cfg["batch"], rng))
            loss = tflow.nll(yb).mean()
            if a.beta > 0:
                x = torch.randn(cfg["batch"], d)
                tc, _ = tflow.transport(x)
                loss = loss + a.beta * tc.mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        for _ in range(a.train_warmup):
            train_step()
        wall, cpu, main_cpu = [], [], []
        for _ in range(a.reps):
            t0, c0, m0 = time.perf_counter(), time.process_time(), time.thread_time()
            for _ in range(a.train_steps):
                train_step()
            wall.append(a.train_steps / (time.perf_counter() - t0))
            cpu.append(1e3 * (time.process_time() - c0) / a.train_steps)
            main_cpu.append(1e3 * (time.thread_time() - m0) / a.train_steps)
        rates["train_steps_per_s"] = statistics.median(wall)
        rates["train_cpu_ms_per_step"] = statistics.median(cpu)
        rates["train_main_thread_cpu_ms_per_step"] = statistics.median(main_cpu)
        rates["train_reps"] = [round(v, 2) for v in wall]
        del tflow, opt
    with torch.no_grad():
        for name, fn in (("logprob_sps", log_prob_pass), ("sample_sps", sample_pass)):
            fn()  # warm-up
            r = []
            for _ in range(max(3, a.reps)):
                t0 = time.perf_counter()
                fn()
                r.append(n / (time.perf_counter() - t0))
            rates[name] = statistics.median(r)
            rates[name.replace("_sps", "_reps")] = [round(v, 1) for v in r]
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(dict(impl="torch", config=a.config, d=d, threads=a.threads, n=n, chunk=a.chunk,
                          logprob_sps=round(rates["logprob_sps"], 1), sample_sps=round(rates["sample_sps"], 1),
                          logprob_reps=rates["logprob_reps"], sample_reps=rates["sample_reps"],
                          peak_rss_mb=round(rss_mb, 1), torch=torch.__version__,
                          **{k: (round(v, 3) if isinstance(v, float) else v) for k, v in rates.items()
                             if k.startswith("train")})))


if __name__ == "__main__":
    main()
