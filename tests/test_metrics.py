"""utils.metrics: greedy CTC decode, WER / CER, accuracies, metrics.jsonl + offline wandb."""
import json
import time

import numpy as np
import pytest
import torch
from transformers import Wav2Vec2CTCTokenizer

from utils.metrics import (
    MetricsLogger,
    asr_metrics,
    classification_metrics,
    ctc_greedy_decode,
    wandb_api_key_configured,
    wandb_mode,
)

VOCAB = {"[PAD]": 0, "A": 1, "B": 2, "C": 3, "|": 4, "[UNK]": 5}
PAD, A, B, C, SEP, UNK = range(6)


@pytest.fixture
def tokenizer(tmp_path):
    (tmp_path / "vocab.json").write_text(json.dumps(VOCAB))
    return Wav2Vec2CTCTokenizer(str(tmp_path / "vocab.json"), unk_token="[UNK]", pad_token="[PAD]",
                                word_delimiter_token="|")


def one_hot_logits(batch_ids, vocab=len(VOCAB)):
    """(batch, frames, vocab) logits whose argmax is batch_ids, with some noise so argmax is really needed."""
    ids = torch.tensor(batch_ids)  # (batch, frames)
    logits = torch.randn(*ids.shape, vocab, generator=torch.Generator().manual_seed(0))  # (batch, frames, vocab)
    return logits + 10 * torch.nn.functional.one_hot(ids, vocab)


# --- decoding -----------------------------------------------------------------------------------------------


def test_decode_collapses_repeats_and_removes_blanks(tokenizer):
    logits = one_hot_logits([
        [A, A, PAD, A, SEP, B, B, PAD],  # a blank separates a real repeat: "AA B"
        [SEP, SEP, A, PAD, PAD, C, SEP, SEP],  # leading/trailing delimiters dropped; blanks join A and C
        [PAD, PAD, PAD, PAD, PAD, PAD, PAD, PAD],  # all blank → ""
    ])
    assert ctc_greedy_decode(logits, torch.tensor([8, 8, 8]), tokenizer) == ["AA B", "AC", ""]


def test_decode_ignores_frames_past_length(tokenizer):
    ids = [[A, B, SEP, C, C, C], [B, PAD, B, A, A, A]]
    logits = one_hot_logits(ids)
    assert ctc_greedy_decode(logits, torch.tensor([2, 3]), tokenizer) == ["AB", "BB"]
    assert ctc_greedy_decode(logits, [6, 0], tokenizer) == ["AB C", ""]  # a list works as well


def test_decode_rejects_bad_shapes(tokenizer):
    logits = one_hot_logits([[A, B]])
    with pytest.raises(ValueError, match=r"\[0, 2\]"):
        ctc_greedy_decode(logits, torch.tensor([3]), tokenizer)
    with pytest.raises(ValueError, match="batch of 1"):
        ctc_greedy_decode(logits, torch.tensor([2, 2]), tokenizer)
    with pytest.raises(ValueError, match=r"\(batch, frames, vocab\)"):
        ctc_greedy_decode(logits[0], torch.tensor([2]), tokenizer)


# --- WER / CER ----------------------------------------------------------------------------------------------


def test_asr_metrics_by_hand():
    # words: "a b c" vs "a x c" → 1 sub; "d e" vs "d" → 1 del; total 2 errors / 5 ref words
    # chars (spaces count): "a b c" (5) vs "a x c" → 1 sub; "d e" (3) vs "d" → 2 del; 3 / 8
    m = asr_metrics(["a b c", "d e"], ["a x c", "d"])
    assert m == {"wer": pytest.approx(2 / 5), "cer": pytest.approx(3 / 8)}
    assert asr_metrics(["same words"], ["same words"]) == {"wer": 0.0, "cer": 0.0}
    # an insertion can push WER past 1
    assert asr_metrics(["a"], ["b c"])["wer"] == pytest.approx(2.0)


def test_asr_metrics_empty_references():
    # empty ref: its hypothesis words are insertions, it adds nothing to the denominator
    m = asr_metrics(["", "a b"], ["x y", "a b"])
    assert m["wer"] == pytest.approx(2 / 2) and m["cer"] == pytest.approx(3 / 3)
    assert asr_metrics(["", "a b"], ["", "a b"]) == {"wer": 0.0, "cer": 0.0}
    # all references empty: the count of inserted words (characters)
    assert asr_metrics([""], [""]) == {"wer": 0.0, "cer": 0.0}
    assert asr_metrics(["", " "], ["a b", "c"]) == {"wer": 3.0, "cer": 4.0}
    # an empty hypothesis is all deletions
    assert asr_metrics(["a b"], [""])["wer"] == pytest.approx(1.0)


