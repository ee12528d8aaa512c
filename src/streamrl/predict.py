"""``streamrl predict``: Stream TD(λ) prediction of a cumulant on a data stream.

Source: arXiv:2410.14606, Algorithm 1 (Stream TD(λ)), and the official stream-x TD(λ)
experiment on ETTm2 (docs/algorithms.md "Stream TD(λ) on a data stream"). A table arrives one row at a time (a CSV or Parquet file, or CSV on standard
input). Row t gives the observation x_t (the feature columns) and the cumulant c_t (one
column, its value in row t). Processing, as the official experiment does:

* x_t goes through an exponential trace m ← β m + (1 − β) x with bias correction
  m / (1 − βᵗ) (``--obs-trace``, β = 0.999; 0 passes x_t as it is), then the agent's
  Welford normaliser; no time feature;
* row 0 initialises the agent; each later row t is one Stream TD(λ) update of
  :class:`~streamrl.agents.td.StreamTD` on (x_{t−1}, c_t, x_t): δ = ĉ_t + γ v(x_t) − v(x_{t−1})
  with ĉ the reward-scaled cumulant (the agent's reward scaler: a streaming front end, where
  the official code min-max scales the cumulant with the whole file); a file's last row ends
  the episode (no bootstrap). Nothing is stored but the agent.

After learning from row t the agent predicts G_t = c_{t+1} + γ c_{t+2} + γ² c_{t+3} + …, the
discounted sum of the cumulants still to come; ``predictions.csv`` gets one line per row::

    step, row, cumulant, prediction, return

``step`` the updates made so far (0 at the first row), ``row`` the 0-based data row of the input,
``cumulant`` c_t, ``prediction`` v(x_t) × the reward scaler's deviation (cumulant units), and
``return`` G_t in cumulant units, computed backwards (G_t = c_{t+1} + γ G_{t+1}, G = 0 after
the last row) once the stream has ended; empty while it runs. Rows with a missing value are
skipped (counted) or stop the run (``--nan``); skipped rows are not part of the stream.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import json
import math
import sys
import time
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import tyro

from streamrl.errors import ConfigError, NonFiniteError, StreamRLError
from streamrl.tables import choose_columns, numbers, read_chunks, resolve_input

__all__ = ["PredictConfig", "predict", "run_cli", "discounted_returns", "window_nmse", "error_report", "tail_rows", "is_prediction_run", "plot_prediction",
           "PREDICTION_COLUMNS"]

PREDICTION_COLUMNS = ("step", "row", "cumulant", "prediction", "return")
KIND = "prediction"


@dataclasses.dataclass
class PredictConfig:
    """Stream TD(λ) prediction of a cumulant on a data stream: a CSV or Parquet file, `-` for
    CSV rows on standard input (a live stream), or `statsmodels:NAME` for a dataset shipped in
    the statsmodels wheel (`statsmodels:co2`: weekly Mauna Loa CO₂, 1958–2001). One update
    per row; writes a run directory with predictions.csv (step, row, cumulant, prediction,
    return), summary.json, config.json, a checkpoint and prediction.png."""

    input: Annotated[tyro.conf.Positional[str], tyro.conf.arg(metavar="INPUT")]
    """CSV (.csv, .txt, .csv.gz …) or Parquet (.parquet, .pq) file, `-` for standard input, or statsmodels:NAME."""
    cumulant: str
    """Column whose discounted future sum is predicted (ETTm2: OT)."""
    features: tuple[str, ...] | None = None
    """Feature columns (default: every numeric column but the date column, the cumulant's
    included, as in the official experiment)."""
    date_column: str = "auto"
    """auto: a column named date/datetime/time/timestamp/ds/year, or one whose values are
    dates; none: no date column; or its name. It is never a plain feature (see --date-features)."""
    date_features: bool = False
    """Add sin/cos of the time of day, day of week and day of year of the date column as 6 features."""
    gamma: float | None = None
    """Discount γ (default 0.99; or give --horizon)."""
    horizon: float | None = None
    """Horizon H in rows instead of γ: γ = 1 − 1/H."""
    lambda_: Annotated[float, tyro.conf.arg(name="lambda")] = 0.8
    """Trace decay λ in [0, 1]."""
    lr: float = 1.0
    """ObGD step size."""
    kappa: float = 2.0
    """ObGD bounding factor κ (0 disables the bound)."""
    optimizer: Literal["obgd", "adaptive"] = "obgd"
    """ObGD, or AdaptiveObGD (second-moment scaling)."""
    beta2: float = 0.999
    """AdaptiveObGD second-moment decay."""
    adam_eps: float = 1e-8
    """AdaptiveObGD ε (inside the square root)."""
    hidden: tuple[int, ...] = (128, 128)
    """Hidden widths of the value network."""
    sparsity: float = 0.9
    """Sparse-init fraction of zero weights per unit."""
    obs_trace: float = 0.999
    """β of the exponential trace of the observations (the official experiment's 0.999); 0: none."""
    normalize_obs: bool = True
    """Welford normalisation of the (traced) observations."""
    scale_reward: bool = True
    """Scale the cumulant by the deviation of its discounted trace (the agent's reward scaler)."""
    nan: Literal["skip", "stop"] = "skip"
    """A row with a missing value (empty cell, NaN, inf) in a used column: skip it (counted in
    the summary) or stop the run with an error."""
    max_rows: int | None = None
    """Read at most this many data rows."""
    chunk_rows: int = 1024
    """File input: rows per compiled lax.scan call (standard input goes row by row)."""
    windows: int = 10
    """Windows of the normalised MSE over time in the summary, report and plot."""
    seed: int = 0
    """Seed of the network's sparse initialisation."""
    run_dir: Path | None = None
    """Run directory (default: runs/<input>-<cumulant>_td_s<seed>_<time>)."""
    plot: bool = True
    """Write <run dir>/prediction.png at the end."""


# -- learning -------------------------------------------------------------------------------
class _Learner:
    """The StreamTD agent and the observation trace; one compiled lax.scan per chunk."""

    def __init__(self, cfg: PredictConfig, dim: int, gamma: float):
        import jax
        import jax.numpy as jnp

        from streamrl.agents import AgentConfig, HParams
        from streamrl.agents.td import StreamTD
        from streamrl.normalize import NORM_EPS, welford_variance
        from streamrl.types import TimeStep

        self.agent_config = AgentConfig(obs_shape=(dim,), discrete=True, action_dim=1, hidden=tuple(cfg.hidden),
                                        optimizer=cfg.optimizer, time_limit=None, sparsity=cfg.sparsity)
        agent = StreamTD(self.agent_config)
        self.hp = HParams(lr=cfg.lr, gamma=gamma, lambda_=cfg.lambda_, kappa=cfg.kappa, beta2=cfg.beta2,
                          adam_eps=cfg.adam_eps, normalize_obs=float(cfg.normalize_obs), scale_reward=float(cfg.scale_reward))
        hp, beta = self.hp.as_arrays(), jnp.float32(cfg.obs_trace)
        self.key = jax.random.PRNGKey(cfg.seed)

        def prediction(state):  # v(x_t) in cumulant units
            scale = jnp.where(hp.scale_reward > 0, jnp.sqrt(welford_variance(state.norm.reward.stats) + NORM_EPS), 1.0)
            return agent.value(state.params, state.obs) * scale

        def init(key, x):
            m, t = (1.0 - beta) * x, jnp.ones((), jnp.int32)
            state = agent.init(key, m / (1.0 - beta), hp)
            return (state, m, t), prediction(state)

        def one(carry, row):
            state, m, t = carry
            x, c, last, valid = row
            m2, t2 = beta * m + (1.0 - beta) * x, t + 1
            o = m2 / (1.0 - beta ** t2.astype(jnp.float32))
            ts = TimeStep(obs=o, reward=c, terminated=last, truncated=jnp.zeros((), bool), final_obs=o,
                          new_episode=jnp.zeros((), bool))
            new, _ = agent.step(state, ts, hp, diagnose=state.step % 16 == 0)
            out = jax.tree_util.tree_map(lambda a, b: jnp.where(valid, a, b), (new, m2, t2), carry)
            return out, (prediction(new), new.td_error)

        self._init = jax.jit(init)
        self._chunk = jax.jit(lambda carry, xs: jax.lax.scan(one, carry, xs), donate_argnums=0)
        self.carry = None

    def start(self, x) -> float:
        self.carry, pred = self._init(self.key, np.asarray(x, np.float32))
        return float(pred)

    def learn(self, x, c, last, pad_to: int) -> np.ndarray:
        """Learn from k rows (x float [k, d], c float [k], last bool [k]); returns the
        predictions after each, float32 [k]. Padded to ``pad_to`` rows (one program)."""
        k = len(c)
        valid = np.zeros(pad_to, bool)
        valid[:k] = True
        pad = lambda a, dtype: np.concatenate([np.asarray(a, dtype), np.zeros((pad_to - k, *np.shape(a)[1:]), dtype)])  # noqa: E731
        xs = (pad(x, np.float32), pad(c, np.float32), pad(last, bool), valid)
        self.carry, (pred, td) = self._chunk(self.carry, xs)
        pred, td = np.asarray(pred)[:k], np.asarray(td)[:k]
        if not (np.isfinite(pred).all() and np.isfinite(td).all()):
            raise NonFiniteError("the prediction became non-finite; lower --lr or raise --kappa", step=int(self.carry[0].step))
        return pred

    def checkpoint_items(self) -> dict:
        state, m, t = self.carry
        return {"agent": state, "obs_trace": {"m": m, "t": t}}

    def diagnostics(self) -> dict:
        d = self.carry[0].diag
        n, checks = int(d.count), int(d.overshoot_checks)
        return {"mean_abs_td": float(d.abs_td_sum) / n if n else None,
                "overshoot_rate": int(d.overshoots) / checks if checks else None}


# -- offline evaluation ---------------------------------------------------------------------
def discounted_returns(cumulants: np.ndarray, gamma: float) -> np.ndarray:
    """G_t = c_{t+1} + γ G_{t+1} with G = 0 after the last row: float64 [n], computed backwards
    in O(n) from the cumulants c float [n] (the prediction made at row t estimates G_t)."""
    c = np.asarray(cumulants, np.float64)
    g = np.zeros(len(c))
    for t in range(len(c) - 2, -1, -1):
        g[t] = c[t + 1] + gamma * g[t + 1]
    return g


def tail_rows(gamma: float) -> int:
    """How many last rows of a stream have a return G_t cut short by the end of the data by
    more than 1% of its weight: ⌈ln 0.01 / ln γ⌉ (at least 1; 0 for γ = 1, where a file is one
    episode and its end is part of the return). The error over time is measured on the rows
    before them (no learner can see the end coming: there is no time feature)."""
    if gamma >= 1:
        return 0
    return 1 if gamma <= 0 else max(1, math.ceil(math.log(0.01) / math.log(gamma)))


def window_nmse(prediction: np.ndarray, target: np.ndarray, windows: int) -> list[dict]:
    """Normalised MSE in ``windows`` equal windows of rows: mean over the window of
    (prediction − G)², divided by the variance of G over all the rows given (1 if it is 0).
    Returns ``[{"start", "end", "nmse"}]`` (row positions, end exclusive)."""
    p, g = np.asarray(prediction, np.float64), np.asarray(target, np.float64)
    var = float(np.var(g)) or 1.0
    edges = np.linspace(0, len(g), min(windows, len(g)) + 1).astype(int)
    return [{"start": int(a), "end": int(b), "nmse": float(np.mean((p[a:b] - g[a:b]) ** 2) / var)}
            for a, b in zip(edges[:-1], edges[1:]) if b > a]


def error_report(prediction: np.ndarray, target: np.ndarray, gamma: float, windows: int) -> dict:
    """The prediction error of a finished stream: ``nmse`` (MSE / Var G) and ``nmse_windows``
    (:func:`window_nmse`) over the rows whose return the data determines (all but the last
    :func:`tail_rows`), and ``nmse_tail`` over those last rows (normalised by the same Var G),
    ``complete_rows``; the values are None where there are no such rows."""
    n = len(target)
    k = n - min(tail_rows(gamma), n)
    p, g = np.asarray(prediction, np.float64), np.asarray(target, np.float64)
    var = float(np.var(g[:k])) if k else 0.0
    var = var or 1.0
    return {
        "complete_rows": k,
        "nmse": float(np.mean((p[:k] - g[:k]) ** 2) / var) if k else None,
        "nmse_windows": window_nmse(p[:k], g[:k], windows) if k else [],
        "nmse_tail": float(np.mean((p[k:] - g[k:]) ** 2) / var) if k < n else None,
    }


def _finish_predictions(path: Path, gamma: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fill the ``return`` column of predictions.csv (atomically); returns (steps, predictions, returns)."""
    import pandas as pd

    df = pd.read_csv(path)
    df["return"] = discounted_returns(df["cumulant"].to_numpy(float), gamma)
    tmp = path.with_suffix(".csv.tmp")
    df.to_csv(tmp, index=False, float_format="%.9g")
    tmp.replace(path)
    return df["step"].to_numpy(), df["prediction"].to_numpy(float), df["return"].to_numpy(float)


# -- the command ------------------------------------------------------------------------------
def _gamma(cfg: PredictConfig) -> float:
    if cfg.horizon is not None:
        if cfg.gamma is not None:
            raise ConfigError("give --gamma or --horizon, not both")
        if not cfg.horizon >= 1:
            raise ConfigError(f"--horizon must be >= 1 (γ = 1 − 1/H), got {cfg.horizon}")
        return 1.0 - 1.0 / cfg.horizon
    return 0.99 if cfg.gamma is None else cfg.gamma


def _check(cfg: PredictConfig, gamma: float) -> None:
    from streamrl.agents import HParams
    from streamrl.config import validate_hparams

    try:
        validate_hparams(HParams(lr=cfg.lr, gamma=gamma, lambda_=cfg.lambda_, kappa=cfg.kappa, beta2=cfg.beta2, adam_eps=cfg.adam_eps))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if cfg.input == "-" and gamma >= 1:
        raise ConfigError("γ = 1 on standard input (an endless stream) predicts an unbounded sum; use --gamma < 1 or --horizon")
    for flag, value in (("--chunk-rows", cfg.chunk_rows), ("--windows", cfg.windows), ("--max-rows", cfg.max_rows)):
        if value is not None and value < 1:
            raise ConfigError(f"{flag} must be >= 1, got {value}")
    if not 0 <= cfg.obs_trace < 1:
        raise ConfigError(f"--obs-trace must be in [0, 1), got {cfg.obs_trace}")
    if not cfg.hidden or any(h <= 0 for h in cfg.hidden):
        raise ConfigError(f"--hidden must list positive layer widths, got {tuple(cfg.hidden)}")
    if not 0 <= cfg.sparsity < 1:
        raise ConfigError(f"--sparsity must be in [0, 1), got {cfg.sparsity}")


def _run_path(cfg: PredictConfig, path: Path | None) -> Path:
    from types import SimpleNamespace

    from streamrl.results import new_run_path

    source = "stdin" if path is None else (cfg.input.split(":", 1)[1] if cfg.input.startswith("statsmodels:") else path.name.split(".")[0])
    env = f"{source}-{cfg.cumulant}".replace(" ", "_")
    return new_run_path(SimpleNamespace(run_dir=cfg.run_dir, env=env, algo="td", seed=cfg.seed, num_seeds=1))


def predict(cfg: PredictConfig, *, echo=None) -> Path:
    """Run Stream TD(λ) over the input of ``cfg`` and write its run directory; returns it.

    ``echo`` (a callable taking a string) hears the run directory when it starts.

    Raises:
      ConfigError: a bad option; a missing, empty or unreadable input; a missing column; a
        non-numeric value; a missing value under ``--nan stop``; γ = 1 on standard input.
        Raised mid-stream, what was learned is kept: predictions.csv (returns filled in for
        the rows learned from), a checkpoint, and summary.json with status ``failed``.
      MissingExtraError: Parquet without pyarrow, statsmodels:NAME without statsmodels.
      NonFiniteError: the prediction diverged (kept as above).
    """
    from streamrl import checkpoint
    from streamrl.results import RunLock, git_commit, jsonable, package_versions

    gamma = _gamma(cfg)
    _check(cfg, gamma)
    source = resolve_input(cfg.input)
    where = "standard input" if source is None else str(source)
    chunks = read_chunks(source, 1 if source is None else cfg.chunk_rows)
    try:
        first = next(chunks)
    except StopIteration:
        raise ConfigError(f"{where} has a header but no data rows") from None
    cols = choose_columns(cfg, first, where)
    run_dir = _run_path(cfg, source)
    lock = RunLock(run_dir, new=True)
    learner = None
    started, status, message = time.monotonic(), "completed", None
    rows_read = rows_learned = skipped = 0
    compile_s = None
    try:
        config = {
            "kind": KIND, "algo": "td", "env": run_dir.name.rsplit("_td_", 1)[0], "seed": cfg.seed,
            "input": cfg.input if source is None else str(source.resolve()), "gamma": gamma,
            "columns": {"cumulant": cols.cumulant, "features": list(cols.features), "date": cols.date,
                        "date_features": cols.date_features, "skipped": list(cols.skipped)},
            "options": jsonable(cfg), "versions": package_versions(), "git_commit": git_commit(),
            "created": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        }
        (run_dir / "config.json").write_text(json.dumps(jsonable(config), indent=2) + "\n")
        out = open(run_dir / "predictions.csv", "w", newline="")
        writer = csv.writer(out)
        writer.writerow(PREDICTION_COLUMNS)
        if echo:
            echo(f"run directory: {run_dir} (compiling the update, then one pass over {where})")
        learner = _Learner(cfg, cols.dim, gamma)
        config["agent"] = jsonable(learner.agent_config)
        config["hparams"] = dict(learner.hp._asdict())
        (run_dir / "config.json").write_text(json.dumps(jsonable(config), indent=2) + "\n")
        df = first
        try:
            while df is not None:
                if cfg.max_rows is not None:
                    df = df.iloc[: max(cfg.max_rows - rows_read, 0)]
                capped = cfg.max_rows is not None and rows_read + len(df) >= cfg.max_rows
                # a file is read one chunk ahead, so that its last row can end the episode
                following = None if capped or source is None else next(chunks, None)
                x, c, rows = numbers(df, cols, rows_read, where, cfg.nan)
                rows_read += len(df)
                skipped += len(df) - len(c)
                last = np.zeros(len(c), bool)
                if source is not None and following is None and len(c):
                    last[-1] = True
                preds = np.empty(len(c), np.float32)
                done = 0
                if len(c) and learner.carry is None:
                    preds[0], done = learner.start(x[0]), 1
                if len(c) > done:
                    t0 = time.monotonic()
                    preds[done:] = learner.learn(x[done:], c[done:], last[done:], 1 if source is None else cfg.chunk_rows)
                    compile_s = time.monotonic() - t0 if compile_s is None else compile_s
                for i in range(len(c)):
                    writer.writerow((rows_learned + i, int(rows[i]), repr(float(c[i])), repr(float(preds[i])), ""))
                rows_learned += len(c)
                out.flush()
                df = None if capped else (following if source is not None else next(chunks, None))
            if rows_learned == 0:
                raise ConfigError(f"{where}: every row has a missing value (--nan skip skipped {skipped}); nothing was learned")
        except (StreamRLError, KeyboardInterrupt) as exc:
            status, message = ("interrupted", "interrupted") if isinstance(exc, KeyboardInterrupt) else ("failed", str(exc))
            raise
        finally:
            out.close()
            _finish(run_dir, cfg, gamma, learner, checkpoint, status, message, rows_read, rows_learned, skipped,
                    time.monotonic() - started, compile_s, where)
    finally:
        lock.release()
    return run_dir


def _finish(run_dir, cfg, gamma, learner, checkpoint, status, message, rows_read, rows_learned, skipped, wall, compile_s, where):
    """Returns column, summary.json, checkpoint and plot: also after a failure mid-stream."""
    steps, pred, ret = _finish_predictions(run_dir / "predictions.csv", gamma)
    summary = {
        "kind": KIND, "status": status, "rows_read": rows_read, "rows_learned": rows_learned,
        "rows_skipped_missing": skipped, "steps": max(rows_learned - 1, 0), "gamma": gamma,
        "wall_time_s": round(wall, 3), "rows_per_s": round(rows_learned / wall, 1) if wall > 0 else None,
        "compile_s": None if compile_s is None else round(compile_s, 3),
        **error_report(pred, ret, gamma, cfg.windows),
        **(learner.diagnostics() if learner is not None and learner.carry is not None else {}),
    }
    if message:
        summary["message"] = message
    if learner is not None and learner.carry is not None:
        from streamrl.results import jsonable

        meta = dict(checkpoint.checkpoint_meta("td", f"{KIND}:{where}", jsonable(learner.agent_config), 1), kind=KIND)
        checkpoint.save(run_dir, summary["steps"], learner.checkpoint_items(), meta)
    tmp = run_dir / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2) + "\n")
    tmp.replace(run_dir / "summary.json")
    if cfg.plot and len(ret) > 1:
        plot_prediction([run_dir], run_dir / "prediction.png")


def run_cli(cfg: PredictConfig) -> int:
    """``streamrl predict``: run, then print the normalised MSE over time; returns 0."""
    from streamrl.cli import _use_compilation_cache

    _use_compilation_cache()  # a second run starts in about a second, as `train` does
    path = predict(cfg, echo=lambda s: print(s, file=sys.stderr, flush=True))
    s = json.loads((path / "summary.json").read_text())
    print(f"{s['status']}: {s['rows_learned']:,} rows learned from ({s['rows_skipped_missing']:,} skipped: missing values) "
          f"in {s['wall_time_s']:,.1f} s ({s['rows_per_s'] or 0:,.0f} rows/s, compile {s['compile_s'] or 0:.1f} s), γ = {s['gamma']:g}")
    tail = s["rows_learned"] - s["complete_rows"]
    if s["nmse"] is not None:
        print(f"normalised MSE of the prediction against the return G_t (MSE / Var G), rows 0–{s['complete_rows'] - 1:,}: "
              f"{s['nmse']:.4g}; by window:")
        for w in s["nmse_windows"]:
            print(f"  rows {w['start']:>8,}–{w['end'] - 1:<8,} {w['nmse']:.4g}")
    if tail:
        print(f"the last {tail:,} rows' returns are cut short by the end of the data (> 1% of their weight): "
              f"normalised MSE there {s['nmse_tail']:.4g}, left out of the figures above")
    plot = path / "prediction.png"
    print(f"run directory: {path} (predictions.csv, summary.json, config.json, checkpoints/{', prediction.png' if plot.exists() else ''})")
    return 0


# -- runs and plots -----------------------------------------------------------------------------
def is_prediction_run(run_dir: Path) -> bool:
    """Whether ``run_dir`` was written by ``streamrl predict`` (config.json ``kind``)."""
    try:
        return json.loads((Path(run_dir) / "config.json").read_text()).get("kind") == KIND
    except (OSError, ValueError, AttributeError):
        return False


def plot_prediction(run_dirs: list[Path], out: Path) -> Path:
    """A PNG with one row per prediction run: prediction and return G_t over the stream, the
    last window of rows close up, and the normalised MSE per window (:func:`window_nmse`).

    Raises:
      ConfigError: a run is not a prediction run, or its predictions.csv is missing or damaged.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    runs = [Path(r) for r in run_dirs]
    fig, axes = plt.subplots(len(runs), 3, figsize=(18, 4.2 * len(runs)), squeeze=False,
                             gridspec_kw={"width_ratios": [2.2, 1.2, 1]})
    for ax, run in zip(axes, runs):
        if not is_prediction_run(run):
            raise ConfigError(f"{run} is not a `streamrl predict` run; plot prediction runs and training runs separately")
        config = json.loads((run / "config.json").read_text())
        try:
            df = pd.read_csv(run / "predictions.csv")
            step, pred, ret = (df[c].to_numpy(float) for c in ("step", "prediction", "return"))
        except (OSError, ValueError, KeyError, pd.errors.ParserError) as exc:
            raise ConfigError(f"{run / 'predictions.csv'} is missing or damaged ({type(exc).__name__})") from None
        if np.isnan(ret).any():  # a run still going (or killed before its end): returns not computed yet
            ret = discounted_returns(df["cumulant"].to_numpy(float), float(config["gamma"]))
        report = error_report(pred, ret, float(config["gamma"]), int(config["options"].get("windows", 10)))
        windows, k = report["nmse_windows"], report["complete_rows"]
        name = f"{config['columns']['cumulant']} of {Path(str(config['input'])).name}, γ = {config['gamma']:g}"
        ax[0].plot(step, ret, color="black", linewidth=1.0, label="return G_t (offline)")
        ax[0].plot(step, pred, color="tab:blue", linewidth=0.8, alpha=0.8, label="prediction (before seeing the future)")
        ax[0].set_title(f"{run.name}\n{name}", fontsize=9)
        ax[0].set_xlabel("step (rows learned from)")
        ax[0].set_ylabel(f"discounted sum of {config['columns']['cumulant']}")
        if k < len(step):
            ax[0].axvspan(step[k] if k else step[0], step[-1], color="grey", alpha=0.15, linewidth=0,
                          label="return cut short by the end of the data")
        ax[0].legend(loc="best", fontsize=8)
        lo, hi = (windows[-1]["start"], k) if windows else (0, len(step))
        ax[1].plot(step[lo:hi], ret[lo:hi], color="black", linewidth=1.0)
        ax[1].plot(step[lo:hi], pred[lo:hi], color="tab:blue", linewidth=0.8)
        ax[1].set_title("last window before the cut-short returns", fontsize=9)
        ax[1].set_xlabel("step")
        mid = [0.5 * (w["start"] + w["end"]) for w in windows]
        ax[2].plot(mid, [w["nmse"] for w in windows], marker="o", color="tab:red")
        ax[2].set_yscale("log")
        ax[2].set_title("normalised MSE per window (MSE / Var G)", fontsize=9)
        ax[2].set_xlabel("step")
        for a in ax:
            a.grid(alpha=0.3)
    from streamrl.results import save_figure

    return save_figure(fig, out, dpi=110)
