"""Metrics: greedy CTC decoding, WER / CER (jiwer), classification accuracies, metrics.jsonl + wandb.

    hyps = ctc_greedy_decode(logits, output_lengths, tokenizer)      # list[str]
    asr_metrics(refs, hyps)                                          # {"wer": ..., "cer": ...}
    classification_metrics(preds, labels)                            # {"clf_acc": ..., "intent_acc": ...}

    logger = MetricsLogger(run_dir, "cald", "std-tedlium", config=hparams.to_dict(), enabled=is_main_process)
    logger.log(step, {"train/loss": 1.23, "lr": 1e-4})                # → run_dir/metrics.jsonl and wandb
    logger.keep_rows(lambda row: row["step"] <= 2000)                 # a resume from step 2000: the rest goes
    logger.close()

wandb runs online only where an API key is configured (``WANDB_API_KEY`` or a netrc entry for the wandb host),
offline otherwise, and not at all with ``WANDB_MODE=disabled``; it never prompts. ``metrics.jsonl`` is written
whatever wandb does, and is what plots are drawn from.
"""
import json
import logging
import netrc
import os
import secrets
import string
from pathlib import Path
from urllib.parse import urlparse

import jiwer
import numpy as np
import torch

from utils.checkpoint import atomic_write_text

logger = logging.getLogger(__name__)

METRICS_JSONL = "metrics.jsonl"
WANDB_ID_FILE = "wandb_run_id"  # in the run dir: a resumed run logs into the same wandb run


# --- ASR ---------------------------------------------------------------------------------------------------


def ctc_greedy_decode(logits: torch.Tensor, output_lengths, tokenizer) -> list[str]:
    """Best-path CTC decoding: argmax per frame, frames past each utterance's length dropped, then the
    Wav2Vec2CTCTokenizer's ``batch_decode`` (collapses repeats, removes the pad / blank token, ``|`` → space).

    logits: (batch, frames, vocab); output_lengths: (batch,) valid frames per utterance.
    """
    if logits.dim() != 3:
        raise ValueError(f"logits should be (batch, frames, vocab), got shape {tuple(logits.shape)}")
    batch, frames, _ = logits.shape
    lengths = torch.as_tensor(output_lengths).reshape(-1).tolist()
    if len(lengths) != batch:
        raise ValueError(f"{len(lengths)} output lengths for a batch of {batch}")
    if any(n < 0 or n > frames for n in lengths):
        raise ValueError(f"output lengths {lengths} must lie in [0, {frames}] (the logits' frames)")
    ids = logits.argmax(dim=-1).cpu()  # (batch, frames)
    return tokenizer.batch_decode([ids[b, : int(n)].tolist() for b, n in enumerate(lengths)])


def asr_metrics(refs: list[str], hyps: list[str]) -> dict[str, float]:
    """Corpus-level ``{"wer", "cer"}`` with jiwer's default transforms (strip, split on whitespace).

    Errors are summed over all utterances and divided by the total reference words (characters). An empty
    reference does not crash: its hypothesis words count as insertions and it adds nothing to the
    denominator. If every reference is empty, jiwer's convention applies: the result is the number of
    inserted words (characters), so 0.0 when the hypotheses are empty too.
    """
    refs, hyps = list(refs), list(hyps)
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    if not refs:
        raise ValueError("asr_metrics needs at least one reference / hypothesis pair")
    return {"wer": float(jiwer.wer(refs, hyps)), "cer": float(jiwer.cer(refs, hyps))}


# --- classification ----------------------------------------------------------------------------------------


def classification_metrics(preds, labels) -> dict[str, float]:
    """Accuracies of classifier heads; preds and labels are (utterances, heads) class ids ((N,) = one head).

    clf_acc: mean over every utterance x head pair (for SLURP, the mean of scenario and action accuracy);
    intent_acc: fraction of utterances with every head right (for SLURP, scenario and action = intent).
    """
    preds, labels = torch.as_tensor(preds), torch.as_tensor(labels)
    if preds.dim() == 1:
        preds = preds.unsqueeze(1)  # (N, 1)
    if labels.dim() == 1:
        labels = labels.unsqueeze(1)
    if preds.shape != labels.shape or preds.dim() != 2:
        raise ValueError(f"preds {tuple(preds.shape)} and labels {tuple(labels.shape)} should both be "
                         f"(utterances, heads)")
    if preds.shape[0] == 0:
        raise ValueError("classification_metrics needs at least one utterance")
    correct = preds == labels  # (N, heads)
    return {"clf_acc": correct.float().mean().item(), "intent_acc": correct.all(dim=1).float().mean().item()}


# --- logging -----------------------------------------------------------------------------------------------


