"""Run logging: a JSON-lines log, TensorBoard scalars, a tqdm progress bar and a loss plot; and MFU (`mfu`).

    log = RunLogger(workdir, total_steps=5000, initial_step=step)
    log.advance(k)                                            # after k train steps
    log.log(step, {"loss": 2.3, "tokens_per_s": 9e4, "mfu": 0.41})
    log.log(step, {"eval_loss": 2.4}, split="eval")
    log.close()                                               # -> workdir/loss.png

Files: `workdir/metrics.jsonl` (one `{"step", "split", ...metrics}` object a line, flushed per record),
`workdir/tb/` (TensorBoard events as `<split>/<name>`, written by tensorboardX without TensorFlow), `workdir/loss.png`.

Resuming: a killed run may have logged past its last checkpoint. Opening with `initial_step=N` drops JSONL records
with step > N and tells TensorBoard to hide events after N, so the logs continue exactly where the resumed run does.
A fresh run (`initial_step=0`) therefore starts a fresh log in the same workdir.

On multi-host jobs only the main process logs: the others (`is_main=False`) write nothing and show no bar.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import sys

from tqdm import tqdm


class RunLogger:
    """Logs one run's metrics to JSONL, TensorBoard and a progress bar whose postfix shows loss, tok/s and MFU."""

    def __init__(self, workdir, *, total_steps: int, initial_step: int = 0, progress: bool = True,
                 tensorboard: bool = True, is_main: bool = True, desc: str = "train"):
        self.workdir = pathlib.Path(workdir)
        self.jsonl_path = self.workdir / "metrics.jsonl"
        self._desc = desc
        self._file = self._tb = self._bar = None
        self._postfix: dict[str, str] = {}
        self._main = is_main
        self._active = is_main  # False on non-main processes and after close()
        if not is_main:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        _drop_after(self.jsonl_path, initial_step)
        self._file = open(self.jsonl_path, "a")
        if tensorboard:
            from tensorboardX import SummaryWriter  # lazy: only runs that write events pay for the import

            self._tb = SummaryWriter(str(self.workdir / "tb"), purge_step=initial_step + 1, flush_secs=10)
        if progress:
            self._bar = tqdm(total=total_steps, initial=initial_step, desc=desc, unit="step", file=sys.stderr,
                             dynamic_ncols=True)

    def advance(self, steps: int = 1) -> None:
        """Moves the progress bar `steps` steps on."""
        if self._active and self._bar is not None:
            self._bar.update(steps)

    def log(self, step: int, metrics: dict[str, float], split: str = "train") -> None:
        """Appends one record at `step` to the JSONL and TensorBoard logs and updates the bar's postfix."""
        if not self._active:
            return
        values = {k: float(v) for k, v in metrics.items()}
        self._file.write(json.dumps({"step": int(step), "split": split, **values}) + "\n")
        self._file.flush()  # a killed run keeps every record it logged
        if self._tb is not None:
            for name, value in values.items():
                self._tb.add_scalar(f"{split}/{name}", value, int(step))
        if self._bar is not None:
            self._bar.set_postfix_str(self._describe(values, split), refresh=True)

    def write(self, message: str) -> None:
        """Prints `message` on its own line above the progress bar (nothing on non-main processes)."""
        if self._main:
            tqdm.write(message)

    def close(self, plot: bool = True) -> pathlib.Path | None:
        """Closes the bar and the logs; with `plot`, writes `workdir/loss.png` and returns its path."""
        if not self._active:
            return None
        self._active = False
        if self._bar is not None:
            self._bar.close()
        if self._tb is not None:
            self._tb.close()
        self._file.close()
        if not (plot and any(_loss_series(read_jsonl(self.jsonl_path)))):
            return None
        return plot_losses(self.jsonl_path, self.workdir / "loss.png", title=self._desc)

    def _describe(self, values: dict[str, float], split: str) -> str:
        """The bar's postfix: the latest train loss, tok/s and MFU, and the latest eval loss with up to two other
        eval metrics (eval_accuracy as "accuracy 0.8123")."""
        if split == "eval" and "eval_loss" in values:
            extra = [f"{k.removeprefix('eval_')} {v:.4f}" for k, v in values.items()
                     if k not in ("eval_loss", "eval_tokens") and not k.endswith("_loss")][:2]
            self._postfix["eval"] = " ".join([f"eval {values['eval_loss']:.4f}", *extra])
        elif split == "train":
            if "loss" in values:
                self._postfix["loss"] = f"loss {values['loss']:.4f}"
            if "tokens_per_s" in values:
                self._postfix["tok/s"] = f"{values['tokens_per_s']:,.0f} tok/s"
            if "mfu" in values:  # a fraction of peak
                self._postfix["mfu"] = f"MFU {100 * values['mfu']:.1f}%"
        return " | ".join(self._postfix[k] for k in ("loss", "eval", "tok/s", "mfu") if k in self._postfix)


