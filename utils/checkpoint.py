"""Checkpoints of a run directory: atomic save, weights_only load, RNG state, latest / best / snapshot lookup.

A run directory is self-describing::

    run_dir/
      hparams.json                      resolved hyperparameters
      model.ckpt-2000                   save_checkpoint(run_dir / "model.ckpt-2000", state)
      model.ckpt-4000
      model.ckpt-4000-wer-0.1234        BestTracker's copy of the best checkpoint for one metric
                                        (an original-code run dir: model.ckpt-4000-wer-0.1234-cer-0.0567, its
                                        plain file removed; models/original.py reads its checkpoints)
      best_metrics.json                 {"wer": [0.1234, 4000], ...}
      metrics.jsonl                     utils.metrics.MetricsLogger

A checkpoint holds plain tensors, dicts, lists, ints, floats and strings only, so that it loads with
``torch.load(..., weights_only=True)``: no pickled code runs when a checkpoint is read. A file that cannot serve
(empty, truncated, foreign) is a ``CheckpointError`` naming its path and what is wrong with it.

    save_checkpoint(run_dir / f"model.ckpt-{step}", {"model": model.state_dict(), "step": step, "rng": rng_state()})
    state = load_checkpoint(resolve_checkpoint(run_dir))   # the latest one
    set_rng_state(state["rng"])
"""
import errno
import json
import logging
import math
import os
import pickle
import random
import re
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch

logger = logging.getLogger(__name__)

CKPT_PREFIX = "model.ckpt-"
_STEP_RE = re.compile(r"^model\.ckpt-(\d+)(?:-.+)?$")  # model.ckpt-2000, model.ckpt-2000-wer-0.1234
_PLAIN_RE = re.compile(r"^model\.ckpt-(\d+)$")  # what list_checkpoints prefers
BEST_METRICS = "best_metrics.json"
_TEMP_RE = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")  # _atomic_write's temp files: .<name>.<random>.tmp
FULL_DISK = (errno.ENOSPC, errno.EDQUOT)


class CheckpointError(ValueError):
    """A checkpoint file that cannot serve: the message names its path and what is wrong with it."""


# --- atomic writes -----------------------------------------------------------------------------------------


