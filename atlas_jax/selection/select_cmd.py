"""`atlas-jax select --selector NAME --ratio R --data TRAJ [--scores S] [--mask M] [oracle options] --out MASK`.

Selectors are described in atlas_jax.selection.selectors. ``--token-budget N`` caps the step
tokens selected over the whole data set (token counts from --scores, else from --tokenizer).
With the oracle, items that fail after all retries are listed and left out of the mask, and the
command exits 1 (``--allow-failed``: exit 0); rerunning asks only for them (the cache has the rest).
After a run of consecutive auth or server failures (the circuit breaker) the command stops
sending, writes no mask and exits 1; the answers so far stay cached for the rerun.
"""
from __future__ import annotations

import argparse
import sys

from atlas_jax import paths
from atlas_jax.selection.oracle import OracleOptions
from atlas_jax.selection.oracle_client import CONNECT_TIMEOUT_S, READ_TIMEOUT_S
from atlas_jax.selection.selectors import DEFAULT_COMBINE, SELECTORS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--selector", required=True, choices=SELECTORS)
    parser.add_argument("--ratio", type=float, default=0.3,
                        help="per-trajectory cap: floor(R * trainable steps), at least 1")
    parser.add_argument("--data", required=True, nargs="+", help="trajectory files (JSONL/JSON)")
    parser.add_argument("--out", required=True, help="mask JSONL to write")
    parser.add_argument("--scores", help="scores JSONL from `atlas-jax score` (perplexity, score; token counts)")
    parser.add_argument("--mask", help="reference mask whose complement `noncritical` samples from")
    parser.add_argument("--seed", type=int, default=0, help="random / noncritical seed")
    parser.add_argument("--combine", default=DEFAULT_COMBINE,
                        help=f"score: metric=weight,... over per-trajectory z-scores (default {DEFAULT_COMBINE})")
    parser.add_argument("--token-budget", type=int, help="global cap on selected step tokens")
    parser.add_argument("--tokenizer", help="tokenizer directory, for --token-budget without --scores")
    parser.add_argument("--on-error", choices=("raise", "skip"), default="raise", help="bad input records (trajectories, scores, reference mask): stop (default) or skip and count them")
    parser.add_argument("--allow-unscored", action="store_true",
                        help="perplexity/score: write the mask even when most chosen steps have no score "
                             "(steps the scoring pass cut off are ranked last, by index)")
    oracle = parser.add_argument_group("oracle (key from $ATLAS_ORACLE_API_KEY, else $OPENAI_API_KEY)")
    oracle.add_argument("--oracle-url", help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1")
    oracle.add_argument("--oracle-model", help="model name sent to the server")
    oracle.add_argument("--oracle-cache", help="answer cache directory (default: OUT's folder/oracle-cache)")
    oracle.add_argument("--oracle-concurrency", type=int, default=8, help="requests in flight (default 8)")
    oracle.add_argument("--oracle-timeout", type=float, default=READ_TIMEOUT_S,
                        help=f"seconds to wait for an answer (default {READ_TIMEOUT_S:g})")
    oracle.add_argument("--oracle-connect-timeout", type=float, default=CONNECT_TIMEOUT_S,
                        help=f"seconds to wait for a connection (default {CONNECT_TIMEOUT_S:g})")
    oracle.add_argument("--oracle-retries", type=int, default=OracleOptions.max_retries,
                        help=f"retries per item (default {OracleOptions.max_retries})")
    oracle.add_argument("--oracle-backoff", type=float, default=OracleOptions.backoff_s,
                        help=f"first retry delay in s, doubling per retry (default {OracleOptions.backoff_s:g})")
    oracle.add_argument("--oracle-max-auth-failures", type=int, default=OracleOptions.max_auth_failures,
                        help="stop after this many consecutive HTTP 401/403/404 answers, 0: never "
                             f"(default {OracleOptions.max_auth_failures})")
    oracle.add_argument("--oracle-max-server-failures", type=int, default=OracleOptions.max_server_failures,
                        help="stop after this many consecutive server errors, timeouts or refused connections, "
                             f"0: never (default {OracleOptions.max_server_failures})")
    oracle.add_argument("--oracle-max-tokens", type=int, default=1024, help="answer length limit (default 1024)")
    oracle.add_argument("--allow-failed", action="store_true", help="exit 0 even if some items failed")
    oracle.add_argument("--no-progress", action="store_true", help="no progress bar (it shows only on a terminal)")


def _needs(args, flag: str, why: str) -> None:
    if getattr(args, flag.lstrip("-").replace("-", "_")) in (None, ""):
        raise ValueError(f"--selector {args.selector} needs {flag} ({why})")


def step_token_counts(trajectories, tokenizer) -> dict[str, list[int]]:
    """{item_id: tokens of each step} with training's span definition."""
    import numpy as np

    from atlas_jax.data.spans import encode_steps

    out = {}
    for traj in trajectories:
        _, steps_L = encode_steps(tokenizer, traj.messages(), where=f"{traj.source} item_id={traj.item_id!r}")
        out[traj.item_id] = np.bincount(steps_L[steps_L >= 0], minlength=traj.num_steps).tolist()
    return out


def _select(args, trajectories, scores) -> tuple[list, dict, int]:
    """(selections, selector metadata, exit code)."""
    from atlas_jax.selection import selectors as S

    meta = {"name": args.selector, "ratio": args.ratio}
    if args.selector == "all":
        return [S.select_all(t) for t in trajectories], {"name": "all"}, 0
    if args.selector == "random":
        return [S.select_random(t, args.ratio, args.seed) for t in trajectories], {**meta, "seed": args.seed}, 0
    if args.selector == "noncritical":
        from atlas_jax.data.mask import read_mask
        reference = read_mask(args.mask, on_error=args.on_error)
        missing = [t.item_id for t in trajectories if t.item_id not in reference]
        if missing:
            raise ValueError(f"{args.mask}: no entry for item_id {missing[0]!r} ({len(missing)} trajectories lack one)")
        sels = [S.select_noncritical(t, args.ratio, args.seed, reference[t.item_id]) for t in trajectories]
        return sels, {**meta, "seed": args.seed, "reference_mask": paths.describe(args.mask)}, 0
    if args.selector in ("perplexity", "score"):
        model = next((r.get("scorer", {}).get("model") for r in scores.values()), None)
        if args.selector == "perplexity":
            values = {t.item_id: S.metric_values(S.scores_for(t, scores), "nll_mean") for t in trajectories}
            meta.update(metric="nll_mean")
        else:
            combine = S.parse_combine(args.combine)
            values = {t.item_id: S.combined_scores(S.scores_for(t, scores), combine, t.trainable_steps)
                      for t in trajectories}
            meta.update(combine=combine)
        selections = [S.select_top(t, args.ratio, values[t.item_id]) for t in trajectories]
        meta.update(model=model, **_check_unscored(args, trajectories, values, selections))
        return selections, meta, 0
    from atlas_jax.selection.oracle import label_trajectories
    from atlas_jax.selection.oracle_client import ChatClient
    from atlas_jax.selection.oracle_prompt import PROMPT_VERSION

    client = ChatClient(args.oracle_url, args.oracle_model, timeout=args.oracle_timeout,
                        connect_timeout=args.oracle_connect_timeout, max_tokens=args.oracle_max_tokens)
    if not client.has_key:
        print("oracle: no API key in ATLAS_ORACLE_API_KEY or OPENAI_API_KEY; sending no Authorization header")
    cache = args.oracle_cache or str(paths.absolute(args.out).parent / "oracle-cache")
    options = OracleOptions(concurrency=args.oracle_concurrency, max_retries=args.oracle_retries,
                            backoff_s=args.oracle_backoff, max_auth_failures=args.oracle_max_auth_failures,
                            max_server_failures=args.oracle_max_server_failures, cache_dir=cache,
                            progress=False if args.no_progress else None)
    labelled, report = label_trajectories(trajectories, args.ratio, client, options)
    print(report.summary())
    print(f"oracle cache: {cache}")
    done = report.labelled + report.cached
    resume = (f"the {done} answers so far are cached in {cache}; rerun the same command to ask only for the "
              f"{report.missing} missing items" if done else
              f"no item was labelled; fix the cause and rerun the same command (answers are cached in {cache})")
    if report.stopped:  # a mask of the few items done before the stop would mislead: write none
        print(f"atlas-jax select: oracle stopped: {report.stopped}; no mask written; {resume}", file=sys.stderr)
        return [], meta, -1
    if report.missing:
        print(f"atlas-jax select: {report.missing} trajectories failed and are not in the mask; {resume}"
              + ("" if args.allow_failed else " (or pass --allow-failed)"), file=sys.stderr)
    meta.update(model=args.oracle_model, url=args.oracle_url, prompt_version=PROMPT_VERSION)
    code = 1 if report.missing and not args.allow_failed else 0
    return [labelled[t.item_id] for t in trajectories if t.item_id in labelled], meta, code


def _check_unscored(args, trajectories, values, selections) -> dict:
    """Say how many steps lack a score (``score`` cut them at --seq-len) and how many chosen steps
    rest on none; refuse when most do, since such a mask is a selection by step order."""
    missing = sum(values[t.item_id][k] is None for t in trajectories for k in t.trainable_steps)
    total = sum(len(t.trainable_steps) for t in trajectories)
    blind = sum(values[s.item_id][k] is None for s in selections for k in s.ranked)
    chosen = sum(len(s.ranked) for s in selections)
    if missing:
        print(f"warning: {missing}/{total} trainable steps have no score in {args.scores} (cut off by "
              f"`score --seq-len`?); {blind}/{chosen} chosen steps were picked without one (by step order)",
              file=sys.stderr)
    if chosen and 2 * blind > chosen and not args.allow_unscored:
        raise ValueError(f"{blind} of {chosen} chosen steps have no score in {args.scores}: the mask would be "
                         "a selection by step order; rerun `atlas-jax score` with a --seq-len that covers the "
                         "data, or pass --allow-unscored")
    return {"unscored_steps": missing, "chosen_without_score": blind}


def run(args: argparse.Namespace) -> int:
    from atlas_jax.data.trajectory import read_trajectories
    from atlas_jax.jsonl import ReadReport
    from atlas_jax.outputs import prepare_output
    from atlas_jax.selection.mask_writer import write_mask
    from atlas_jax.selection.scores_io import read_scores
    from atlas_jax.selection.selectors import apply_token_budget, step_cap

    if args.selector != "all":
        step_cap(1, args.ratio)  # validates the ratio before any work
    if args.selector in ("perplexity", "score"):
        _needs(args, "--scores", "the scoring pass's metrics")
    if args.selector == "noncritical":
        _needs(args, "--mask", "the critical steps to avoid")
    if args.selector == "oracle":
        _needs(args, "--oracle-url", "an OpenAI-compatible server")
        _needs(args, "--oracle-model", "the model to ask")
    if args.token_budget is not None and not (args.scores or args.tokenizer):
        raise ValueError("--token-budget needs step token counts: pass --scores or --tokenizer")

    prepare_output(args.out, inputs=[*args.data, args.scores, args.mask])  # before any (oracle) work
    trajectories, read_report = read_trajectories(args.data, on_error=args.on_error)
    print(f"trajectories: {read_report.summary()}")
    scores = None
    if args.scores:
        scores_report = ReadReport()
        scores = read_scores(args.scores, on_error=args.on_error, report=scores_report)
        print(f"scores: {scores_report.summary()}")
        if args.on_error == "skip":  # a skipped scores line leaves its trajectory unscorable: skip it too
            unscored = [t for t in trajectories if t.item_id not in scores]
            if unscored:
                print(f"skipped {len(unscored)} trajectories without a scores record (on-error skip): "
                      f"{', '.join(t.item_id for t in unscored[:10])}{' ...' if len(unscored) > 10 else ''}")
                trajectories = [t for t in trajectories if t.item_id in scores]
    selections, meta, code = _select(args, trajectories, scores)
    if code < 0:  # stopped before the work was done: nothing to write
        return 1

    if args.token_budget is not None:
        if scores is not None:
            from atlas_jax.selection.selectors import scores_for
            counts = {t.item_id: [s["tokens"] for s in scores_for(t, scores)["steps"]] for t in trajectories}
        else:
            from atlas_jax.data.encode import load_tokenizer
            counts = step_token_counts(trajectories, load_tokenizer(args.tokenizer))
        print(apply_token_budget(selections, counts, args.token_budget).summary())
        meta["token_budget"] = args.token_budget

    empty = [s.item_id for s in selections if not s.ranked]
    if empty:  # only noncritical can get here: every step of these is in the reference mask
        print(f"{len(empty)} trajectories have no step outside the reference mask; written with no critical "
              f"step (training skips them): {', '.join(empty[:10])}{' ...' if len(empty) > 10 else ''}")
    written = write_mask(args.out, selections, meta)
    chosen = sum(len(s.ranked) for s in selections)
    trainable = {t.item_id: len(t.trainable_steps) for t in trajectories}
    total = sum(trainable[s.item_id] for s in selections)
    print(f"selector {args.selector}: {chosen}/{total} trainable steps critical ({chosen / max(total, 1):.1%}) in "
          f"{written} trajectories; wrote {args.out}")
    return code
