"""Run metrics: JSONL and TensorBoard events, plus a console progress bar with ETA.
Only the first process writes; the others get a writer that does nothing.

A run that resumes from step S logs steps S+1... again: the lines a killed run wrote after its
last checkpoint are dropped first (metrics.jsonl is rewritten atomically, lines <= S untouched),
and TensorBoard is told to purge its events after S (a SessionLog START at S+1), so every step
appears once in both.
For a gs:// output_dir both are written in a local folder and uploaded every SYNC_S seconds and at
close (GCS objects cannot be appended to)."""
from __future__ import annotations

import json
import os
import sys
import time

import jax
from etils import epath

from atlas_jax.paths import StagedDir

SYNC_S = 30.0


class MetricsWriter:
    def __init__(self, output_dir: str | os.PathLike, total_steps: int, start_step: int = 0, progress_bar: bool = True):
        self.enabled = jax.process_index() == 0
        self._total = total_steps
        self.path = epath.Path(output_dir) / "metrics.jsonl"
        self._tb = self._bar = None
        if not self.enabled:
            return
        self._stage = StagedDir(output_dir, fetch=["metrics.jsonl"])  # a resumed run appends
        local = epath.Path(os.path.join(self._stage.local, "metrics.jsonl"))
        dropped = drop_steps_after(local, start_step)
        self._file = open(local, "a", buffering=1)
        try:
            from tensorboardX import SummaryWriter
            # purge_step: TensorBoard drops this run's earlier events at steps >= start_step + 1
            self._tb = SummaryWriter(os.path.join(self._stage.local, "tensorboard"),
                                     purge_step=start_step + 1 if os.path.getsize(local) else None)
        except ImportError:  # tensorboardX is a dependency; a broken install only loses the events
            print("warning: tensorboardX unavailable, TensorBoard events not written", file=sys.stderr)
        if dropped:
            print(f"{self.path}: dropped {dropped} line(s) after step {start_step} written by the interrupted run "
                  "(those steps are logged again)", file=sys.stderr)
        if progress_bar:
            from tqdm import tqdm
            self._bar = tqdm(total=total_steps, initial=start_step, desc="train", unit="step", dynamic_ncols=True,
                             file=sys.stderr)

    def write(self, step: int, metrics: dict, prefix: str = "train") -> None:
        if not self.enabled:
            return
        record = {"step": step, "time": round(time.time(), 3)}
        record.update({(k if prefix == "train" else f"{prefix}_{k}"): _plain(v) for k, v in metrics.items()})
        self._file.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for key, value in metrics.items():
                if isinstance(_plain(value), (int, float)):
                    self._tb.add_scalar(f"{prefix}/{key}", _plain(value), step)
        if self._bar is not None and prefix == "train":
            self._bar.set_postfix({k: f"{metrics[k]:.4g}" for k in ("loss", "lr") if k in metrics}, refresh=False)
        elif prefix == "train":  # no bar (train.progress_bar=false): one line per logged step instead
            shown = {"loss": "loss {:.4f}", "lr": "lr {:.3g}", "grad_norm": "grad norm {:.3g}",
                     "real_tokens_per_sec": "{:.0f} tokens/s"}
            print(f"step {step}/{self._total}: " + ", ".join(f.format(_plain(metrics[k])) for k, f in shown.items()
                                                              if k in metrics), file=sys.stderr, flush=True)
        self._stage.sync(min_interval_s=SYNC_S)

    def advance(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
        if self._tb is not None:
            self._tb.close()
        self._file.close()
        self._stage.sync()


def drop_steps_after(path: epath.Path, step: int) -> int:
    """Remove the lines of ``path`` whose "step" is after ``step`` (and a torn last line, cut by a
    kill mid-write); rewrite atomically, keeping every other line as it was. Returns the count."""
    if not path.is_file():
        return 0
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = []
    for i, line in enumerate(lines):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1 and not line.endswith("\n"):
                continue  # torn by a kill: the step it held is logged again
            record = None  # not ours to judge: kept
        if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] > step:
            continue
        kept.append(line)
    if len(kept) == len(lines):
        return 0
    from atlas_jax.outputs import atomic_write

    with atomic_write(path) as f:
        f.writelines(kept)
    return len(lines) - len(kept)


def _plain(value):
    try:
        return value.item()
    except AttributeError:
        return value
