"""The scoring pass: trajectories -> score sequences -> packed batches -> device sums -> per-step metrics.

    records, report = score_trajectories(trajectories, tokenizer, model, ScoreOptions(seq_len=2048))

Per-step metrics (see scores_io.STEP_FIELDS): token count, nll_sum / nll_mean / entropy_mean given
the full history, nll_mean_prompt_only and ifd = nll_mean / nll_mean_prompt_only, nll_mean_no_obs
and obs_dependence = nll_mean_no_obs - nll_mean. A metric is null when its sequence had to be cut
to seq_len (the step is then marked ``truncated``); ifd and obs_dependence are null for steps
without that counterfactual (variants.py): context steps (``loss: false``) have neither, the first
trainable step has no obs_dependence.

Cost: the counterfactuals share their trajectory's prefix with its full sequence (packing.py,
``share_prefixes``), so the model runs O(tokens) per trajectory, not O(steps x tokens);
``share_prefixes=False`` runs every sequence alone (same numbers, for comparison).
"""
from __future__ import annotations

import collections
import dataclasses
import time
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh

from atlas_jax.data.trajectory import Trajectory
from atlas_jax.model import CausalLM
from atlas_jax.selection.packing import batches, pack
from atlas_jax.selection.scores_io import STEP_FIELDS
from atlas_jax.selection.scoring import SLOT_SUMS, make_score_step
from atlas_jax.selection.variants import VARIANTS, trajectory_sequences


@dataclasses.dataclass(frozen=True)
class ScoreOptions:
    seq_len: int = 2048  # packed row length T
    batch_size: int = 8  # rows per device batch (global)
    variants: tuple[str, ...] = VARIANTS  # "full" always runs; the others enable ifd / obs_dependence
    chunk: int = 256  # positions per logits chunk
    num_slots: int | None = None  # scored steps per row + 1; None: from the longest trajectory
    span_method: str = "auto"
    group_size: int = 512  # trajectories encoded and packed at a time
    share_prefixes: bool = True  # variants reuse the full sequence's prefix (False: each runs alone)

    def validate(self, mesh: Mesh | None = None) -> None:
        if self.seq_len < 2:
            raise ValueError(f"seq_len must be at least 2, got {self.seq_len}")
        if self.chunk < 1 or self.seq_len % min(self.chunk, self.seq_len):
            raise ValueError(f"seq_len={self.seq_len} must be a multiple of the logits chunk ({self.chunk})")
        if self.group_size < 1:
            raise ValueError(f"group_size must be positive, got {self.group_size}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")
        if mesh is not None:
            shards = mesh.shape["data"] * mesh.shape["fsdp"]
            if self.batch_size % shards:
                raise ValueError(f"batch_size={self.batch_size} is not divisible by the {shards} batch shards "
                                 f"(mesh data x fsdp)")
        bad = set(self.variants) - set(VARIANTS)
        if bad:
            raise ValueError(f"unknown variants {sorted(bad)}; expected a subset of {VARIANTS}")


@dataclasses.dataclass
class ScoreReport:
    trajectories: int = 0
    steps: int = 0
    sequences: int = 0
    rows: int = 0
    batches: int = 0
    tokens: int = 0  # real tokens run through the model
    sequence_tokens: int = 0  # the sequences' tokens: what running each alone would cost
    padded_tokens: int = 0  # rows x T, padding included
    truncated_sequences: int = 0
    truncated_steps: int = 0  # (step, variant) pairs left unscored because their sequence was cut
    first_batch_s: float = 0.0  # includes compilation
    total_s: float = 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.total_s if self.total_s else 0.0

    @property
    def steady_tokens_per_s(self) -> float:
        """Throughput after the first (compiling) batch, or overall when there is one batch."""
        rest = self.total_s - self.first_batch_s
        if self.batches < 2 or rest <= 0:
            return self.tokens_per_s
        return self.tokens * (self.batches - 1) / self.batches / rest

    def summary(self) -> str:
        pad = 1 - self.tokens / self.padded_tokens if self.padded_tokens else 0.0
        return (f"scored {self.trajectories} trajectories, {self.steps} steps; {self.sequences} sequences in "
                f"{self.rows} rows / {self.batches} batches, {self.tokens} tokens ({pad:.0%} padding; "
                f"{self.sequence_tokens} without prefix sharing); "
                f"{self.truncated_sequences} sequences cut to seq_len ({self.truncated_steps} step scores left null); "
                f"{self.total_s:.2f} s, {self.tokens_per_s:.0f} tokens/s overall, "
                f"{self.steady_tokens_per_s:.0f} tokens/s after the first batch ({self.first_batch_s:.2f} s)")


def _auto_slots(trajectories: Sequence[Trajectory], options: ScoreOptions) -> int:
    """Room for a trajectory's every score in one row: its steps, plus (sharing) one per counterfactual."""
    per_step = 1 + len(set(options.variants) - {"full"}) if options.share_prefixes else 1
    need = max(t.num_steps for t in trajectories) * per_step + 1
    return max(8, 1 << (need - 1).bit_length())


