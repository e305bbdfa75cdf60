"""Linear probes for space and time (Gurnee & Tegmark, Sec. 3-5): ridge per layer, baselines, neurons.

A probe is ``StandardScaler`` + ``RidgeCV`` (log-spaced alphas, efficient leave-one-out choice)
from one layer's activations to standardised targets ([lon, lat] or [year]), fit on the train
split and scored on the fixed held-out split: R^2, Spearman, haversine error (places) or absolute
error in years (time), and proximity error. Baselines: the same probe on shuffled train targets,
and on a randomly initialised model of the same architecture. Neurons: the single unit of the best
layer whose activation alone best predicts a coordinate (fit on train, R^2 on held-out).
"""
from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr
from sklearn.linear_model import RidgeCV
from sklearn.metrics import r2_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from tenfold.errors import TenfoldError

ALPHAS = np.logspace(-1, 5, 13)
EARTH_KM = 6371.0


def haversine_km(lonlat_a: np.ndarray, lonlat_b: np.ndarray) -> np.ndarray:
    """Great-circle distance in km between [lon, lat] rows (degrees)."""
    a, b = np.radians(np.atleast_2d(lonlat_a)), np.radians(np.atleast_2d(lonlat_b))
    dlon, dlat = b[:, 0] - a[:, 0], b[:, 1] - a[:, 1]
    h = np.sin(dlat / 2) ** 2 + np.cos(a[:, 1]) * np.cos(b[:, 1]) * np.sin(dlon / 2) ** 2
    return 2 * EARTH_KM * np.arcsin(np.sqrt(np.clip(h, 0, 1)))


def proximity_error(true: np.ndarray, pred: np.ndarray, kind: str) -> float:
    """Mean over entities of the share of *other* entities whose true position is closer to this
    entity's prediction than its own true position is (0 is perfect, about 0.5 is chance)."""
    true, pred = np.asarray(true, dtype=float), np.asarray(pred, dtype=float)
    n = len(true)
    if n < 2:
        return float("nan")
    shares = np.empty(n)
    for i in range(n):
        if kind == "space":
            d = haversine_km(np.repeat(pred[i : i + 1], n, 0), true)
        else:
            d = np.abs(true[:, 0] - pred[i, 0])
        closer = d < d[i]
        closer[i] = False
        shares[i] = closer.sum() / (n - 1)
    return float(shares.mean())


def _probe(X_train, y_train, alphas=ALPHAS):
    return make_pipeline(StandardScaler(), RidgeCV(alphas=alphas)).fit(X_train, y_train)


def score(true: np.ndarray, pred: np.ndarray, kind: str) -> dict:
    """R^2 (mean over coordinates), Spearman (mean over coordinates), distance error, proximity error."""
    r2 = float(np.mean([r2_score(true[:, j], pred[:, j]) for j in range(true.shape[1])]))
    rho = float(np.mean([spearmanr(true[:, j], pred[:, j]).statistic for j in range(true.shape[1])]))
    out = {"r2": r2, "spearman": rho, "proximity_error": proximity_error(true, pred, kind)}
    if kind == "space":
        out["median_km"] = float(np.median(haversine_km(true, pred)))
    else:
        out["mean_abs_years"] = float(np.mean(np.abs(true[:, 0] - pred[:, 0])))
    return out


def _standardise(y_train, y_test):
    mu, sd = y_train.mean(0), y_train.std(0) + 1e-12
    return (y_train - mu) / sd, (y_test - mu) / sd, (mu, sd)


def check_split(is_test: np.ndarray) -> None:
    """Enough entities on both sides of the held-out split to fit and score a probe, or one clear error."""
    train, test = int((~is_test).sum()), int(is_test.sum())
    if train < 10 or test < 5:
        raise TenfoldError(f"too few entities to probe (train {train}, held out {test}; at least 10 and 5 are "
                           "needed): use more entities (a larger --limit; about 40 or more on most datasets)")


def fit_layers(acts: np.ndarray, targets: np.ndarray, is_test: np.ndarray, kind: str, shuffle_seed: int | None = None,
               progress=None) -> list[dict]:
    """One probe per layer. ``acts`` (N, layers, hidden); returns per-layer scores (+ predictions)."""
    check_split(is_test)
    train, test = ~is_test, is_test
    y_train, y_test, (mu, sd) = _standardise(targets[train], targets[test])
    if shuffle_seed is not None:
        y_train = np.random.default_rng(shuffle_seed).permutation(y_train)
    rows = []
    for layer in range(acts.shape[1]):
        probe = _probe(acts[train, layer], y_train)
        pred = probe.predict(acts[test, layer]).reshape(len(y_test), -1) * sd + mu
        row = {"layer": layer, "alpha": float(probe[-1].alpha_), **score(targets[test], pred, kind)}
        row["prediction"] = pred
        rows.append(row)
        if progress:
            progress(layer + 1, acts.shape[1])
    return rows


def best(rows: list[dict]) -> dict:
    return max(rows, key=lambda r: r["r2"])


def best_neurons(acts_layer: np.ndarray, targets: np.ndarray, is_test: np.ndarray, top: int = 3) -> list[dict]:
    """Per target coordinate, the units whose activation alone best predicts it (train |corr|, held-out R^2)."""
    train, test = ~is_test, is_test
    X, Xt = acts_layer[train], acts_layer[test]
    out = []
    for j in range(targets.shape[1]):
        y = targets[train, j]
        Xc = X - X.mean(0)
        corr = (Xc * (y - y.mean())[:, None]).sum(0) / (np.sqrt((Xc**2).sum(0) * ((y - y.mean()) ** 2).sum()) + 1e-12)
        for unit in np.argsort(-np.abs(corr))[:top]:
            slope, intercept = np.polyfit(X[:, unit], y, 1)
            pred = slope * Xt[:, unit] + intercept
            out.append({"target": j, "neuron": int(unit), "train_corr": float(corr[unit]),
                        "test_r2": float(r2_score(targets[test, j], pred))})
    return out


def summary(rows: list[dict]) -> dict:
    """Scores without predictions, for JSON."""
    return [{k: v for k, v in r.items() if k != "prediction"} for r in rows]
