"""models/kernels/ctc_triton.py against PyTorch's native F.ctc_loss (reduction="none", zero_infinity=False): losses and
gradients with respect to the log-probs.

CPU: the kernels in Triton's interpreter (tests/conftest.py turns it on without CUDA) on tiny batches, against
F.ctc_loss on CPU, to 1e-4 of the largest value (fp32 either way; the interpreter's exp2 / log2 are numpy's); with
one program per utterance and, STATES_PER_PROGRAM set to a few states, with several (the interpreter runs programs
one after another, producers first: the hand-off of edge states and offsets is checked, its timing is not).
GPU (``pytest -m gpu``): realistic sizes, against F.ctc_loss (cudnn off) in float64: on long utterances the
log-likelihoods reach ~1e5 and native fp32's gradient loses its digits (bench/NOTES.md, "CTC"), while the kernels
renormalise alpha and beta; so both fp32 results are measured against
float64 and the kernels' error must be small and no more than twice native's.
"""
import pytest
import torch
import torch.nn.functional as F

from models.heads import ctc_loss_per_utterance
from models.kernels import ctc_triton
from models.kernels.ctc import ctc_feasible
from models.kernels.ctc_triton import ctc_loss_triton
from tests.conftest import relative_error


def native(log_probs, targets, input_lengths, target_lengths, blank):
    with torch.backends.cudnn.flags(enabled=False):
        return F.ctc_loss(log_probs, targets, input_lengths, target_lengths, blank=blank, reduction="none",
                          zero_infinity=False)


def loss_and_grad(ctc, log_probs, *args, grad_out=None):
    """(losses, d(sum of grad_out * losses) / d log_probs) of ``ctc``."""
    log_probs = log_probs.detach().requires_grad_()
    losses = ctc(log_probs, *args)
    weights = torch.ones_like(losses) if grad_out is None else grad_out
    return losses.detach(), torch.autograd.grad((losses * weights).sum(), log_probs)[0]


def random_log_probs(frames, batch, vocab, device="cpu", scale=1.0, seed=0):
    generator = torch.Generator(device=device).manual_seed(seed)
    logits = torch.randn(frames, batch, vocab, generator=generator, device=device) * scale
    return F.log_softmax(logits, dim=-1)  # (frames, batch, vocab)


def assert_matches_native(log_probs, targets, input_lengths, target_lengths, blank=0, tolerance=1e-4):
    grad_out = torch.linspace(0.5, 2.0, targets.shape[0], device=log_probs.device)  # each utterance's own scale
    args = (targets, input_lengths, target_lengths, blank)
    losses, grad = loss_and_grad(ctc_loss_triton, log_probs, *args, grad_out=grad_out)
    reference_losses, reference_grad = loss_and_grad(native, log_probs, *args, grad_out=grad_out)
    assert torch.isfinite(reference_losses).all()
    assert relative_error(losses, reference_losses) < tolerance
    assert relative_error(grad, reference_grad) < tolerance
    return losses, grad


def test_varied_lengths_in_one_batch_match_native():
    """Padded frames and labels of different lengths, including an utterance of no frames and no labels (loss 0)
    and one whose labels fill its frames exactly (one alignment)."""
    log_probs = random_log_probs(frames=14, batch=5, vocab=6, scale=2.0)
    targets = torch.tensor([[1, 2, 3, 4, 5], [3, 1, 4, 1, 5], [2, 3, 0, 0, 0], [5, 5, 5, 5, 5], [2, 3, 2, 3, 2]])
    input_lengths = torch.tensor([14, 9, 4, 0, 5])
    target_lengths = torch.tensor([5, 4, 2, 0, 5])
    losses, grad = assert_matches_native(log_probs, targets, input_lengths, target_lengths)
    assert losses[3] == 0
    assert (grad[9:, 1] == 0).all() and (grad[:, 3] == 0).all()  # nothing past an utterance's frames
    assert (grad[3, 2] != 0).any()  # the gradient is not trivially zero


def test_longer_utterances_through_several_renormalisations():
    """alpha and beta are shifted to a largest value of 0 every RENORMALISE_EVERY frames: 70 frames, 5 shifts."""
    log_probs = random_log_probs(frames=70, batch=2, vocab=5, scale=3.0, seed=5)
    targets = torch.randint(1, 5, (2, 20), generator=torch.Generator().manual_seed(5))
    assert_matches_native(log_probs, targets, torch.tensor([70, 53]), torch.tensor([20, 11]))


