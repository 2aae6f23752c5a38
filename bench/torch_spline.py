"""Rational-quadratic spline couplings in PyTorch: the yardstick for trflow's `--coupling rqs`.

Written from the equations (Durkan, Bekasov, Murray, Papamakarios, "Neural Spline Flows", 2019)
with trflow's conventions (autodiff/src/spline.hpp, flows/src/layers.cpp), not from a library:

  per updated coordinate the conditioner gives 3K - 1 numbers [u^w_0..K-1 | u^h_0..K-1 | u^d_1..K-1],
  blocks laid out coordinate after coordinate in the order of the layer's (sorted) `updated` list;
  widths w_i = 1e-3 + (1 - K 1e-3) softmax(u^w)_i, knots X_0 = -B, X_i = -B + 2B sum_{j<i} w_j, X_K = B,
  heights the same with u^h; derivatives d_0 = d_K = 1, d_i = 1e-3 + softplus(u^d_i + c) with
  c = log(exp(1 - 1e-3) - 1) (u = 0 is the identity); in bin k (the last k with X_k <= x; x = B in
  bin K - 1), xi = (x - X_k)/dx, s = dy/dx:
    y = Y_k + dy (s xi^2 + d_k xi(1-xi)) / (s + (d_{k+1} + d_k - 2s) xi(1-xi))
    log y' = log(s^2 (d_{k+1} xi^2 + 2 s xi(1-xi) + d_k (1-xi)^2)) - 2 log(den)
  the identity (log y' = 0) outside [-B, B]; the inverse is the closed-form root of the quadratic
  (the paper's appendix A), optionally polished by one safeguarded Newton step as trflow does.

A coupling keeps y_B = x_B and maps y_A = s_theta(x_A) with theta = h(x_B), h an MLP (tanh, `depth`
hidden layers of width `hidden`, last layer zero-initialized; a constant 1 input when B is empty).
The flow: NLL(y) = -log N(G(y); 0, I) - log|det dG(y)|, G through the layers in reverse; transport
T = L E_x sum_l |F_{l+1}(x) - F_l(x)|^2 for x ~ N(0, I); loss = lam NLL + beta T; Adam. Shapes A
and B (and C) are torch_realnvp.py's (imported from it, with its data sets), L spline couplings of
K = --bins bins on [-B, B]; --tail-bound defaults to what `trflow train` chooses for the data
(5 for A's 8gaussians, 5.5 for trflow's gaussian:16 rows that scripts/bench.sh writes for B).

Modes:
  training benchmark (one JSON line: warm steps/s median over --reps repetitions, CPU ms/step,
  whole-run steps/s, peak RSS, test NLL, T, map cost):
    OPENBLAS_NUM_THREADS=1 /usr/bin/python3 bench/torch_spline.py --config A --bins 8 --threads 1
  the spline op alone (elements/s, forward / forward+backward / inverse / inverse+backward):
    /usr/bin/python3 bench/torch_spline.py --op-bench --threads 1
  agreement with trflow: rebuild a trflow model.npz (rqs, affine, additive couplings; mlp or resnet
  conditioners; ActNorm; standard or diagonal-Gaussian base; not LU layers) with trflow's
  parameters, compute log p for the rows of DATA.npy (generated when the file does not exist:
  normal, uniform on [-1.5B, 1.5B] and rows with coordinates exactly at +-B, 0 and far outside),
  F(x) and log|det dF| on base points, and the gradients of sum log p and of T, in float32 and
  float64; run bench/logprob_dump (--logprob-dump, default build-bench/bench/logprob_dump) for
  trflow's float32 and float64 numbers; print one JSON line of max differences. Exit status 0
  when float64 agrees with float64 to --tol64 (log p, F(x), both gradients) and float32 with
  float32 to --tol32 or to twice what float32 rounding alone does to either side:
    /usr/bin/python3 bench/torch_spline.py --trflow-model /tmp/rqs_model --check-logprob /tmp/pts.npy
Needs Debian's python3-torch and python3-numpy.
"""
import argparse
import importlib.util
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

MIN_WIDTH = 1e-3
MIN_HEIGHT = 1e-3
MIN_DERIVATIVE = 1e-3
DERIVATIVE_OFFSET = math.log(math.expm1(1.0 - MIN_DERIVATIVE))  # softplus(c) + 1e-3 = 1
LOG_2PI = math.log(2.0 * math.pi)