def _fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (a no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write(path: Path, write) -> None:
    """Call ``write(file)`` on a temp file beside ``path``, fsync it, then rename it over ``path``.

    The temp file is named ``.<name>.<random>.tmp``: hidden, never matched by the checkpoint patterns, and
    removed again if ``write`` fails. Readers see either the old file or the complete new one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)


def _atomic_write_json(path: Path, obj) -> None:
    _atomic_write(path, lambda f: f.write((json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()))


def atomic_write_text(path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically: a reader sees the old file or the complete new one."""
    _atomic_write(Path(path), lambda f: f.write(text.encode("utf-8")))


def remove_temp_files(run_dir) -> list[Path]:
    """Remove the temp files a killed write left in ``run_dir`` (``.<name>.<random>.tmp``); return them."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    leftovers = [p for p in run_dir.iterdir() if _TEMP_RE.match(p.name) and p.is_file()]
    for p in leftovers:
        p.unlink(missing_ok=True)
    return leftovers


def _chained(error: BaseException):
    """``error`` and the exceptions it was raised from or while handling, innermost last."""
    seen = []
    while error is not None and error not in seen:
        seen.append(error)
        error = error.__cause__ or error.__context__
    return seen


def save_checkpoint(path, state: dict) -> Path:
    """Write ``state`` to ``path`` atomically (temp file in the same directory, fsync, ``os.replace``).

    ``state`` must hold only tensors, dicts, lists, tuples, ints, floats, bools, strings and None, so that
    :func:`load_checkpoint` can read it with ``weights_only=True``; use :func:`rng_state` for RNG states.

    A Ctrl-C during the write stays a ``KeyboardInterrupt`` (torch's writer reports it as "unexpected pos"), and a
    full disk is an ``OSError`` naming the path; either way the temp file is gone and the old files are untouched.
    """
    path = Path(path)
    try:
        _atomic_write(path, lambda f: torch.save(state, f))
    except Exception as error:
        causes = _chained(error)
        interrupt = next((e for e in causes if isinstance(e, KeyboardInterrupt)), None)
        if interrupt is not None:
            raise interrupt from None
        full = next((e for e in causes if isinstance(e, OSError) and e.errno in FULL_DISK), None)
        if full is not None:
            free = shutil.disk_usage(path.parent).free / 2**20
            raise OSError(full.errno, f"{path}: no space left on the device ({full.strerror}; {free:.0f} MiB free "
                                      f"in {path.parent}): the checkpoint was not written") from None
        raise
    return path


def load_checkpoint(path, map_location="cpu", required=("model",)) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` with ``torch.load(weights_only=True)``.

    An empty, truncated or foreign file, or one without the ``required`` entries, is a ``CheckpointError`` naming
    the path and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    problem = checkpoint_problem(path)
    if problem is not None:
        raise CheckpointError(f"checkpoint {path}: {problem}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(f"checkpoint {path}: holds objects that weights_only loading refuses, so it was not "
                              f"written by save_checkpoint ({_first_line(error)})") from None
    except (RuntimeError, EOFError, OSError) as error:
        raise CheckpointError(f"checkpoint {path}: cannot be read, damaged or not a torch checkpoint "
                              f"({_first_line(error)})") from None
    require_entries(state, required, path)
    return state


def require_entries(state, required, path) -> None:
    """A ``CheckpointError`` naming ``path`` and the entries it lacks, unless ``state`` is a dict holding every one of
    ``required``."""
    missing = [key for key in required if not isinstance(state, dict) or key not in state]
    if missing:
        held = ", ".join(map(repr, list(state)[:6])) if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"checkpoint {path}: lacks {', '.join(map(repr, missing))} (it holds {held}): not a "
                              f"checkpoint of train.py / train_distill.py")


def checkpoint_problem(path) -> str | None:
    """What makes ``path`` unusable as a checkpoint, found without reading its tensors (its size and the zip
    directory that ``torch.save`` ends a file with), or None."""
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        return "empty (0 bytes): its write was cut short"
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return f"truncated or not a torch checkpoint ({size} bytes, without the zip directory torch.save ends with)"
    if not any(name.rsplit("/", 1)[-1] == "data.pkl" for name in names):
        return "a zip archive without data.pkl: not a torch checkpoint"
    return None


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"


# --- RNG state ---------------------------------------------------------------------------------------------


def rng_state() -> dict:
    """The python, numpy, torch CPU (and CUDA, when available) RNG states in a weights_only-loadable form."""
    py_version, py_internal, py_gauss = random.getstate()  # (3, 625 ints < 2**32, float | None)
    np_name, np_key, np_pos, np_has_gauss, np_gauss = np.random.get_state()  # ('MT19937', uint32[624], ...)
    state = {
        "python": {
            "version": int(py_version),
            "internal": torch.tensor(py_internal, dtype=torch.int64),  # (625,)
            "gauss_next": py_gauss,
        },
        "numpy": {
            "bit_generator": str(np_name),
            "key": torch.from_numpy(np.asarray(np_key, dtype=np.int64)),  # (624,)
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_gauss),
        },
        "torch": torch.get_rng_state(),  # (5056,) uint8
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()  # list of uint8 tensors, one per device
    return state


def set_rng_state(state: dict) -> None:
    """Restore the RNG states saved by :func:`rng_state` (the CUDA part only where CUDA is available)."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["internal"].tolist()), py["gauss_next"]))
    npy = state["numpy"]
    np.random.set_state(
        (
            npy["bit_generator"],
            npy["key"].numpy().astype(np.uint32),
            npy["pos"],
            npy["has_gauss"],
            npy["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) != torch.cuda.device_count():
            logger.warning(
                "checkpoint has CUDA RNG states for %d devices, this process sees %d; restoring the first %d",
                len(cuda_states), torch.cuda.device_count(), min(len(cuda_states), torch.cuda.device_count()),
            )
        for device, s in enumerate(cuda_states[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(s.cpu(), device)


# --- lookup ------------------------------------------------------------------------------------------------


def checkpoint_step(path) -> int:
    """The training step in a checkpoint's name: ``model.ckpt-2000`` and ``model.ckpt-2000-wer-0.1234`` → 2000."""
    name = Path(path).name
    m = _STEP_RE.match(name)
    if m is None:
        raise ValueError(f"{name!r} is not a checkpoint name: expected 'model.ckpt-<step>' or "
                         f"'model.ckpt-<step>-<metric>-<value>'")
    return int(m.group(1))


def list_checkpoints(run_dir) -> list[tuple[int, Path]]:
    """``[(step, path), ...]`` of the checkpoints in ``run_dir``, one per step, by step: the plain
    ``model.ckpt-<step>``, else the best-named ``model.ckpt-<step>-<metric>-<value>...`` (first by name).

    This code keeps the plain file beside its best copies; the original code removes it when it saves a step as
    best, so in its run dirs a best-named file is the only one of its step. Temp files are not listed; a missing
    directory gives an empty list.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = {}
    for p in sorted(run_dir.iterdir()):
        m = _STEP_RE.match(p.name)
        if m is not None and p.is_file():
            step = int(m.group(1))
            if step not in found or _PLAIN_RE.match(p.name):
                found[step] = p
    return sorted(found.items())


def latest_checkpoint(run_dir) -> Path | None:
    """The ``model.ckpt-<step>`` with the largest step in ``run_dir``, or None."""
    ckpts = list_checkpoints(run_dir)
    return ckpts[-1][1] if ckpts else None


def latest_usable_checkpoint(run_dir) -> Path | None:
    """The latest ``model.ckpt-<step>`` in ``run_dir`` that :func:`checkpoint_problem` finds nothing wrong with;
    each later one is skipped with a warning naming it and its problem. None when there is none."""
    for _, path in reversed(list_checkpoints(run_dir)):
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        logger.warning("checkpoint %s: %s; skipped, an earlier checkpoint is used", path, problem)
    return None


def resolve_checkpoint(path) -> Path:
    """A checkpoint file → itself; a run directory → its latest ``model.ckpt-<step>``; else FileNotFoundError."""
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir():
        latest = latest_checkpoint(path)
        if latest is None:
            raise FileNotFoundError(f"no checkpoint in run directory {path}: looked for files named "
                                    f"'{CKPT_PREFIX}<step>'")
        return latest
    raise FileNotFoundError(f"{path} does not exist: expected a checkpoint file or a run directory holding "
                            f"'{CKPT_PREFIX}<step>' files")


def teacher_snapshot(run_dir, student_step: int, cycle: int) -> Path:
    """The teacher checkpoint that guides a student at ``student_step`` (waypoint guidance).

    Among the teacher's checkpoints (``list_checkpoints``: an original-code run dir's best-named ones included)
    with ``step % cycle == 0``: the one at the smallest step strictly greater than ``student_step`` (the next
    waypoint ahead of the student), or the last one once the student is at or past it.
    """
    if cycle <= 0:
        raise ValueError(f"teacher snapshot cycle must be positive, got {cycle}")
    ckpts = list_checkpoints(run_dir)
    waypoints = [(step, p) for step, p in ckpts if step % cycle == 0]
    if not waypoints:
        have = ", ".join(p.name for _, p in ckpts) or "none"
        raise FileNotFoundError(f"no teacher checkpoint at a multiple of {cycle} steps in {run_dir} "
                                f"(checkpoints there: {have})")
    for step, p in waypoints:
        if step > student_step:
            return p
    return waypoints[-1][1]


# --- best checkpoints --------------------------------------------------------------------------------------


def metric_direction(metric: str) -> str | None:
    """'min' for wer / cer (also as a word of a longer name: dev/wer, val_cer) and any *loss*; 'max' for any
    *acc*; None (not tracked) otherwise."""
    name = metric.lower()
    words = re.split(r"[^a-z0-9]+", name)  # "dev/wer", "val_wer" → [..., "wer"]
    if "wer" in words or "cer" in words or "loss" in name:
        return "min"
    if "acc" in name:
        return "max"
    return None


class BestTracker:
    """The best value of each metric in ``<run_dir>/best_metrics.json`` (``{metric: [value, step]}``).

    For each metric that improves, :meth:`update` keeps a copy of the checkpoint named
    ``model.ckpt-<step>-<metric>-<value:.4f>`` (a hard link where the filesystem allows, else a copy) and
    removes that metric's previous best copy. Metrics with no known direction (see :func:`metric_direction`)
    and NaN values are ignored; ties do not count as improvements.
    """

    def __init__(self, run_dir):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / BEST_METRICS
        self.best: dict[str, list] = {}
        if self.path.is_file():
            try:
                loaded = json.loads(self.path.read_text())
            except json.JSONDecodeError as e:
                raise ValueError(f"{self.path}: not valid JSON ({e})") from e
            for metric, entry in loaded.items():
                if not (isinstance(entry, list) and len(entry) == 2):
                    raise ValueError(f"{self.path}: entry {metric!r} should be [value, step], got {entry!r}")
                self.best[metric] = [float(entry[0]), int(entry[1])]

    def is_better(self, metric: str, value: float) -> bool:
        direction = metric_direction(metric)
        if direction is None or math.isnan(value):
            return False
        if metric not in self.best:
            return True
        old = self.best[metric][0]
        return value < old if direction == "min" else value > old

    def update(self, metrics: dict, step: int, checkpoint_path) -> list[str]:
        """Record the metrics of the checkpoint at ``step``; return the names of those that improved."""
        checkpoint_path = Path(checkpoint_path)
        improved = [m for m, v in metrics.items() if self.is_better(m, float(v))]
        if not improved:
            return []
        if not checkpoint_path.is_file():
            raise FileNotFoundError(f"best checkpoint {checkpoint_path} for {', '.join(improved)} does not exist")
        for metric in improved:
            value = float(metrics[metric])
            self.best[metric] = [value, int(step)]
            copy = self.run_dir / f"{CKPT_PREFIX}{step}-{metric}-{value:.4f}"
            _link_or_copy(checkpoint_path, copy)
            self._remove_old_copies(metric, keep=copy)
        _atomic_write_json(self.path, self.best)
        return improved

    def _remove_old_copies(self, metric: str, keep: Path) -> None:
        pattern = re.compile(rf"^model\.ckpt-\d+-{re.escape(metric)}-(-?\d+\.\d+|-?inf|nan)$")
        for p in self.run_dir.iterdir():
            if p.name != keep.name and pattern.match(p.name):
                p.unlink()


def _link_or_copy(src: Path, dst: Path) -> None:
    """Make ``dst`` hold the content of ``src``: a hard link where possible, else an atomic copy."""
    if dst.exists() or dst.is_symlink():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        with open(src, "rb") as f_src:
            _atomic_write(dst, lambda f: shutil.copyfileobj(f_src, f))


def load_model_weights(path) -> dict:
    """The model state dict of the checkpoint at ``path`` in this code's key names: an original-code checkpoint's
    converted (models/original.py)."""
    from models import original

    state = load_checkpoint(path)
    return original.model_from_original(state["model"], path) if original.is_original_checkpoint(state) \
        else state["model"]