def test_repeated_labels_need_a_blank_between_them():
    """skip(s) is off between equal labels: [2, 2, 3, 3, 3] needs 5 + 3 = 8 frames; 7 cannot hold it (inf)."""
    log_probs = random_log_probs(frames=8, batch=3, vocab=5, seed=1)
    targets = torch.tensor([[2, 2, 3, 3, 3], [1, 2, 1, 2, 1], [4, 4, 0, 0, 0]])
    assert_matches_native(log_probs, targets, torch.tensor([8, 5, 6]), torch.tensor([5, 5, 2]))
    losses = ctc_loss_triton(log_probs, targets, torch.tensor([7, 4, 2]), torch.tensor([5, 5, 2]), blank=0)
    assert torch.isinf(losses).all()


def test_zero_length_targets():
    log_probs = random_log_probs(frames=6, batch=2, vocab=4, seed=2)
    no_labels = torch.zeros((2, 0), dtype=torch.long)  # max_label 0: one state, the blank
    assert_matches_native(log_probs, no_labels, torch.tensor([6, 3]), torch.tensor([0, 0]))
    some_labels = torch.tensor([[1, 2], [3, 3]])
    assert_matches_native(log_probs, some_labels, torch.tensor([6, 3]), torch.tensor([0, 2]))


def test_a_nonzero_blank_index():
    log_probs = random_log_probs(frames=10, batch=3, vocab=7, seed=3)
    targets = torch.tensor([[0, 1, 2, 5], [5, 5, 0, 0], [3, 0, 0, 0]])  # blank = 6; class 0 is a label here
    assert_matches_native(log_probs, targets, torch.tensor([10, 7, 3]), torch.tensor([4, 3, 1]), blank=6)


def test_infeasible_utterance_is_inf_with_a_zero_gradient():
    """The caller (ctc_loss_per_utterance) zeroes infinite losses with torch.where. Native CTC's gradient of an
    infinite loss is NaN, which torch.where's zero upstream gradient does not clear (0 * NaN); the kernels give 0
    there. Every other utterance's gradient is native's."""
    log_probs = random_log_probs(frames=6, batch=3, vocab=5, seed=4)
    targets = torch.tensor([[1, 2, 3], [1, 1, 2], [4, 0, 0]])
    args = (targets, torch.tensor([6, 3, 6]), torch.tensor([3, 3, 1]), 0)  # the second needs 4 frames

    def zeroed(ctc):
        def loss(*inputs):
            losses = ctc(*inputs)
            return torch.where(torch.isfinite(losses), losses, torch.zeros_like(losses))
        return loss

    assert torch.isinf(ctc_loss_triton(log_probs, *args)[1])
    losses, grad = loss_and_grad(zeroed(ctc_loss_triton), log_probs, *args)
    reference_losses, reference_grad = loss_and_grad(zeroed(native), log_probs, *args)
    assert torch.isfinite(grad).all() and (grad[:, 1] == 0).all()
    assert relative_error(losses, reference_losses) < 1e-6
    feasible = [0, 2]
    assert relative_error(grad[:, feasible], reference_grad[:, feasible]) < 1e-4


def test_feasibility_is_where_native_ctc_is_finite():
    """ctc_feasible (T >= L + repeats) against F.ctc_loss's own verdict, on random labels full of repeats."""
    generator = torch.Generator().manual_seed(6)
    targets = torch.randint(1, 3, (64, 6), generator=generator)  # two classes: many back-to-back repeats
    target_lengths = torch.randint(0, 7, (64,), generator=generator)
    input_lengths = torch.randint(0, 12, (64,), generator=generator)
    losses = native(random_log_probs(frames=12, batch=64, vocab=3, seed=6), targets, input_lengths, target_lengths, 0)
    feasible = ctc_feasible(input_lengths, targets, target_lengths)
    assert feasible.tolist() == torch.isfinite(losses).tolist()
    assert 10 < feasible.sum() < 54  # both kinds drawn