# ---------------------------------------------------------------- the spline
def _knots(u, K, B, min_frac):
    """(..., K) unnormalized -> (..., K + 1) knots from -B to B."""
    w = min_frac + (1.0 - K * min_frac) * torch.softmax(u, dim=-1)
    inner = -B + 2.0 * B * torch.cumsum(w[..., :-1], dim=-1)
    edge = torch.full_like(u[..., :1], B)
    return torch.cat([-edge, inner, edge], dim=-1)


def _eval_bin(xi, s, h, y0, d0, d1):
    """y and log y' at relative position xi of a bin (Durkan et al. eqs. 4 and 5)."""
    t = xi * (1.0 - xi)
    om = 1.0 - xi
    num = s * xi * xi + d0 * t
    den = s + (d1 + d0 - 2.0 * s) * t
    P = d1 * xi * xi + 2.0 * s * t + d0 * om * om
    return y0 + h * num / den, 2.0 * torch.log(s) + torch.log(P) - 2.0 * torch.log(den)


def rq_spline(x, u, K, B, inverse=False, polish=True):
    """Elementwise monotonic rational-quadratic splines.

    x: (m, k); u: (m, k, 3K - 1). Returns (y, logdet) with y (m, k) and logdet (m,) the row sums of
    log y'(x) (forward) or of -log y'(x(y)) (inverse). Identity outside [-B, B]."""
    X = _knots(u[..., :K], K, B, MIN_WIDTH)
    Y = _knots(u[..., K:2 * K], K, B, MIN_HEIGHT)
    ones = torch.ones_like(u[..., :1])
    D = torch.cat([ones, MIN_DERIVATIVE + F.softplus(u[..., 2 * K:] + DERIVATIVE_OFFSET), ones], dim=-1)
    inside = (x >= -B) & (x <= B)
    v = torch.where(inside, x, torch.zeros_like(x))  # finite numbers (and gradients) in the unused branch
    at = Y if inverse else X
    k = (v.unsqueeze(-1) >= at[..., 1:K]).sum(dim=-1, keepdim=True)  # the last k with knot_k <= v
    table = torch.stack([X, Y, D], dim=-2)  # (m, k, 3, K + 1): one gather for each end of the bin
    idx = k.unsqueeze(-1).expand(*k.shape[:-1], 3, 1)
    lo = table.gather(-1, idx).squeeze(-1)
    hi = table.gather(-1, idx + 1).squeeze(-1)
    x0, y0, d0 = lo.unbind(-1)
    w = hi[..., 0] - x0
    h = hi[..., 1] - y0
    d1 = hi[..., 2]
    s = h / w
    if not inverse:
        xi = torch.clamp((v - x0) / w, 0.0, 1.0)
        out, logd = _eval_bin(xi, s, h, y0, d0, d1)
    else:
        q = d1 + d0 - 2.0 * s
        dy = v - y0
        qa = h * (s - d0) + dy * q
        qb = h * d0 - dy * q
        qc = -s * dy
        disc = torch.clamp(qb * qb - 4.0 * qa * qc, min=0.0)
        xi = torch.clamp(2.0 * qc / (-qb - torch.sqrt(disc)), 0.0, 1.0)
        yy, logd = _eval_bin(xi, s, h, y0, d0, d1)
        if polish:  # one Newton step on y(xi) = v, kept where it lowers the residual (as trflow)
            xi1 = torch.clamp(xi - (yy - v) / (torch.exp(logd) * w), 0.0, 1.0)
            yy1, logd1 = _eval_bin(xi1, s, h, y0, d0, d1)
            better = (yy1 - v).abs() < (yy - v).abs()
            xi = torch.where(better, xi1, xi)
            logd = torch.where(better, logd1, logd)
        out = x0 + xi * w
        logd = -logd
    out = torch.where(inside, out, x)
    logd = torch.where(inside, logd, torch.zeros_like(logd))
    return out, logd.sum(dim=-1)


# ---------------------------------------------------------------- layers
ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "sigmoid": nn.Sigmoid, "softplus": nn.Softplus,
               "elu": nn.ELU, "leaky_relu": lambda: nn.LeakyReLU(0.01), "identity": nn.Identity}


