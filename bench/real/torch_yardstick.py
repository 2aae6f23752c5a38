"""The PyTorch yardstick for the real-data benchmark: the same spline flow as `trflow train`'s
default for a data file, trained by the same validation procedure, scored on the same test rows.

What "the same" means here (bench/torch_spline.py holds the model, written from the equations):
  - the flow: 4 rational-quadratic spline couplings (8 bins on [-B, B], B as trflow picks it:
    max(3, 1.2 x the 99.9th percentile of |y|), rounded up to 0.5), tanh MLP conditioners 64 x 2
    with a zero-initialized last layer, coupling splits as flows::make_flow draws them (not the
    same random permutation as trflow's: torch's generator); dropout p after each hidden layer
    (--dropout, default 0.2 as trflow's data-file default);
  - the objective: NLL + beta T (beta = 0.01, T on 512 fresh N(0, I) draws), Adam, lr 2e-3 with
    100 warm-up steps and a cosine decay over --steps (10 000), batch 512 rows drawn with
    replacement from the training rows;
  - validation: a seeded 10 % of the training rows held out; the validation NLL every
    ceil(2 rows / batch) steps clamped to [10, 100] (and at step 0); the parameters with the lowest
    one kept; stop after 20 evaluations without improvement;
  - the score: the kept model's mean NLL over the test rows, in nats (the data are the ones
    bench/real/prepare.py writes, standardized with the training rows' statistics).
One JSON line per run:
    OPENBLAS_NUM_THREADS=1 /usr/bin/python3 bench/real/torch_yardstick.py --data DIR --name breast_cancer
Needs Debian's python3-torch and python3-numpy.
"""
import argparse
import copy
import importlib.util
import json
import math
import os
import time

import numpy as np
import torch
import torch.nn as nn


def load_spline_module():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "torch_spline.py")
    spec = importlib.util.spec_from_file_location("torch_spline", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def add_dropout(flow, p):
    """Dropout after every hidden activation of the couplings' MLPs (as nn::MLP::set_dropout)."""
    if p <= 0:
        return
    for layer in flow.layers:
        mods = list(layer.net)
        out = []
        for i, m in enumerate(mods):
            out.append(m)
            if i + 1 < len(mods) and not isinstance(m, nn.Linear):
                out.append(nn.Dropout(p))
        layer.net = nn.Sequential(*out)


def tail_bound(rows):
    y = np.abs(rows).ravel()
    q = np.partition(y, int(0.999 * (y.size - 1)))[int(0.999 * (y.size - 1))]
    return math.ceil(max(3.0, 1.2 * float(q)) * 2.0) / 2.0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="the directory bench/real/prepare.py wrote")
    p.add_argument("--name", required=True, help="breast_cancer, wine, diabetes or digits")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--bins", type=int, default=8)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--steps", type=int, default=10000)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--beta", type=float, default=0.01)
    p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--patience", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    ts = load_spline_module()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    train = np.load(os.path.join(a.data, f"{a.name}_train.npy")).astype(np.float64)
    test = torch.from_numpy(np.load(os.path.join(a.data, f"{a.name}_test.npy")).astype(np.float64))
    order = np.random.default_rng(a.seed + 29).permutation(len(train))
    n_val = int(math.ceil(a.val_fraction * len(train)))
    val = torch.from_numpy(train[order[:n_val]])
    fit = train[order[n_val:]]
    d = fit.shape[1]
    B = tail_bound(fit)
    flow = ts.spline_flow(d, a.layers, a.hidden, a.depth, a.bins, B, a.seed)
    add_dropout(flow, a.dropout)
    flow = flow.double()
    opt = torch.optim.Adam(flow.parameters(), lr=a.lr)
    every = min(100, max(10, math.ceil(2 * len(fit) / a.batch)))

    def lr_at(t):
        if t < a.warmup:
            return a.lr * (t + 1) / a.warmup
        return 0.5 * a.lr * (1 + math.cos(math.pi * min(1.0, (t - a.warmup) / max(1, a.steps - a.warmup))))

    def val_nll():
        flow.eval()
        with torch.no_grad():
            v = flow.nll(val).mean().item()
        flow.train()
        return v

    best, best_step, since, state = val_nll(), 0, 0, copy.deepcopy(flow.state_dict())
    start = time.perf_counter()
    step = 0
    for step in range(1, a.steps + 1):
        for g in opt.param_groups:
            g["lr"] = lr_at(step - 1)
        y = torch.from_numpy(fit[rng.integers(0, len(fit), a.batch)])
        loss = flow.nll(y).mean()
        if a.beta > 0:
            tc, _ = flow.transport(torch.randn(a.batch, d, dtype=torch.float64))
            loss = loss + a.beta * tc.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % every == 0 or step == a.steps:
            v = val_nll()
            if v < best:
                best, best_step, since, state = v, step, 0, copy.deepcopy(flow.state_dict())
            else:
                since += 1
                if a.patience and since >= a.patience:
                    break
    seconds = time.perf_counter() - start
    flow.load_state_dict(state)
    flow.eval()
    with torch.no_grad():
        test_nll = flow.nll(test).mean().item()
    print(json.dumps(dict(impl="torch", name=a.name, test_nll=round(test_nll, 4), val_nll=round(best, 4),
                          best_step=best_step, steps=step, seconds=round(seconds, 1), tail_bound=B,
                          dropout=a.dropout, threads=a.threads, torch=torch.__version__)))


if __name__ == "__main__":
    main()