def read_rows(path) -> list[dict]:
    """The rows of a metrics.jsonl (none if it does not exist); a line that is not JSON, such as one torn by a
    killed write, is left out."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def wandb_api_key_configured() -> bool:
    """True when ``WANDB_API_KEY`` is set or the netrc file has an entry for the wandb API host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname or "api.wandb.ai"
    path = os.environ.get("NETRC") or os.path.join(os.path.expanduser("~"), ".netrc")
    try:
        entry = netrc.netrc(path).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(entry and entry[2])


def wandb_mode() -> str:
    """"disabled" with WANDB_MODE=disabled; "offline" with WANDB_MODE=offline or no API key; else "online"."""
    env = os.environ.get("WANDB_MODE", "").strip().lower()
    if env == "disabled":
        return "disabled"
    if env in ("offline", "dryrun"):
        return "offline"
    return "online" if wandb_api_key_configured() else "offline"


def _plain(value):
    """A JSON-friendly version of a logged value (0-dim tensors and numpy scalars → python numbers)."""
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return value


class MetricsLogger:
    """Appends ``{"step": step, **values}`` lines to ``<run_dir>/metrics.jsonl`` and logs them to wandb.

    The wandb run id is kept in ``<run_dir>/wandb_run_id`` and the run is opened with ``resume="allow"``, so
    a resumed training run continues the same wandb run. A wandb failure (import, init, log) is logged as a
    warning and the run goes on with metrics.jsonl alone. ``enabled=False`` (non-zero ranks) does nothing.
    """

    def __init__(self, run_dir, project: str, run_name: str, config: dict, enabled: bool = True):
        self.enabled = enabled
        self.run_dir = Path(run_dir)
        self._file = None
        self._wandb_run = None
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._file = open(self.run_dir / METRICS_JSONL, "a", encoding="utf-8")
        mode = wandb_mode()
        if mode != "disabled":
            self._wandb_run = self._init_wandb(project, run_name, config, mode)

    def _run_id(self) -> str:
        path = self.run_dir / WANDB_ID_FILE
        if path.is_file() and path.read_text().strip():
            return path.read_text().strip()
        run_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))
        path.write_text(run_id + "\n")
        return run_id

    def _init_wandb(self, project, run_name, config, mode):
        try:
            import wandb
        except ImportError:
            logger.warning("wandb is not installed: metrics go to %s only", self.run_dir / METRICS_JSONL)
            return None
        run_id = self._run_id()
        for attempt in (mode, "offline") if mode == "online" else (mode,):
            try:
                run = wandb.init(
                    project=project,
                    name=run_name,
                    id=run_id,
                    resume="allow",
                    config=config,
                    allow_val_change=True,
                    dir=os.environ.get("WANDB_DIR") or str(self.run_dir),
                    mode=attempt,
                    reinit="create_new",  # each logger owns its run; no global state shared with others
                    settings=wandb.Settings(init_timeout=30, console="off", silent=True),
                )
                logger.info("wandb run %s (%s) in %s", run_id, attempt, run.dir)
                return run
            except Exception as e:  # noqa: BLE001 - wandb must never stop training
                logger.warning("wandb init (%s) failed: %s", attempt, e)
        logger.warning("wandb is off for this run: metrics go to %s only", self.run_dir / METRICS_JSONL)
        return None

    def keep_rows(self, keep) -> int:
        """Rewrite metrics.jsonl atomically with only the rows ``keep(row)`` accepts (lines that are not JSON go
        too); return how many lines went."""
        if not self.enabled:
            return 0
        path = self.run_dir / METRICS_JSONL
        self._file.close()
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        kept = [json.dumps(row) for row in read_rows(path) if keep(row)]
        if len(kept) < len(lines):
            atomic_write_text(path, "".join(line + "\n" for line in kept))
        self._file = open(path, "a", encoding="utf-8")
        return len(lines) - len(kept)

    def log(self, step: int, values: dict) -> None:
        if not self.enabled:
            return
        values = {k: _plain(v) for k, v in values.items()}
        self._file.write(json.dumps({"step": int(step), **values}) + "\n")
        self._file.flush()
        if self._wandb_run is not None:
            try:
                self._wandb_run.log(values, step=int(step))
            except Exception as e:  # noqa: BLE001
                logger.warning("wandb log at step %d failed: %s", step, e)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._wandb_run is not None:
            try:
                self._wandb_run.finish()
            except Exception as e:  # noqa: BLE001
                logger.warning("wandb finish failed: %s", e)
            self._wandb_run = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


__all__ = [
    "ctc_greedy_decode", "asr_metrics", "classification_metrics", "MetricsLogger", "read_rows", "wandb_mode",
    "wandb_api_key_configured",
]