class ResidualNet(nn.Module):
    """nn::ResidualNet: h = in(x); h += blocks.k.1(act(blocks.k.0(act(h)))); out(h)."""

    def __init__(self, n_in, hidden, blocks, n_out, act):
        super().__init__()
        self.inp = nn.Linear(n_in, hidden)
        self.blocks = nn.ModuleList(nn.ModuleList([nn.Linear(hidden, hidden), nn.Linear(hidden, hidden)])
                                    for _ in range(blocks))
        self.out = nn.Linear(hidden, n_out)
        self.act = ACTIVATIONS[act]()
        nn.init.zeros_(self.out.weight), nn.init.zeros_(self.out.bias)
        for b in self.blocks:
            nn.init.zeros_(b[1].weight), nn.init.zeros_(b[1].bias)

    def forward(self, x):
        h = self.inp(x)
        for l1, l2 in self.blocks:
            h = h + l2(self.act(l1(self.act(h))))
        return self.out(h)

    def trflow_names(self):  # parameter -> the name trflow saves it under (below "layers.<l>.net.")
        names = {self.inp: "in", self.out: "out"}
        for k, (l1, l2) in enumerate(self.blocks):
            names[l1], names[l2] = f"blocks.{k}.0", f"blocks.{k}.1"
        return [(lin, n) for lin, n in names.items()]


def mlp(n_in, hidden, depth, n_out, act):
    layers, k = [], n_in
    for _ in range(depth):
        layers += [nn.Linear(k, hidden), ACTIVATIONS[act]()]
        k = hidden
    last = nn.Linear(k, n_out)
    nn.init.zeros_(last.weight), nn.init.zeros_(last.bias)
    return nn.Sequential(*layers, last)


class Coupling(nn.Module):
    """Updates the coordinates `updated` (sorted) from h(x[:, conditioning]); states keep the data's order."""

    def __init__(self, d, updated, conditioning, hidden, depth, per_coordinate, conditioner="mlp", act="tanh"):
        super().__init__()
        self.register_buffer("ia", torch.tensor(sorted(updated), dtype=torch.long))
        self.register_buffer("ib", torch.tensor(sorted(conditioning), dtype=torch.long))
        self.k = len(updated)
        self.per = per_coordinate
        n_in, n_out = max(1, len(conditioning)), per_coordinate * self.k
        self.net = (ResidualNet(n_in, hidden, depth, n_out, act) if conditioner == "resnet"
                    else mlp(n_in, hidden, depth, n_out, act))

    def theta(self, z):
        inp = z[:, self.ib] if self.ib.numel() else z.new_ones(z.shape[0], 1)
        return self.net(inp)

    def _couple(self, z, inverse):
        new, logdet = self.map(z[:, self.ia], self.theta(z), inverse)
        out = z.clone()
        out[:, self.ia] = new
        return out, logdet

    def forward(self, x):  # base -> data, log|det dF|
        return self._couple(x, False)

    def inverse(self, y):  # data -> base, log|det dG|
        return self._couple(y, True)

    def trflow_linears(self):
        if isinstance(self.net, ResidualNet):
            return self.net.trflow_names()
        lins = [m for m in self.net if isinstance(m, nn.Linear)]
        return [(lin, str(i)) for i, lin in enumerate(lins)]  # nn::MLP names its Linear layers 0, 1, ...


class SplineCoupling(Coupling):
    def __init__(self, d, updated, conditioning, hidden, depth, bins, tail_bound, conditioner="mlp", act="tanh",
                 polish=True):
        super().__init__(d, updated, conditioning, hidden, depth, 3 * bins - 1, conditioner, act)
        self.K, self.B, self.polish = bins, float(tail_bound), polish

    def map(self, za, theta, inverse):
        return rq_spline(za, theta.view(za.shape[0], self.k, self.per), self.K, self.B, inverse, self.polish)


class AffineCoupling(Coupling):
    def __init__(self, d, updated, conditioning, hidden, depth, additive=False, scale_clamp=0.0,
                 conditioner="mlp", act="tanh"):
        super().__init__(d, updated, conditioning, hidden, depth, 1 if additive else 2, conditioner, act)
        self.additive, self.clamp = additive, scale_clamp

    def map(self, za, h, inverse):
        if self.additive:
            return (za - h if inverse else za + h), torch.zeros(za.shape[0], dtype=za.dtype)
        w, b = h[:, :self.k], h[:, self.k:]
        if self.clamp > 0:
            w = self.clamp * torch.tanh(w / self.clamp)
        if inverse:
            return (za - b) * torch.exp(-w), -w.sum(1)
        return za * torch.exp(w) + b, w.sum(1)


