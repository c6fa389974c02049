"""The CTC loss in PyTorch: the reference of the Triton kernels (``ctc_triton.py``) and the path off CUDA."""
import torch
import torch.nn.functional as F


def ctc_feasible(output_lengths, labels, label_lengths) -> torch.Tensor:
    """(batch,) bool: whether an alignment of the labels fits the frames: T >= L + the labels repeated back to
    back (two equal labels in a row need a blank between them). Where none fits, the CTC loss is infinite."""
    position = torch.arange(1, labels.shape[1], device=labels.device)  # (max_label - 1,)
    repeats = ((labels[:, 1:] == labels[:, :-1]) & (position < label_lengths[:, None])).sum(1)  # (batch,)
    return output_lengths >= label_lengths + repeats


def ctc_loss_ref(log_probs: torch.Tensor, targets: torch.Tensor, input_lengths: torch.Tensor,
                 target_lengths: torch.Tensor, blank: int) -> torch.Tensor:
    """The reference (and the path off CUDA): ``ctc_loss_triton``'s values and gradients through ``F.ctc_loss``
    with cudnn off (its length limits differ: one behaviour everywhere). zero_infinity=True gives an infeasible
    utterance 0 and a zero gradient (without it the gradient is NaN); its loss is set back to inf, with a zero
    gradient (masked_fill's)."""
    with torch.backends.cudnn.flags(enabled=False):
        nll = F.ctc_loss(log_probs, targets, input_lengths, target_lengths, blank=blank, reduction="none",
                         zero_infinity=True)  # (batch,)
    return nll.masked_fill(~ctc_feasible(input_lengths, targets, target_lengths), float("inf"))