def _mean(total: float | None, count: float | None) -> float | None:
    return None if total is None or not count else total / count


def score_trajectories(trajectories: Sequence[Trajectory], tokenizer: Any, model: CausalLM,
                       options: ScoreOptions = ScoreOptions(), mesh: Mesh | None = None,
                       chat_template: str | None = None) -> tuple[list[dict], ScoreReport]:
    """One scores record per trajectory (scores_io format) and the run's counts and throughput."""
    options.validate(mesh)
    report = ScoreReport(trajectories=len(trajectories), steps=sum(t.num_steps for t in trajectories))
    if not trajectories:
        return [], report
    num_slots = options.num_slots or _auto_slots(trajectories, options)
    step = make_score_step(model, num_slots, options.chunk, mesh)
    records: list[dict] = []
    start = time.perf_counter()
    # groups of trajectories bound host memory: the no_obs sequences alone are O(steps^2) tokens
    for g in range(0, len(trajectories), options.group_size):
        group = trajectories[g:g + options.group_size]
        sequences = [seq for traj in group for seq in trajectory_sequences(
            traj, tokenizer, options.variants, span_method=options.span_method, chat_template=chat_template)]
        rows, pack_report = pack(sequences, options.seq_len, num_slots, share_prefixes=options.share_prefixes)
        report.sequences += len(sequences)
        report.rows += len(rows)
        report.tokens += pack_report.tokens
        report.sequence_tokens += pack_report.sequence_tokens
        report.truncated_sequences += pack_report.truncated_sequences
        report.truncated_steps += len(pack_report.truncated_steps)
        sums = _run_batches(step, rows, sequences, options, report, start)
        records.extend(_records(group, sequences, sums, options.variants))
    report.total_s = time.perf_counter() - start
    report.padded_tokens = report.batches * options.batch_size * options.seq_len
    return records, report


def _run_batches(step, rows, sequences, options: ScoreOptions, report: ScoreReport,
                 start: float) -> dict[tuple[int, int], tuple[float, float, float]]:
    """(sequence index, step) -> (tokens, nll_sum, entropy_sum), keeping one batch in flight."""
    sums = {}
    pending = collections.deque()

    def collect():
        out, chunk_rows = pending.popleft()
        host = np.stack([np.asarray(jax.device_get(out[k])) for k in SLOT_SUMS], axis=-1)  # [B, S, 3]
        for b, row in enumerate(chunk_rows):
            for i, _, slots in row.parts:
                for slot, s in slots:
                    sums[(i, s)] = tuple(float(x) for x in host[b, slot])

    for batch, chunk_rows in batches(rows, sequences, options.seq_len, options.batch_size):
        pending.append((step(batch), chunk_rows))  # dispatch is async: the next batch is built meanwhile
        report.batches += 1
        if report.batches == 1:
            collect()
            report.first_batch_s = time.perf_counter() - start
        elif len(pending) > 1:
            collect()
    while pending:
        collect()
    return sums


def _records(trajectories, sequences, sums, variants) -> list[dict]:
    by_variant: dict[tuple[str, str, int], np.ndarray | None] = {}
    token_counts: dict[tuple[str, int], int] = {}
    for i, seq in enumerate(sequences):
        for s in np.unique(seq.step_ids_L[seq.step_ids_L >= 0]).tolist():
            by_variant[(seq.item_id, seq.variant, s)] = sums.get((i, s))  # None: truncated
            if seq.variant == "full":
                token_counts[(seq.item_id, s)] = int((seq.step_ids_L[1:] == s).sum())
    records = []
    for traj in trajectories:
        steps = []
        for k in range(traj.num_steps):
            full = by_variant.get((traj.item_id, "full", k))
            nll_sum = None if full is None else float(full[1])
            nll_mean = _mean(nll_sum, None if full is None else full[0])
            rec = {"index": k, "tokens": token_counts[(traj.item_id, k)], "nll_sum": nll_sum, "nll_mean": nll_mean,
                   "entropy_mean": None if full is None else _mean(float(full[2]), full[0])}
            truncated = full is None
            for variant, mean_key in (("prompt_only", "nll_mean_prompt_only"), ("no_obs", "nll_mean_no_obs")):
                if variant not in variants:
                    continue
                alt = by_variant.get((traj.item_id, variant, k))  # absent: no such counterfactual
                rec[mean_key] = None if alt is None else _mean(float(alt[1]), alt[0])
                truncated |= alt is None and (traj.item_id, variant, k) in by_variant
            if "prompt_only" in variants:
                alt = rec["nll_mean_prompt_only"]
                rec["ifd"] = None if nll_mean is None or not alt else nll_mean / alt
            if "no_obs" in variants:
                alt = rec["nll_mean_no_obs"]
                rec["obs_dependence"] = None if nll_mean is None or alt is None else alt - nll_mean
            rec["truncated"] = truncated
            steps.append({k: rec[k] for k in STEP_FIELDS if k in rec})
        records.append({"item_id": traj.item_id, "num_steps": traj.num_steps, "steps": steps})
    return records
