"""Independent work items (trajectories to score, episodes to play) split over the processes of a
JAX cluster, and their results merged into one output file in input order.

    index, count = join_cluster()
    parts = Parts(out_path, run={...what makes results comparable...})
    done = parts.start()                        # positions an earlier, killed run already finished
    mine = balanced_shares(costs, count, skip=done)[index]
    ... parts.save([(position, record), ...])   # finished results, one atomic part file per call
    records = parts.merge(total, write)         # process 0: every record in input order; OUT written

Part files live in ``OUT.parts/`` beside the output, so every process must see the same folder
(one host, NFS on a SLURM cluster, ``gs://`` on a TPU pod); ``start`` checks that and refuses a
folder only some processes can see. A part holds a header naming the run, then
``{"position", "record"}`` lines. A killed run keeps its parts: the next run with the same inputs and
options skips what they hold (whatever its process count); parts of a different run are refused.
After every process has saved its share, process 0 writes OUT atomically and removes the folder.
The processes only exchange small JSON messages (atlas_jax.train.multihost.gather_json), which are
also the barriers: no device collectives beyond those.
"""
from __future__ import annotations

import heapq
import json
import os
import uuid
from typing import Callable, Iterable, Sequence

from etils import epath

from atlas_jax.outputs import atomic_write

PART_GLOB = "part-*.jsonl"


def join_cluster() -> tuple[int, int]:
    """(process index, process count) after joining the cluster the environment describes
    (atlas_jax.train.multihost: ATLAS_COORDINATOR..., ATLAS_DISTRIBUTED=1, SLURM); (0, 1) alone."""
    import jax

    from atlas_jax.train.multihost import maybe_initialize_distributed

    if not jax.distributed.is_initialized():  # a library caller (ablate) may have joined already
        maybe_initialize_distributed()
    return jax.process_index(), jax.process_count()


def stable_path(path) -> str:
    """A path as it names the same thing from any process and working folder: local paths made
    absolute, URLs (gs://...) as given."""
    text = str(path)
    return text if "://" in text else os.path.abspath(text)


def balanced_shares(costs: Sequence[float], count: int, skip: Iterable[int] = ()) -> list[list[int]]:
    """Positions of ``costs`` (minus ``skip``) dealt to ``count`` processes, most expensive first to
    the least loaded one (deterministic: ties go to the lower position and process); each share in
    input order."""
    skip = set(skip)
    loads = [(0.0, p) for p in range(count)]
    shares: list[list[int]] = [[] for _ in range(count)]
    for i in sorted((i for i in range(len(costs)) if i not in skip), key=lambda i: (-costs[i], i)):
        load, p = heapq.heappop(loads)
        shares[p].append(i)
        heapq.heappush(loads, (load + costs[i], p))
    return [sorted(s) for s in shares]


def _exchange(obj) -> list:
    from atlas_jax.train.multihost import gather_json

    return gather_json(obj)


class Parts:
    """``OUT.parts/``: the finished results of one run, until process 0 merges them into OUT."""

    def __init__(self, out: str, run: dict, process_index: int | None = None, process_count: int | None = None):
        import jax

        self.out = str(out)
        self.folder = epath.Path(f"{self.out}.parts")
        self.run = json.loads(json.dumps(run))  # as it reads back from a header
        self.index = jax.process_index() if process_index is None else process_index
        self.count = jax.process_count() if process_count is None else process_count
        self.saved = 0

    # -- reading --------------------------------------------------------------------------------
    def _part_files(self) -> list[epath.Path]:
        return sorted(self.folder.glob(PART_GLOB)) if self.folder.exists() else []

    def _read(self) -> dict[int, dict]:
        """position -> record over every part; a part of another run is an error."""
        found: dict[int, dict] = {}
        for part in self._part_files():
            lines = part.read_text(encoding="utf-8").splitlines()
            try:
                header = json.loads(lines[0]) if lines else None
            except json.JSONDecodeError:
                header = None
            if not isinstance(header, dict) or "run" not in header:
                raise ValueError(f"{part}:1: not a part file of atlas-jax (no run header); remove {self.folder}")
            if header["run"] != self.run:
                differs = sorted(k for k in set(header["run"]) | set(self.run)
                                 if header["run"].get(k) != self.run.get(k))
                raise ValueError(f"{part}: finished results of another run (differs in {', '.join(differs)}); "
                                 f"remove {self.folder} to start afresh, or rerun with the same inputs and options")
            for n, line in enumerate(lines[1:], start=2):
                try:
                    item = json.loads(line)
                    found.setdefault(int(item["position"]), item["record"])
                except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                    raise ValueError(f"{part}:{n}: not a {{position, record}} line; remove {self.folder}") from None
        return found

    # -- the collective steps -------------------------------------------------------------------
    def start(self) -> set[int]:
        """Positions already finished (by a killed earlier run). Every process must call it."""
        message = {"error": None, "done": [], "token": None}
        if self.index == 0:
            try:
                done = self._read()
                self.folder.mkdir(parents=True, exist_ok=True)
                token = f".run-{uuid.uuid4().hex[:12]}"
                (self.folder / token).write_text("")
                message.update(done=sorted(done), token=token)
            except (OSError, ValueError) as e:
                message["error"] = str(e)
        message = _exchange(message)[0]
        if message["error"]:
            raise ValueError(message["error"])
        seen = _exchange((self.folder / message["token"]).exists())
        if self.index == 0:
            (self.folder / message["token"]).unlink()
        if not all(seen):
            blind = [p for p, ok in enumerate(seen) if not ok]
            raise OSError(f"{self.folder}: processes {blind} cannot see this folder; with several hosts the output "
                          f"must be on storage all of them share (gs://..., NFS)")
        return set(message["done"])

    def save(self, items: Sequence[tuple[int, dict]]) -> None:
        """Finished results, as one new part file (appears whole or not at all)."""
        if not items:
            return
        name = f"part-p{self.index:05d}-{uuid.uuid4().hex[:12]}.jsonl"
        with atomic_write(self.folder / name) as f:
            f.write(json.dumps({"run": self.run}) + "\n")
            for position, record in items:
                f.write(json.dumps({"position": position, "record": record}, ensure_ascii=False,
                                   allow_nan=False) + "\n")
        self.saved += len(items)

    def merge(self, total: int, write: Callable[[str, list[dict]], None]) -> list[dict] | None:
        """After every process saved its share: process 0 calls ``write(OUT, records in input order)``
        and removes the folder, and gets the records; the others get None. Every process must call it."""
        _exchange(None)  # the barrier: every process has saved its share
        records, error = None, None
        if self.index == 0:
            try:
                found = self._read()
                missing = [p for p in range(total) if p not in found]
                if missing:
                    raise ValueError(f"{self.folder}: {len(missing)} of {total} results missing (first: position "
                                     f"{missing[0]}); rerun the same command to finish them")
                records = [found[p] for p in range(total)]
                write(self.out, records)
                self.folder.rmtree()
            except (OSError, ValueError) as e:
                error = str(e)
        errors = _exchange(error)
        if errors[0]:
            raise ValueError(errors[0])
        return records