def read_jsonl(path) -> list[dict]:
    """The records of a JSON-lines file; a last line cut short by a killed process is skipped."""
    path = pathlib.Path(path)
    return _parse(path.read_text(), path) if path.exists() else []


def _parse(text: str, path: pathlib.Path) -> list[dict]:
    """`read_jsonl` on text already read from `path`."""
    lines = text.splitlines()
    records = []
    for i, line in enumerate(lines):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i < len(lines) - 1:
                raise ValueError(f"{path}:{i + 1} is not JSON: delete the line or the file") from None
    return records


def plot_losses(jsonl_path, png_path, title=None, *, log_y: bool = False) -> pathlib.Path:
    """Plots train loss (raw and smoothed) and eval loss against step from a metrics JSONL; returns `png_path`."""
    from matplotlib.figure import Figure  # lazy: matplotlib costs a second to import; Figure needs no pyplot state

    train, evals = _loss_series(read_jsonl(jsonl_path))
    if not train and not evals:
        raise ValueError(f"{jsonl_path} has no loss records to plot: log some steps first")
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.subplots()
    if train:
        steps, losses = zip(*train)
        ax.plot(steps, losses, color="tab:blue", alpha=0.3, linewidth=0.8, label="train")
        ax.plot(steps, _smooth(losses), color="tab:blue", linewidth=1.8, label="train (smoothed)")
    if evals:
        steps, losses = zip(*evals)
        ax.plot(steps, losses, "o-", color="tab:orange", markersize=4, label="eval")
    ax.set(xlabel="step", ylabel="loss", yscale="log" if log_y else "linear", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    png_path = pathlib.Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png_path, dpi=120)
    return png_path


def _loss_series(records: list[dict]) -> tuple[list, list]:
    """`(step, loss)` pairs of the train records and of the eval records (`eval_loss`, else `loss`)."""
    train = [(r["step"], r["loss"]) for r in records if r["split"] == "train" and "loss" in r]
    evals = [(r["step"], r.get("eval_loss", r.get("loss"))) for r in records if r["split"] == "eval"]
    return train, [(s, v) for s, v in evals if v is not None]


def _smooth(values, fraction: float = 0.02) -> list[float]:
    """Bias-corrected EMA over about `fraction` of the points (TensorBoard-style); NaNs do not poison it."""
    beta = 1 - 1 / max(1.0, fraction * len(values))
    avg, weight, out = 0.0, 0.0, []
    for v in values:
        if math.isfinite(v):
            avg, weight = beta * avg + (1 - beta) * v, beta * weight + (1 - beta)
        out.append(avg / weight if weight else math.nan)
    return out


def _drop_after(path: pathlib.Path, step: int) -> None:
    """Rewrites `path` without the records after `step` (from a killed run being resumed), atomically."""
    if not path.exists():
        return
    text = path.read_text()
    records = _parse(text, path)
    kept = [r for r in records if r["step"] <= step]
    if len(kept) == len(records) and text.endswith("\n"):
        return  # nothing to drop, and no cut-short last line for the next record to be glued onto
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
    os.replace(tmp, path)


def mfu(flops_per_token: float, tokens_per_s: float, peak_flops: float, n_devices: int = 1) -> float:
    """Model FLOPs utilization in [0, 1]: achieved FLOP/s over the peak of all `n_devices` devices,

        MFU = flops_per_token * tokens_per_s / (peak_flops * n_devices)

    with `peak_flops` per device (`lmjax.hardware.device_peak_flops`). Clipped at 1 because a CPU peak measured
    while the machine was busy can undershoot what training later reaches.
    """
    if peak_flops <= 0 or n_devices < 1:
        raise ValueError(f"need peak_flops > 0 and n_devices >= 1, got {peak_flops} and {n_devices}")
    if flops_per_token < 0 or tokens_per_s < 0:
        raise ValueError(f"need flops_per_token, tokens_per_s >= 0, got {flops_per_token} and {tokens_per_s}")
    return min(1.0, flops_per_token * tokens_per_s / (peak_flops * n_devices))