class ActNorm(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(d))
        self.shift = nn.Parameter(torch.zeros(d))

    def forward(self, x):
        return x * torch.exp(self.log_scale) + self.shift, self.log_scale.sum().expand(x.shape[0])

    def inverse(self, y):
        return (y - self.shift) * torch.exp(-self.log_scale), (-self.log_scale.sum()).expand(y.shape[0])


class Flow(nn.Module):
    def __init__(self, d, layers, base=None):
        super().__init__()
        self.d = d
        self.layers = nn.ModuleList(layers)
        self.base = base or {"type": "standard_normal"}
        if self.base["type"] == "diagonal_gaussian":
            self.register_buffer("base_mean", torch.tensor(self.base["mean"], dtype=torch.float64).view(-1))
            self.register_buffer("base_log_std", torch.tensor(self.base["log_std"], dtype=torch.float64).view(-1))

    def base_log_prob(self, z):
        if self.base["type"] == "diagonal_gaussian":
            u = (z - self.base_mean) * torch.exp(-self.base_log_std)
            return -0.5 * (u ** 2).sum(1) - self.base_log_std.sum() - 0.5 * self.d * LOG_2PI
        return -0.5 * (z ** 2).sum(1) - 0.5 * self.d * LOG_2PI

    def log_prob(self, y):
        ld = torch.zeros(y.shape[0], dtype=y.dtype)
        for f in reversed(self.layers):
            y, l = f.inverse(y)
            ld = ld + l
        return self.base_log_prob(y) + ld

    def nll(self, y):
        return -self.log_prob(y)

    def transport(self, x):
        cost = 0.0
        for f in self.layers:
            nx, _ = f(x)
            cost = cost + ((nx - x) ** 2).sum(1)
            x = nx
        return len(self.layers) * cost, x


def spline_flow(d, layers, hidden, depth, bins, tail_bound, seed, polish=True):
    """L spline couplings, split as flows::make_flow splits them: an even layer draws a random
    permutation and updates its first max(1, d // 2) coordinates (sorted, flows::coupling_split),
    an odd layer updates the complement of the layer before it."""
    g = torch.Generator().manual_seed(seed)
    out, a, b = [], [], []
    for l in range(layers):
        if l % 2 == 1 and b:
            a, b = b, a
        else:
            perm = torch.randperm(d, generator=g).tolist()
            k = 1 if d == 1 else d // 2
            a, b = sorted(perm[:k]), sorted(perm[k:])
        out.append(SplineCoupling(d, a, b, hidden, depth, bins, tail_bound, polish=polish))
    return Flow(d, out)


# ---------------------------------------------------------------- trflow model files
def load_trflow(path, dtype=torch.float64, polish=True):
    """A Flow with the architecture and parameters of a trflow model.npz (or its directory)."""
    if os.path.isdir(path):
        path = os.path.join(path, "model.npz")
    z = np.load(path)
    arch = json.loads(z["architecture"].tobytes())
    fc = arch["flow"]
    d = int(fc["dim"])
    base = dict(fc["base"])
    if base["type"] == "diagonal_gaussian" and base.get("learned"):
        base["mean"] = z["base.mean"].reshape(-1).tolist()
        base["log_std"] = z["base.log_std"].reshape(-1).tolist()
    layers, used = [], {"architecture"}

    def take(name):
        used.add(name)
        return torch.from_numpy(np.asarray(z[name], dtype=np.float64))

    for l, c in enumerate(fc["layers"]):
        t = c["type"]
        if t in ("rqs_coupling", "affine_coupling", "additive_coupling"):
            common = dict(conditioner=c.get("conditioner", "mlp"), act=c.get("activation", "tanh"))
            if t == "rqs_coupling":
                layer = SplineCoupling(d, c["updated"], c["conditioning"], c["hidden"], c["depth"], c["bins"],
                                       c["tail_bound"], polish=polish, **common)
            else:
                layer = AffineCoupling(d, c["updated"], c["conditioning"], c["hidden"], c["depth"],
                                       additive=t == "additive_coupling", scale_clamp=c.get("scale_clamp", 0.0),
                                       **common)
            if c["updated"] != sorted(c["updated"]):
                raise ValueError(f"layer {l}: 'updated' is not sorted")
            with torch.no_grad():
                for lin, name in layer.trflow_linears():
                    w, b = take(f"layers.{l}.net.{name}.weight"), take(f"layers.{l}.net.{name}.bias")
                    if tuple(w.shape) != tuple(lin.weight.shape):
                        raise ValueError(f"layers.{l}.net.{name}.weight: shape {tuple(w.shape)}, expected {tuple(lin.weight.shape)}")
                    lin.weight.copy_(w)
                    lin.bias.copy_(b.view(-1))
        elif t == "actnorm":
            layer = ActNorm(d)
            with torch.no_grad():
                layer.log_scale.copy_(take(f"layers.{l}.log_scale").view(-1))
                layer.shift.copy_(take(f"layers.{l}.shift").view(-1))
        else:
            raise ValueError(f"layer {l}: type '{t}' is not supported by torch_spline.py")
        layers.append(layer)
    if base["type"] == "diagonal_gaussian" and base.get("learned"):
        used |= {"base.mean", "base.log_std"}
    left = [n for n in z.files if n not in used]
    if left:
        raise ValueError(f"{path}: tensors not mapped onto the PyTorch flow: {left[:5]}")
    flow = Flow(d, layers, base).to(dtype)
    return flow, arch


