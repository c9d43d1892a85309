"""The training loop: model + data + optimizer over a mesh, checkpoints with exact resume,
metrics, periodic eval, NaN/Inf stop and SIGTERM (preemption) handling."""
from __future__ import annotations

import dataclasses
import math
import signal
import time

import jax
import jax.numpy as jnp
from etils.epath import Path  # output_dir may be a gs:// URL

from atlas_jax.config_loader import ConfigError
from atlas_jax.convert.checkpoint import HF_META_DIR, is_hf_dir, load_pretrained, read_json
from atlas_jax.data.pipeline import TrainData, to_global_batch
from atlas_jax.model import CausalLM, ModelConfig, init_model
from atlas_jax.sharding import build_mesh
from atlas_jax.train.checkpointing import TrainCheckpointer
from atlas_jax.train.config import RunConfig, validate_for_devices
from atlas_jax.train.flops import peak_flops, train_flops_per_token
from atlas_jax.train.loss import head_capacity
from atlas_jax.train.metrics import MetricsWriter
from atlas_jax.train.multihost import AgreedFlag, gather_json
from atlas_jax.train.optimizer import make_optimizer
from atlas_jax.train.run_identity import prepare_run_dir
from atlas_jax.train.step import build_steps


class NonFiniteLossError(RuntimeError):
    pass


@dataclasses.dataclass
class TrainResult:
    status: str  # "completed" | "preempted" | "already_done"
    step: int
    checkpoint_dir: Path
    metrics_file: Path
    losses: dict  # step -> training loss, on every process (metrics are global)


def build_model(cfg: RunConfig, mesh) -> tuple[CausalLM, Path | None]:
    """The model to train and the directory of its HF metadata (config.json...), if any."""
    options = cfg.model.runtime_options()
    if cfg.model.init_from is not None:
        source = Path(cfg.model.init_from)
        model = load_pretrained(source, mesh=mesh, **options)
        return model, source if is_hf_dir(source) else source / HF_META_DIR
    config_path = Path(cfg.model.config)
    if not config_path.is_file():
        raise FileNotFoundError(f"model.config: {config_path} does not exist")
    model_cfg = ModelConfig.from_hf_dict(read_json(config_path), source=str(config_path), **options)
    return init_model(model_cfg, seed=cfg.train.seed, mesh=mesh), None


def check_vocab(tokenizer_size: int, model_vocab: int, cfg: RunConfig) -> None:
    """Token ids past the embedding table are clipped silently by XLA's gather: refuse them."""
    if tokenizer_size > model_vocab:
        raise ConfigError(f"data.tokenizer {cfg.data.tokenizer} has {tokenizer_size} tokens but the model's "
                          f"vocabulary has {model_vocab} ({cfg.model.config or cfg.model.init_from}): use a model "
                          "config whose vocab_size covers the tokenizer")


PROFILE_BATCHES = 256


@dataclasses.dataclass
class RunPlan:
    steps: int
    head_capacity: int | None  # sparse LM head buffer per row; None: dense head
    summary: str


def plan_run(cfg: RunConfig, data: TrainData) -> RunPlan:
    """The step count (from ``train.epochs`` via the packed data, or ``train.steps``) and the
    sparse head's capacity, sized from the most weighted positions of a row in the profiled
    batches (the first epoch, or the run's batches if fewer), agreed over all processes.
    Encoding is cached, so profiling costs packing, not a second tokenization."""
    epochs, sparse = cfg.train.epochs, cfg.train.lm_head == "sparse"
    if epochs is None and not sparse:
        return RunPlan(cfg.train.steps, None, f"run: {cfg.train.steps} steps, dense LM head")
    # a run sized in steps profiles at most PROFILE_BATCHES batches: enough to size the buffer (an
    # overflow only costs a dense step), without encoding a huge data set before the first step
    profile = data.profile(num_epochs=epochs or 1,
                           max_batches=None if epochs else min(cfg.train.steps, PROFILE_BATCHES))
    counts = gather_json([profile.batches, profile.max_row_weighted])
    steps = cfg.train.steps if epochs is None else max(c[0] for c in counts)  # a short process just wraps
    if steps < 1:
        raise ValueError(f"train.epochs={epochs}: the data gives no batch")
    if cfg.optim.warmup_steps > steps:
        raise ValueError(f"optim.warmup_steps={cfg.optim.warmup_steps} exceeds the run's {steps} steps")
    capacity = head_capacity(max(c[1] for c in counts), cfg.data.seq_len) if sparse else None
    real = profile.real_tokens / max(profile.batches * data.local_batch_size * cfg.data.seq_len, 1)
    trained = profile.weighted_positions / max(profile.real_tokens, 1)
    sized = f"{steps} steps" if epochs is None else f"{epochs} epoch(s) = {steps} steps"
    head = ("dense LM head" if capacity is None else
            f"sparse LM head, {capacity} of {cfg.data.seq_len} positions per row")
    return RunPlan(steps, capacity, f"run: {sized}; {head}; profiled {profile.batches} batches: real tokens "
                                    f"{real:.1%} of padded, weighted {trained:.1%} of real")