def test_asr_metrics_errors():
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        asr_metrics(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="at least one"):
        asr_metrics([], [])


# --- classification -----------------------------------------------------------------------------------------


def test_classification_metrics_by_hand():
    labels = torch.tensor([[0, 1], [2, 3], [4, 5], [6, 7]])  # (utterances, heads): scenario, action
    preds = torch.tensor([[0, 1], [2, 0], [9, 5], [9, 9]])
    # head accuracies: scenario 2/4, action 2/4 → clf_acc 0.5; both right only for utterance 0 → 1/4
    m = classification_metrics(preds, labels)
    assert m == {"clf_acc": pytest.approx(0.5), "intent_acc": pytest.approx(0.25)}
    # one head (speaker id), numpy input
    m = classification_metrics(np.array([3, 1, 2]), np.array([3, 1, 0]))
    assert m == {"clf_acc": pytest.approx(2 / 3), "intent_acc": pytest.approx(2 / 3)}


def test_classification_metrics_errors():
    with pytest.raises(ValueError, match=r"preds \(2, 2\) and labels \(2, 3\)"):
        classification_metrics(torch.zeros(2, 2), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="at least one"):
        classification_metrics(torch.zeros(0, 2), torch.zeros(0, 2))


# --- wandb mode ---------------------------------------------------------------------------------------------


@pytest.fixture
def clean_wandb_env(tmp_path, monkeypatch):
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL", "WANDB_DISABLED"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path / "netrc"


def test_wandb_mode_follows_key_and_env(clean_wandb_env, monkeypatch):
    netrc_file = clean_wandb_env
    assert not wandb_api_key_configured() and wandb_mode() == "offline"  # no key: never online, never prompts
    netrc_file.write_text("machine example.com login user password secret\n")
    assert wandb_mode() == "offline"
    netrc_file.write_text("machine api.wandb.ai login user password 0123456789abcdef\n")
    netrc_file.chmod(0o600)
    assert wandb_api_key_configured() and wandb_mode() == "online"
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert wandb_mode() == "offline"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode() == "disabled"
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.org")  # self-hosted: its host's entry counts
    assert wandb_mode() == "offline"
    monkeypatch.delenv("WANDB_BASE_URL")
    netrc_file.unlink()
    monkeypatch.setenv("WANDB_API_KEY", "0123456789abcdef")
    assert wandb_mode() == "online"


# --- logger -------------------------------------------------------------------------------------------------


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_logger_writes_jsonl_and_wandb_offline(clean_wandb_env, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb_home"))
    run_dir = tmp_path / "run"
    start = time.monotonic()

    logger = MetricsLogger(run_dir, "cald-test", "unit", config={"lr": 1e-4, "asr_use_mamba": True}, enabled=True)
    logger.log(1, {"train/loss": torch.tensor(2.5), "lr": np.float32(0.5)})
    # flushed per line: readable before close
    assert read_jsonl(run_dir / "metrics.jsonl") == [{"step": 1, "train/loss": 2.5, "lr": 0.5}]
    logger.log(2, {"dev/wer": 0.25})
    assert logger._wandb_run is not None and logger._wandb_run.settings.mode == "offline"
    run_id = (run_dir / "wandb_run_id").read_text().strip()
    logger.close()
    logger.close()  # idempotent

    # resume: same wandb run id, jsonl appended
    with MetricsLogger(run_dir, "cald-test", "unit", config={"lr": 2e-4}, enabled=True) as resumed:
        assert resumed._wandb_run.id == run_id
        resumed.log(3, {"dev/wer": 0.2})
    assert [r["step"] for r in read_jsonl(run_dir / "metrics.jsonl")] == [1, 2, 3]
    assert list((tmp_path / "wandb_home").glob(f"wandb/offline-run-*-{run_id}"))  # wandb wrote there, offline
    assert time.monotonic() - start < 60


def test_logger_disabled_rank_does_nothing(tmp_path):
    logger = MetricsLogger(tmp_path / "run", "p", "r", config={}, enabled=False)
    logger.log(1, {"loss": 1.0})
    logger.close()
    assert not (tmp_path / "run").exists()


def test_logger_wandb_disabled_still_writes_jsonl(clean_wandb_env, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    with MetricsLogger(tmp_path / "run", "p", "r", config={}, enabled=True) as logger:
        assert logger._wandb_run is None
        logger.log(5, {"clf_acc": 0.75})
    assert read_jsonl(tmp_path / "run" / "metrics.jsonl") == [{"step": 5, "clf_acc": 0.75}]
    assert not list((tmp_path / "run").glob("wandb*"))