def trflow_param_name(flow):
    """PyTorch parameter -> trflow's dotted name (for comparing gradients)."""
    names = {}
    for l, layer in enumerate(flow.layers):
        if isinstance(layer, Coupling):
            for lin, name in layer.trflow_linears():
                names[lin.weight] = f"layers.{l}.net.{name}.weight"
                names[lin.bias] = f"layers.{l}.net.{name}.bias"
        elif isinstance(layer, ActNorm):
            names[layer.log_scale] = f"layers.{l}.log_scale"
            names[layer.shift] = f"layers.{l}.shift"
    return names


def make_check_points(path, d, B, n, seed=5):
    """Rows that exercise every branch: N(0, (B/2)^2), uniform on [-1.5B, 1.5B] (a third outside),
    and rows whose coordinates sit exactly at -B, B, 0, far outside (+-3B) or just inside."""
    g = np.random.default_rng(seed)
    a = g.normal(0.0, B / 2.0, (n // 2, d))
    b = g.uniform(-1.5 * B, 1.5 * B, (n // 4, d))
    special = np.array([-B, B, 0.0, -3.0 * B, 3.0 * B, np.nextafter(np.float32(B), np.float32(0)),
                        -np.nextafter(np.float32(B), np.float32(0)), 0.5 * B])
    c = special[g.integers(0, len(special), (n - len(a) - len(b), d))]
    pts = np.concatenate([a, b, c]).astype(np.float32)
    np.save(path, pts)
    return pts


def check_logprob(a):
    torch.set_num_threads(a.threads)
    flow64, arch = load_trflow(a.trflow_model, torch.float64, polish=not a.no_polish)
    flow32, _ = load_trflow(a.trflow_model, torch.float32, polish=not a.no_polish)
    d = flow64.d
    bounds = [c["tail_bound"] for c in arch["flow"]["layers"] if c["type"] == "rqs_coupling"]
    B = max(bounds) if bounds else 3.0
    if not os.path.exists(a.check_logprob):
        make_check_points(a.check_logprob, d, B, a.check_n)
        print(f"torch_spline: wrote {a.check_n} check points (d = {d}, B = {B}) to {a.check_logprob}", file=sys.stderr)
    pts = np.load(a.check_logprob)
    if pts.ndim != 2 or pts.shape[1] != d:
        raise SystemExit(f"{a.check_logprob}: expected (N, {d}) rows, got {pts.shape}")
    outside = float(np.mean(np.any(np.abs(pts) > B, axis=1)))

    tmp = tempfile.mkdtemp(prefix="torch_spline_check_")
    # Base points for the forward direction F (transport): N(0, I), and a quarter uniform on [-1.5B, 1.5B].
    g = np.random.default_rng(11)
    xs = np.concatenate([g.standard_normal((a.check_n - a.check_n // 4, d)),
                         g.uniform(-1.5 * B, 1.5 * B, (a.check_n // 4, d))]).astype(np.float32)
    x_path = os.path.join(tmp, "base_points.npy")
    np.save(x_path, xs)
    trflow = {}
    for dt in ("float32", "float64"):
        f = {k: os.path.join(tmp, f"{k}_{dt}.{ext}") for k, ext in
             (("lp", "npy"), ("grad", "npz"), ("fx", "npy"), ("tgrad", "npz"))}
        cmd = [a.logprob_dump, "--model", a.trflow_model, "--data", a.check_logprob, "--out", f["lp"],
               "--dtype", dt, "--grad", f["grad"], "--push", x_path, "--push-out", f["fx"], "--push-grad", f["tgrad"]]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        trflow[dt] = (np.load(f["lp"]).astype(np.float64), np.load(f["grad"]), np.load(f["fx"]).astype(np.float64),
                      np.load(f["tgrad"]))

    y64 = torch.from_numpy(pts.astype(np.float64))
    y32 = torch.from_numpy(pts.astype(np.float32))
    with torch.no_grad():
        t32 = flow32.log_prob(y32).double().numpy()
    flow64.zero_grad()
    lp64 = flow64.log_prob(y64)
    lp64.sum().backward()
    t64 = lp64.detach().numpy()

    # gradients of sum_i log p(y_i): float64 both sides, relative to each tensor's largest entry
    gmax_rel, gworst = 0.0, ""
    names = trflow_param_name(flow64)
    g64 = trflow["float64"][1]
    for p, name in names.items():
        ref = np.asarray(g64[name], dtype=np.float64).reshape(p.grad.shape)
        scale = max(np.abs(ref).max(), 1e-30)
        rel = float(np.abs(p.grad.numpy() - ref).max() / scale)
        if rel > gmax_rel:
            gmax_rel, gworst = rel, name
    g32 = trflow["float32"][1]
    g32_rel = max(float(np.abs(np.asarray(g32[n], np.float64).reshape(p.grad.shape) - p.grad.numpy()).max()
                        / max(np.abs(p.grad.numpy()).max(), 1e-30)) for p, n in names.items())

    # Forward direction: F(x), log|det dF(x)| and the gradient of T = L mean_i sum_l |s_{l+1} - s_l|^2.
    flow64.zero_grad()
    x64 = torch.from_numpy(xs.astype(np.float64))
    state, ldf = x64, torch.zeros(len(xs), dtype=torch.float64)
    cost = torch.zeros(len(xs), dtype=torch.float64)
    for layer in flow64.layers:
        nxt, l = layer(state)
        cost = cost + ((nxt - state) ** 2).sum(1)
        state, ldf = nxt, ldf + l
    (len(flow64.layers) * cost.mean()).backward()
    fx64 = torch.cat([state, ldf[:, None]], 1).detach().numpy()
    with torch.no_grad():
        state32, ld32 = torch.from_numpy(xs), torch.zeros(len(xs))
        for layer in flow32.layers:
            state32, l = layer(state32)
            ld32 = ld32 + l
        fx32 = torch.cat([state32, ld32[:, None]], 1).double().numpy()
    tg64 = trflow["float64"][3]
    tgrad_rel = max(float(np.abs(np.asarray(tg64[n], np.float64).reshape(p.grad.shape) - p.grad.numpy()).max()
                          / max(np.abs(p.grad.numpy()).max(), 1e-30)) for p, n in names.items())

    def mx(u, v):
        return float(np.max(np.abs(u - v)))

    tf32, tf64 = trflow["float32"][0], trflow["float64"][0]
    # float32 rounding alone moves log p by this much on either side (each against its own float64)
    floor32 = max(mx(t32, t64), mx(tf32, tf64))
    inbox = np.all(np.abs(pts) <= B, axis=1)
    res = dict(kind="check_logprob", model=a.trflow_model, points=a.check_logprob, n=len(pts), d=d,
               tail_bound=B, rows_outside_box=round(float(np.mean(~inbox)), 3),
               layers=sorted(set(c["type"] for c in arch["flow"]["layers"])), n_layers=len(arch["flow"]["layers"]),
               bins=sorted({c.get("bins") for c in arch["flow"]["layers"] if c.get("bins")}),
               polish=not a.no_polish,
               logp_range=[round(float(t64.min()), 3), round(float(t64.max()), 3)],
               max_abs_diff_torch64_vs_trflow64=mx(t64, tf64),
               max_abs_diff_torch32_vs_trflow32=mx(t32, tf32),
               max_abs_diff_torch32_vs_trflow32_rows_in_box=mx(t32[inbox], tf32[inbox]) if inbox.any() else None,
               max_abs_diff_torch64_vs_trflow32=mx(t64, tf32),
               max_abs_diff_torch32_vs_torch64=mx(t32, t64),
               max_abs_diff_trflow32_vs_trflow64=mx(tf32, tf64),
               max_rel_diff_torch32_vs_trflow32=float(np.max(np.abs(t32 - tf32) / np.maximum(1.0, np.abs(t64)))),
               grad_max_rel_diff_torch64_vs_trflow64=gmax_rel, grad_worst_tensor=gworst,
               grad_max_rel_diff_torch64_vs_trflow32=g32_rel,
               push_max_abs_diff_torch64_vs_trflow64=float(np.abs(fx64 - trflow["float64"][2]).max()),
               push_max_abs_diff_torch32_vs_trflow32=float(np.abs(fx32 - trflow["float32"][2]).max()),
               transport_grad_max_rel_diff_torch64_vs_trflow64=tgrad_rel,
               tol64=a.tol64, tol32=a.tol32)
    # float64 both sides: the same formulas must agree to rounding (log p and gradients); float32:
    # within tol32 and within twice what float32 rounding alone does to either side.
    res["pass"] = bool(res["max_abs_diff_torch64_vs_trflow64"] <= a.tol64 and gmax_rel <= a.tol64
                       and res["push_max_abs_diff_torch64_vs_trflow64"] <= a.tol64 and tgrad_rel <= a.tol64
                       and res["max_abs_diff_torch32_vs_trflow32"] <= max(a.tol32, 2.0 * floor32))
    print(json.dumps(res))
    return 0 if res["pass"] else 1


# ---------------------------------------------------------------- benchmarks
def load_reference(path):
    spec = importlib.util.spec_from_file_location("torch_realnvp", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def default_tail_bound(ref, data):
    """What `trflow train` picks (apps/trflow/train_cmd.cpp, auto_tail_bound): max(3, 1.2 x the 99.9th
    percentile of |y_j| over 20 000 rows), rounded up to 0.5 (from other draws of the same data)."""
    y = np.abs(ref.toy(data, 20000, np.random.default_rng(23))).ravel()
    q = np.partition(y, int(0.999 * y.size))[int(0.999 * y.size)]
    return math.ceil(max(3.0, 1.2 * float(q)) * 2.0) / 2.0


def op_bench(a):
    """The spline op alone: m = 1024 rows x n coordinates, K = --bins, B = 3, theta ~ U(-2, 2)."""
    torch.set_num_threads(a.threads)
    K, B, m = a.bins, 3.0, 1024
    out = []
    for n in (1, 8, 64):
        g = torch.Generator().manual_seed(21)
        x = (torch.rand(m, n, generator=g) * 2 - 1) * 1.05 * B
        th = (torch.rand(m, n, 3 * K - 1, generator=g) * 4 - 2)
        with torch.no_grad():
            yv, _ = rq_spline(x, th, K, B, False)
        for name, inv, bwd in (("fwd", False, False), ("fwd_bwd", False, True), ("inv", True, False),
                               ("inv_bwd", True, True)):
            src = yv if inv else x

            def body():
                if bwd:
                    xv = src.clone().requires_grad_(True)
                    tv = th.clone().requires_grad_(True)
                    y, ld = rq_spline(xv, tv, K, B, inv, not a.no_polish)
                    (y.sum() + ld.sum()).backward()
                else:
                    with torch.no_grad():
                        rq_spline(src, th, K, B, inv, not a.no_polish)

            for _ in range(3):
                body()
            reps = []
            for _ in range(5):
                it, t0, c0 = 0, time.perf_counter(), time.process_time()
                while time.perf_counter() - t0 < 0.2:
                    body()
                    it += 1
                reps.append(m * n * it / (time.process_time() - c0))  # elements per CPU-second
            out.append(dict(name=f"rq_spline/m{m}_n{n}_K{K}/{name}", elements_per_s=round(statistics.median(reps), 1)))
    print(json.dumps(dict(impl="torch", kind="op", threads=a.threads, torch=torch.__version__, polish=not a.no_polish,
                          load_start=os.getloadavg()[0], benchmarks=out)))
    return 0


def train_bench(a):
    ref = load_reference(a.realnvp)
    if a.config:
        explicit = {k.lstrip("-").replace("-", "_") for k in sys.argv[1:] if k.startswith("--")}
        for k, v in ref.CONFIGS[a.config].items():
            if k not in explicit:
                setattr(a, k, v)
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    d = ref.toy(a.data, 2, rng).shape[1]
    B = a.tail_bound or default_tail_bound(ref, a.data)
    flow = spline_flow(d, a.layers, a.hidden, a.depth, a.bins, B, a.seed, polish=not a.no_polish)
    opt = torch.optim.Adam(flow.parameters(), lr=a.lr)
    load_start = os.getloadavg()[0]

    def step():
        y = torch.from_numpy(ref.toy(a.data, a.batch, rng))
        loss = a.lam * flow.nll(y).mean()
        if a.beta > 0:
            x = torch.randn(a.batch, d)
            tc, _ = flow.transport(x)
            loss = loss + a.beta * tc.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    t_all = time.perf_counter()
    for _ in range(a.warmup):
        step()
    wall, cpu = [], []
    for _ in range(a.reps):
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(a.steps):
            loss = step()
        wall.append(a.steps / (time.perf_counter() - t0))
        cpu.append(1e3 * (time.process_time() - c0) / a.steps)
    total_steps = a.warmup + a.reps * a.steps
    whole = total_steps / (time.perf_counter() - t_all)
    with torch.no_grad():
        test = torch.from_numpy(np.load(a.test) if a.test else ref.toy(a.data, a.test_n, np.random.default_rng(999)))
        nll = torch.cat([flow.nll(test[i:i + 4096]) for i in range(0, len(test), 4096)]).mean().item()
        x0 = torch.randn(a.test_n, d, generator=torch.Generator().manual_seed(7))
        tc, x1 = flow.transport(x0)
        tc = tc.mean().item()
        mapc = ((x1 - x0) ** 2).sum(1).mean().item()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(dict(impl="torch", kind="train", coupling="rqs", config=a.config, data=a.data, d=d,
                          layers=a.layers, hidden=a.hidden, depth=a.depth, batch=a.batch, bins=a.bins, tail_bound=B,
                          polish=not a.no_polish, beta=a.beta, threads=a.threads,
                          params=sum(p.numel() for p in flow.parameters()),
                          steps_per_s=round(statistics.median(wall), 3), rep_steps_per_s=[round(v, 2) for v in wall],
                          steps_per_rep=a.steps, warmup=a.warmup, cpu_ms_per_step=round(statistics.median(cpu), 2),
                          whole_run_steps_per_s=round(whole, 3), last_loss=round(float(loss), 5),
                          test_nll=round(nll, 4), transport=round(tc, 4), map_cost=round(mapc, 4),
                          peak_rss_mb=round(rss_mb, 1), torch=torch.__version__, load_start=load_start,
                          load_end=os.getloadavg()[0])))
    return 0


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", choices=["A", "B", "C"], help="torch_realnvp.py's shape; explicit flags override")
    p.add_argument("--data", default="8gaussians")
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--bins", type=int, default=8)
    p.add_argument("--tail-bound", type=float, default=0.0, help="B (default: what trflow train picks for the data)")
    p.add_argument("--no-polish", action="store_true", help="plain closed-form inverse (no Newton step)")
    p.add_argument("--steps", type=int, default=20, help="steps per timed repetition")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--lam", type=float, default=1.0)
    p.add_argument("--beta", type=float, default=0.01)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--test", default=None, help="held-out .npy (default: fresh samples of --data)")
    p.add_argument("--test-n", type=int, default=20000)
    p.add_argument("--realnvp", default=os.path.join(root, "..", "shared", "bench", "torch_realnvp.py"))
    p.add_argument("--op-bench", action="store_true", help="time the spline op alone")
    p.add_argument("--trflow-model", help="a trflow model directory or model.npz")
    p.add_argument("--check-logprob", metavar="DATA.npy", help="rows to compare log p on (generated if missing)")
    p.add_argument("--check-n", type=int, default=4096)
    p.add_argument("--logprob-dump", default=os.path.join(root, "build-bench", "bench", "logprob_dump"))
    p.add_argument("--tol64", type=float, default=1e-9,
                   help="max |log p| difference and relative gradient difference, float64 both sides")
    p.add_argument("--tol32", type=float, default=1e-5,
                   help="max |log p| difference, float32 both sides (or twice float32's own rounding effect, if larger)")
    a = p.parse_args()
    if a.trflow_model or a.check_logprob:
        if not (a.trflow_model and a.check_logprob):
            p.error("--trflow-model and --check-logprob go together")
        return check_logprob(a)
    if a.op_bench:
        return op_bench(a)
    return train_bench(a)


if __name__ == "__main__":
    sys.exit(main())