def test_an_infeasible_utterance_leaves_every_gradient_finite_on_cpu():
    """ctc_loss_per_utterance on CPU (F.ctc_loss): the utterance too short for its labels is left out, loss and
    gradient 0, and the other utterances keep native's gradient; the batch's gradient stays finite (with
    F.ctc_loss's zero_infinity=False it was NaN, and a training step holding such an utterance was skipped)."""
    logits = torch.randn(3, 8, 6, generator=torch.Generator().manual_seed(7)).requires_grad_()
    labels = torch.tensor([[1, 2, 3], [4, 4, 4], [5, -100, -100]])
    output_lengths, label_lengths = torch.tensor([8, 4, 6]), torch.tensor([3, 3, 1])  # [4, 4, 4] needs 5 frames
    losses, finite = ctc_loss_per_utterance(logits, output_lengths, labels, label_lengths, blank=0)
    grad = torch.autograd.grad(losses.sum(), logits)[0]
    assert finite.tolist() == [True, False, True] and losses[1] == 0
    assert torch.isfinite(grad).all() and (grad[1] == 0).all()
    log_probs = F.log_softmax(logits, dim=-1).transpose(0, 1)
    kept = [0, 2]
    reference = native(log_probs[:, kept], labels[kept].clamp(min=0), output_lengths[kept], label_lengths[kept], 0)
    torch.testing.assert_close(losses[kept], reference)
    torch.testing.assert_close(grad[kept], torch.autograd.grad(reference.sum(), logits)[0][kept])


def test_label_counts_past_max_states_fall_back_to_native_without_nan(monkeypatch):
    """More states than MAX_STATES: F.ctc_loss, still inf with a zero gradient where nothing fits."""
    monkeypatch.setattr(ctc_triton, "MAX_STATES", 4)  # 3 labels: 7 states
    log_probs = random_log_probs(frames=6, batch=2, vocab=5, seed=8)
    targets = torch.tensor([[1, 2, 3], [2, 2, 2]])
    args = (targets, torch.tensor([6, 4]), torch.tensor([3, 3]), 0)  # the second needs 5 frames
    losses, grad = loss_and_grad(ctc_loss_triton, log_probs, *args)
    assert torch.isinf(losses[1]) and torch.isfinite(grad).all() and (grad[:, 1] == 0).all()
    reference_losses, reference_grad = loss_and_grad(native, log_probs[:, :1], targets[:1], args[1][:1],
                                                     args[2][:1], 0)
    torch.testing.assert_close(losses[:1], reference_losses)
    torch.testing.assert_close(grad[:, :1], reference_grad)


def test_a_second_backward_is_refused():
    """Backward overwrites the saved alpha rows with the occupancies."""
    log_probs = random_log_probs(frames=4, batch=1, vocab=3).requires_grad_()
    losses = ctc_loss_triton(log_probs, torch.tensor([[1]]), torch.tensor([4]), torch.tensor([1]), blank=0)
    losses.sum().backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="runs once"):
        losses.sum().backward()


@pytest.fixture
def states_per_program(monkeypatch):
    """Sets ctc_triton.STATES_PER_PROGRAM for the test, so that tiny label counts take several programs, each a
    block of an utterance's states handing its edge states on to the next (in the interpreter the programs run one
    after another, producers first: the blocks' hand-off runs in full, its timing does not)."""
    def set_to(states):
        monkeypatch.setattr(ctc_triton, "STATES_PER_PROGRAM", states)
    return set_to


@pytest.mark.parametrize("most_states, blocks", [(4, (4, 5)), (5, (5, 4)), (9, (9, 2))])
def test_states_split_over_several_programs_match_native(states_per_program, most_states, blocks):
    """17 states (8 labels) in 5 blocks of 4 (every block starts at a blank), 4 of 5 (odd and even starts) or 2 of
    9. Labels repeated across a boundary (skip(s) off there) and not; utterances of fewer states than one block,
    or of no labels or no frames (blocks past their states walk no frames); last states S - 1 and S - 2 in two
    blocks (the fifth utterance with blocks of 5: S - 1 = 10; the sixth with blocks of 4: S - 1 = 4)."""
    states_per_program(most_states)
    assert ctc_triton.state_blocks(8) == blocks
    log_probs = random_log_probs(frames=20, batch=7, vocab=6, scale=2.0, seed=9)
    targets = torch.tensor([[1, 2, 2, 3, 3, 1, 4, 4], [1, 2, 3, 4, 1, 2, 3, 4], [3, 0, 0, 0, 0, 0, 0, 0],
                            [0] * 8, [2, 2, 2, 1, 1, 0, 0, 0], [4, 4, 0, 0, 0, 0, 0, 0], [0] * 8])
    input_lengths = torch.tensor([20, 16, 7, 0, 11, 3, 5])  # the sixth: one alignment ([4, 4] needs 3 frames)
    target_lengths = torch.tensor([8, 8, 1, 0, 5, 2, 0])
    losses, grad = assert_matches_native(log_probs, targets, input_lengths, target_lengths)
    assert losses[3] == 0 and (grad[:, 3] == 0).all() and (grad[16:, 1] == 0).all()


