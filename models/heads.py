"""Classifier heads and every loss term, each *summed* over a micro-batch (the trainer divides by the step's n).

Scale conventions, the original code's: ``loss_normalize_type=sample`` divides the step's summed loss by the
total transcript characters of the utterances whose CTC loss is finite; ``utterance`` divides each utterance's CTC
loss by its label length and the step's sum by the number of finite utterances. Under `sample` a micro-batch's
distillation sums are first weighted by its characters over the step's valid frames (utils/training.py,
``distill_scale``); under `utterance` they are per-utterance means, summed.
"""
import torch
import torch.nn.functional as F
from torch import nn

from models.kernels.ctc import ctc_feasible, ctc_loss_ref

# Speaker ID has no transcript; the original fed a 3-character placeholder, so `sample` normalisation divided
# by 3 per utterance. The constant keeps that loss scale (and so the seed's learning rates) without a fake text.
NO_TRANSCRIPT_CHARS = 3


class ClassifierHeads(nn.Module):
    """One linear head per entry of ``classifier_num_targets`` on the mean-pooled last hidden state."""

    def __init__(self, hidden_size: int, num_targets: list[int]):
        super().__init__()
        self.heads = nn.ModuleList(nn.Linear(hidden_size, n) for n in num_targets)

    def forward(self, hidden: torch.Tensor, frame_mask: torch.Tensor) -> list[torch.Tensor]:
        """hidden (batch, frames, hidden), frame_mask (batch, frames) -> [(batch, targets_i) per head]."""
        weights = frame_mask.to(hidden.dtype)[..., None]  # (batch, frames, 1)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)  # (batch, hidden)
        return [head(pooled) for head in self.heads]


def ctc_loss_per_utterance(logits, output_lengths, labels, label_lengths, blank: int):
    """(batch,) summed CTC negative log-likelihoods, those of utterances too short for their labels (infinite)
    zeroed with a zero gradient; and the mask of the others (``ctc_feasible``).

    On CUDA the Triton kernels of models/kernels/ctc_triton.py (F.ctc_loss's values, faster, and far more accurate
    gradients on long utterances: bench/NOTES.md, "CTC"), else their reference ``ctc_loss_ref`` (F.ctc_loss)."""
    log_probs = F.log_softmax(logits.float(), dim=-1).transpose(0, 1)  # (frames, batch, vocab)
    targets = labels.clamp(min=0)  # -100 padding is never read past label_lengths
    if log_probs.is_cuda:
        from models.kernels.ctc_triton import ctc_loss_triton  # here: Triton is a GPU machine's package

        losses = ctc_loss_triton(log_probs, targets, output_lengths, label_lengths, blank=blank)  # (batch,)
    else:
        losses = ctc_loss_ref(log_probs, targets, output_lengths, label_lengths, blank)  # (batch,)
    feasible = ctc_feasible(output_lengths, targets, label_lengths)
    return torch.where(feasible, losses, torch.zeros_like(losses)), feasible


def classifier_loss(head_logits: list, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy summed over utterances, averaged over heads. targets (batch, heads)."""
    per_head = [F.cross_entropy(logits.float(), targets[:, i], reduction="sum") for i, logits in enumerate(head_logits)]
    return torch.stack(per_head).mean()


def _frame_reduce(per_frame: torch.Tensor, frame_mask: torch.Tensor, normalize_type: str) -> torch.Tensor:
    """(batch, frames) -> scalar: summed over valid frames (sample) or mean per utterance, summed (utterance)."""
    per_frame = per_frame * frame_mask
    if normalize_type == "sample":
        return per_frame.sum()
    return (per_frame.sum(1) / frame_mask.sum(1).clamp(min=1)).sum()


def layer_distill_loss(student_states, teacher_states, frame_mask, normalize_type: str) -> torch.Tensor:
    """Per-layer MSE between parameter-free layer-normed hidden states, averaged over hidden units and layers.

    student_states, teacher_states: lists of (batch, frames, hidden), layers 1..N; frame_mask (batch, frames).
    """
    per_layer = []
    for student, teacher in zip(student_states, teacher_states, strict=True):
        s = F.layer_norm(student.float(), student.shape[-1:])
        t = F.layer_norm(teacher.float(), teacher.shape[-1:])
        per_layer.append(_frame_reduce((s - t).square().mean(-1), frame_mask, normalize_type))
    return torch.stack(per_layer).mean()


def logits_distill_loss(student_logits, teacher_logits, frame_mask, normalize_type: str, temperature: float):
    """KL(softmax(t / T) || softmax(s / T)) summed over the vocabulary, no T^2 factor (as the original)."""
    s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    kl = (t.exp() * (t - s)).sum(-1)  # (batch, frames)
    return _frame_reduce(kl, frame_mask, normalize_type)


def normaliser(label_lengths, finite, normalize_type: str, has_transcripts: bool = True) -> torch.Tensor:
    """A micro-batch's share of the step's normaliser n: transcript characters (`sample`) or utterances
    (`utterance`) of the utterances whose CTC loss is finite. A corpus without transcripts (speaker ID) counts
    NO_TRANSCRIPT_CHARS per utterance under `sample`."""
    if normalize_type == "utterance":
        return finite.sum().float()
    if not has_transcripts:
        return finite.sum().float() * NO_TRANSCRIPT_CHARS
    return (label_lengths * finite).sum().float()
