"""Small real data sets for trflow's real-data benchmark (issue: validation and early stopping).

Reads the copies that Debian's python3-sklearn ships (no download), makes one fixed, seeded
train/test split per set, standardizes both with the training rows' mean and std, and writes
<out>/<name>_train.npy and <out>/<name>_test.npy (float64), plus <out>/gaussian.json with the
test NLL of a full-covariance Gaussian fitted (maximum likelihood) to the training rows.

  /usr/bin/python3 bench/real/prepare.py --out build/real

Sets: breast_cancer (569 x 30: 450 train / 119 test), wine (178 x 13: 140 / 38),
diabetes (442 x 10 features: 350 / 92), digits (1797 x 64, pixel values 0..16 dequantized
with uniform noise u ~ U(0, 1), x = pixel + u: 1500 / 297).
"""
import argparse
import gzip
import json
import os

import numpy as np

DATA = "/usr/lib/python3/dist-packages/sklearn/datasets/data"


def load(name):
    if name == "breast_cancer":
        return np.loadtxt(os.path.join(DATA, "breast_cancer.csv"), delimiter=",", skiprows=1)[:, :30], 450
    if name == "wine":
        return np.loadtxt(os.path.join(DATA, "wine_data.csv"), delimiter=",", skiprows=1)[:, :13], 140
    if name == "diabetes":
        with gzip.open(os.path.join(DATA, "diabetes_data_raw.csv.gz")) as f:
            return np.loadtxt(f), 350
    if name == "digits":
        with gzip.open(os.path.join(DATA, "digits.csv.gz")) as f:
            x = np.loadtxt(f, delimiter=",")[:, :64]
        return x + np.random.default_rng(7).uniform(0, 1, x.shape), 1500
    raise ValueError(name)


def gaussian_nll(train, test):
    """Mean −log N(test; μ, Σ) with μ, Σ the maximum-likelihood fit to train."""
    mu = train.mean(0)
    sigma = np.cov(train, rowvar=False, bias=True)
    sign, logdet = np.linalg.slogdet(sigma)
    diff = test - mu
    quad = np.einsum("ij,ij->i", diff @ np.linalg.inv(sigma), diff)
    d = train.shape[1]
    return float(np.mean(0.5 * (quad + logdet + d * np.log(2 * np.pi))))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="build/real")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    baseline = {}
    for name in ["breast_cancer", "wine", "diabetes", "digits"]:
        x, n_train = load(name)
        order = np.random.default_rng(12345).permutation(len(x))
        train, test = x[order[:n_train]], x[order[n_train:]]
        mean, std = train.mean(0), train.std(0, ddof=1)
        std[std == 0] = 1
        train, test = (train - mean) / std, (test - mean) / std
        np.save(os.path.join(args.out, f"{name}_train.npy"), train)
        np.save(os.path.join(args.out, f"{name}_test.npy"), test)
        baseline[name] = {"rows": list(x.shape), "train": int(n_train), "test": int(len(x) - n_train),
                          "gaussian_test_nll": gaussian_nll(train, test)}
        print(name, baseline[name])
    with open(os.path.join(args.out, "gaussian.json"), "w") as f:
        json.dump(baseline, f, indent=1)


if __name__ == "__main__":
    main()