@pytest.fixture
def publish_every(monkeypatch):
    """Sets ctc_triton.PUBLISH_EVERY (frames between a block's releases of its progress) for the test."""
    def set_to(frames):
        monkeypatch.setattr(ctc_triton, "PUBLISH_EVERY", frames)
    return set_to


@pytest.mark.parametrize("frames_between", [3, 100])
def test_progress_published_every_few_frames_matches_native(states_per_program, publish_every, frames_between):
    """Blocks of 4 states releasing their progress every 3 frames, or only at their last (20 frames and fewer):
    a consumer's waits are for counts its producer publishes, its last wait included."""
    states_per_program(4)
    publish_every(frames_between)
    log_probs = random_log_probs(frames=20, batch=3, vocab=6, scale=2.0, seed=4)
    targets = torch.tensor([[1, 2, 2, 3, 3, 1, 4, 4], [1, 2, 3, 4, 1, 2, 0, 0], [3, 0, 0, 0, 0, 0, 0, 0]])
    assert_matches_native(log_probs, targets, torch.tensor([20, 17, 7]), torch.tensor([8, 6, 1]))


@pytest.mark.parametrize("most_states", [10, 16])
def test_several_programs_through_several_renormalisations(states_per_program, most_states):
    """70 frames, 41 states in 5 blocks of 9 (starts odd and even) or 3 of 14: each block renormalises on its own,
    its offsets apart from its neighbours' (alpha and beta are moved onto the larger of two offsets at every
    hand-off)."""
    states_per_program(most_states)
    assert ctc_triton.state_blocks(20)[1] == {10: 5, 16: 3}[most_states]
    log_probs = random_log_probs(frames=70, batch=2, vocab=5, scale=3.0, seed=5)
    targets = torch.randint(1, 5, (2, 20), generator=torch.Generator().manual_seed(5))
    assert_matches_native(log_probs, targets, torch.tensor([70, 53]), torch.tensor([20, 11]))


def test_an_infeasible_utterance_over_several_programs_is_inf_with_a_zero_gradient(states_per_program):
    """13 states in 4 blocks of 4: the second utterance needs 6 + 3 = 9 frames and has 8."""
    states_per_program(4)
    assert ctc_triton.state_blocks(6) == (4, 4)
    log_probs = random_log_probs(frames=10, batch=2, vocab=6, seed=10)
    targets = torch.tensor([[1, 2, 3, 4, 5, 1], [2, 2, 3, 3, 4, 4]])
    args = (targets, torch.tensor([10, 8]), torch.tensor([6, 6]), 0)
    losses, grad = loss_and_grad(ctc_loss_triton, log_probs, *args)
    assert torch.isinf(losses[1]) and torch.isfinite(grad).all() and (grad[:, 1] == 0).all()
    reference_losses, reference_grad = loss_and_grad(native, log_probs[:, :1], targets[:1], args[1][:1],
                                                     args[2][:1], 0)
    assert relative_error(losses[:1], reference_losses) < 1e-4
    assert relative_error(grad[:, :1], reference_grad) < 1e-4


def float64_errors(log_probs, targets, input_lengths, target_lengths):
    """Relative errors from the float64 native result: {name: (loss error, grad error)} of triton and native
    fp32."""
    args = (targets, input_lengths, target_lengths, 0)
    exact_losses, exact_grad = loss_and_grad(native, log_probs.double(), *args)
    errors = {}
    for name, ctc in (("triton", ctc_loss_triton), ("native", native)):
        losses, grad = loss_and_grad(ctc, log_probs, *args)
        errors[name] = (relative_error(losses, exact_losses), relative_error(grad, exact_grad))
    return errors