class _Preemption:
    """SIGTERM sets this process's flag. The loop agrees on it over all processes (AgreedFlag): a
    signal reaching any one process makes every process save the same step and exit cleanly."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread: no signal handling
            self._previous = None
        return self

    def _handle(self, signum, frame):
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def train(cfg: RunConfig) -> TrainResult:
    validate_for_devices(cfg, jax.device_count(), jax.process_count())
    mesh = build_mesh(cfg.mesh)
    out_dir = Path(cfg.output_dir)
    prepare_run_dir(cfg, lead=jax.process_index() == 0)  # refuses a mismatched resume before writing anything

    model, hf_meta = build_model(cfg, mesh)
    checkpointer = TrainCheckpointer(cfg.checkpoint_dir, model.cfg, keep=cfg.train.keep_checkpoints,
                                     async_save=cfg.train.async_checkpointing, hf_dir=hf_meta,
                                     tokenizer_dir=cfg.data.tokenizer)
    # a resumed run keeps its checkpoint's data shards (on any process count dividing them), so the
    # profile below and every batch after the restore are those of the run that wrote it
    data = TrainData(cfg.data, shards=checkpointer.latest_data_shards())
    check_vocab(len(data.encoder.tokenizer), model.cfg.vocab_size, cfg)
    plan = plan_run(cfg, data)
    total_steps = plan.steps
    tx, schedule = make_optimizer(cfg.optim, total_steps)
    steps = build_steps(model, tx, schedule, mesh, cfg.optim.grad_accum_steps, cfg.train.loss_chunk_tokens,
                        plan.head_capacity)
    params, opt_state = steps.params, steps.opt_state
    start, restored = 0, checkpointer.restore_latest(params, opt_state)
    if restored is not None:
        start, params, opt_state, data_states, _ = restored
        data.restore(data_states)
    writer = MetricsWriter(out_dir, total_steps, start, progress_bar=cfg.train.progress_bar)
    writer.message(f"data {', '.join(cfg.data.train_files)}: {data.read_report.summary()}")
    writer.message(plan.summary)
    if start >= total_steps:
        writer.message(f"checkpoint step {start} already reaches the run's {total_steps} steps; nothing to do")
        writer.close()
        checkpointer.close()
        return TrainResult("already_done", start, checkpointer.directory, writer.path, {})
    if start:
        writer.message(f"resumed from {checkpointer.directory} step {start}")
    evaluator = _Evaluator(cfg, steps, mesh) if cfg.eval.files else None

    seq_len, rows = cfg.data.seq_len, cfg.data.global_batch_size
    flops_per_token = train_flops_per_token(model.cfg, seq_len)
    peak = peak_flops()
    # throughput since the last logged step: real (non-padding) tokens and host time spent waiting for data
    window = {"time": time.perf_counter(), "step": start, "real_tokens": 0.0, "host_s": 0.0}
    losses: dict[int, float] = {}
    pending = None  # metrics of the last dispatched step, checked one step later (no pipeline stall)

    def check(step_and_metrics, log: bool):
        step, metrics = step_and_metrics
        values = {k: float(v) for k, v in jax.device_get(metrics).items()}
        losses[step] = values["loss"]
        window["real_tokens"] += values["tokens"]
        if not (math.isfinite(values["loss"]) and math.isfinite(values["grad_norm"])):
            checkpointer.wait()
            last = checkpointer.latest_step()
            kept = (f"the last good checkpoint is step {last} in {checkpointer.directory}" if last
                    else "no checkpoint was saved yet")
            raise NonFiniteLossError(f"step {step}: loss={values['loss']} grad_norm={values['grad_norm']} is not "
                                     f"finite; stopping ({kept})")
        if log:
            # the metrics were just fetched, so step `step` has finished: time per finished step
            now, steps_done = time.perf_counter(), step - window["step"]
            elapsed = now - window["time"]
            tokens_per_sec = steps_done * rows * seq_len / max(elapsed, 1e-9)
            values["tokens_per_sec"] = tokens_per_sec  # padded: every position of every row
            values["real_tokens_per_sec"] = window["real_tokens"] / max(elapsed, 1e-9)
            values["step_time"] = elapsed / max(steps_done, 1)
            # the input pipeline alone: batches/s it delivered while the loop waited on it; a
            # figure near 1 / step_time means the host, not the device, limits the run
            values["host_batches_per_sec"] = steps_done / max(window["host_s"], 1e-9)
            if peak is not None:
                values["mfu"] = tokens_per_sec * flops_per_token / (peak * mesh.size)
            writer.write(step, values)
            window.update(time=now, step=step, real_tokens=0.0, host_s=0.0)

    status = "completed"
    step = start
    agreed, stop_token = AgreedFlag(mesh), None
    with _Preemption() as preemption:
        for step in range(start, total_steps):
            fetch_start = time.perf_counter()
            batch = to_global_batch(next(data), mesh)
            window["host_s"] += time.perf_counter() - fetch_start
            params, opt_state, metrics = steps.train(params, opt_state, batch, jnp.asarray(step, jnp.int32))
            done = step + 1
            if pending is not None:
                check(pending, log=pending[0] % cfg.train.log_every == 0)
            pending = (done, metrics)
            # a SIGTERM seen by any process before step `done - 1` was dispatched: all stop after `done`
            stop = stop_token is not None and agreed.value(stop_token)
            stop_token = agreed.dispatch(preemption.requested)
            writer.advance()
            last = done == total_steps
            save = last or stop or (cfg.train.save_every and done % cfg.train.save_every == 0)
            if save or (evaluator and cfg.eval.every and done % cfg.eval.every == 0):
                check(pending, log=done % cfg.train.log_every == 0 or last)
                pending = None
            if evaluator and (last or (cfg.eval.every and done % cfg.eval.every == 0)):
                eval_loss = evaluator.loss(params)
                writer.write(done, {"loss": eval_loss}, prefix="eval")
                writer.message(f"step {done}: held-out loss {eval_loss:.4f} ({', '.join(cfg.eval.files)})")
            if save:
                checkpointer.save(done, params, opt_state, gather_json(data.get_state()),
                                  {"step": done, "data": data.summary()})
            if stop and not last:
                status = "preempted"
                who = "" if preemption.requested else " (the signal reached another process)"
                writer.message(f"SIGTERM: saved step {done} to {checkpointer.directory}{who}; "
                               f"rerun the same command to resume")
                break
        step = done
    checkpointer.close()
    writer.message(f"{data.summary()} (this process, including read-ahead)")
    writer.close()
    return TrainResult(status, step, checkpointer.directory, writer.path, losses)


class _Evaluator:
    """Loss on held-out trajectories: every assistant turn weighted (plain SFT loss), which
    measures how well the model imitates the experts on unseen tasks."""

    def __init__(self, cfg: RunConfig, steps, mesh):
        single = jax.process_count() == 1
        data_cfg = dataclasses.replace(cfg.data, train_files=tuple(cfg.eval.files), mask_file=None, shuffle=False,
                                       shards=None,
                                       num_epochs=1 if single else None, seq_len=cfg.eval.seq_len or cfg.data.seq_len,
                                       encode=dataclasses.replace(cfg.data.encode, weight_mode="all",
                                                                  unmasked="error", max_length=None))
        self.data = TrainData(data_cfg)
        self.start_state = self.data.get_state()
        self.steps, self.mesh, self.max_batches = steps, mesh, cfg.eval.max_batches

    def loss(self, params) -> float:
        self.data.set_state(self.start_state)
        total = weight = 0.0
        for _ in range(self.max_batches):
            try:
                batch = to_global_batch(next(self.data), self.mesh)
            except StopIteration:
                break
            s, w = jax.device_get(self.steps.eval_sums(params, batch))
            total, weight = total + float(s), weight + float(w)
        return total / weight if weight > 0 else float("nan")