def sixty_second_batch():
    """4 utterances of up to 60 s (3000 frames, 720 labels at most), vocab 32, padded: float64_errors' arguments."""
    log_probs = random_log_probs(frames=3000, batch=4, vocab=32, device="cuda", scale=3.0)
    targets = torch.randint(1, 32, (4, 720), device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    targets[1, 100:200] = 7  # a long run of one label: skip(s) off along it
    input_lengths = torch.tensor([3000, 2500, 1200, 3000], device="cuda")
    target_lengths = torch.tensor([720, 600, 250, 0], device="cuda")
    return log_probs, targets, input_lengths, target_lengths


@pytest.mark.gpu
def test_sixty_second_batch_matches_native_on_gpu():
    """4 utterances of up to 60 s (3000 frames, 720 labels at most: 1441 states, 3 blocks of 481), vocab 32."""
    errors = float64_errors(*sixty_second_batch())
    assert errors["triton"][0] < 1e-5, errors
    assert errors["triton"][1] < min(5e-3, max(2 * errors["native"][1], 1e-4)), errors  # 5.9e-4 seen


@pytest.mark.gpu
@pytest.mark.parametrize("frames_between", [1, 8])
def test_sixty_second_batch_over_several_programs_matches_native_on_gpu(states_per_program, publish_every,
                                                                          frames_between):
    """The same batch, its 1441 states in 6 blocks of 241 (24 programs at once, the third utterance's 501 states in
    3 of them, the fourth's 1 in one): the blocks' hand-off through flags on the GPU, released every frame or every
    8."""
    states_per_program(256)
    publish_every(frames_between)
    assert ctc_triton.state_blocks(720) == (241, 6)
    errors = float64_errors(*sixty_second_batch())
    assert errors["triton"][0] < 1e-5, errors
    assert errors["triton"][1] < min(5e-3, max(2 * errors["native"][1], 1e-4)), errors


@pytest.mark.gpu
def test_six_hundred_seconds_match_native_on_gpu():
    """One 600-s utterance: 30000 frames, 7200 labels, vocab 32: 14401 states, in blocks of STATES_PER_PROGRAM at
    most (57 of 253 states at 256; the 0.044 below was one program of 16384 lanes; 8 blocks of 1801 and 29 of 497 passed
    too)."""
    log_probs = random_log_probs(frames=30000, batch=1, vocab=32, device="cuda", scale=3.0)
    targets = torch.randint(1, 32, (1, 7200), device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    lengths = torch.tensor([30000], device="cuda"), torch.tensor([7200], device="cuda")
    errors = float64_errors(log_probs, targets, *lengths)
    assert errors["triton"][0] < 1e-5, errors
    assert errors["triton"][1] < min(0.15, 2 * errors["native"][1]), errors  # 0.044 seen, native's 4.4


@pytest.mark.gpu
def test_ctc_loss_per_utterance_on_gpu_keeps_its_values():
    """The caller's dispatch: the same losses and finite mask as native, and native's gradient where finite."""
    logits = torch.randn(3, 50, 12, device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    labels = torch.tensor([[1, 2, 3, 4], [5, -100, -100, -100], [6, 6, 6, 6]], device="cuda")
    output_lengths = torch.tensor([50, 40, 5], device="cuda")  # the third cannot hold 4 repeated labels
    label_lengths = torch.tensor([4, 1, 4], device="cuda")
    logits = logits.requires_grad_()
    losses, finite = ctc_loss_per_utterance(logits, output_lengths, labels, label_lengths, blank=0)
    grad = torch.autograd.grad(losses.sum(), logits)[0]
    log_probs = F.log_softmax(logits.float(), dim=-1).transpose(0, 1)
    reference = native(log_probs, labels.clamp(min=0), output_lengths, label_lengths, 0)
    reference_grad = torch.autograd.grad(reference[:2].sum(), logits)[0]
    assert finite.tolist() == [True, True, False] and losses[2] == 0
    assert relative_error(losses[:2], reference[:2]) < 1e-5
    assert torch.isfinite(grad).all() and (grad[2] == 0).all()
    assert relative_error(grad[:2], reference_grad[:2]) < 1e-4
