"""CTC loss (negative log-likelihood per utterance) and its gradient with respect to the log-probabilities: Triton
kernels (``ctc_loss_triton``, the CUDA path; ``ctc.ctc_loss_ref`` is their reference).

Why: PyTorch's native CUDA CTC walks the 2L + 1 label states of a long utterance in serial blocks of 1024 threads
for every frame, which makes the loss a large part of a training step on long utterances (bench/NOTES.md, "CTC").
Here programs loop over the frames themselves: one per utterance when its states fit STATES_PER_PROGRAM, else
several per utterance, each holding a block of its states, in a wavefront over the multiprocessors.

What, per utterance b (T frames, labels l_1..l_L, lp[t, c] = log_probs[t, b, c], already log-softmaxed): the
extended labels l'(s), s = 0..S-1, S = 2L + 1, are blank on even s and l_{(s+1)/2} on odd s; a state may be entered
from two states back, skip(s), when s is odd, s >= 3 and l'(s) != l'(s - 2). In log space (lse: logsumexp):

    alpha[0, s] = lp[0, l'(s)] for s < 2, else -inf
    alpha[t, s] = lp[t, l'(s)] + lse(alpha[t-1, s], alpha[t-1, s-1], alpha[t-1, s-2] if skip(s) else -inf)
    nll         = -lse(alpha[T-1, S-1], alpha[T-1, S-2])
    beta[T-1, s] = lp[T-1, l'(s)] for s >= S - 2, else -inf                      (beta includes lp at t, as PyTorch's)
    beta[t, s]  = lp[t, l'(s)] + lse(beta[t+1, s], beta[t+1, s+1], beta[t+1, s+2] if skip(s+2) else -inf)
    gamma[t, s] = exp(alpha[t, s] + beta[t, s] + nll - lp[t, l'(s)])                 (occupancy of state s, in [0, 1])
    grad[t, b, c] = (exp(lp[t, c]) - sum_{s: l'(s) = c} gamma[t, s]) * grad_out[b]   for t < T, 0 beyond

which is PyTorch's convention (the gradient of the NLL through the log-probabilities, not through the logits). An
utterance too short for its labels has nll = inf and a zero gradient (PyTorch's is NaN there unless
zero_infinity=True, which returns 0 instead of inf; see tests/test_kernels_ctc.py); zero-length targets and
zero-length inputs give PyTorch's values (nll 0, or inf when there are labels).

How: the padded row of 2 * max_label + 1 states is cut into ``num_blocks`` blocks of ``states_per_block`` consecutive
states (``state_blocks``: one block up to STATES_PER_PROGRAM states, else the fewest blocks of at most that many, of
equal size), each block a program of BLOCK_S lanes (a thread a state, up to 32 warps; grid: batch * blocks programs).
``_ctc_alpha`` computes alpha in base 2 (lp * log2(e): exp2 and log2 are single GPU instructions) frame after frame and
stores every row in a (batch, frames, 2 * max_label + 1) fp32 buffer that backward needs anyway (PyTorch keeps log_alpha
too), while the row itself stays in registers: the next frame takes its neighbours one and two states over with
``tl.gather`` (through shared memory), not by reading the stored row back from global memory. A block's first two states
need the last two of the block before at the frame before, its "producer" (block c - 1; for beta, which runs backwards
in time and states, block c + 1): the only traffic between programs. Every RENORMALISE_EVERY frames a block shifts its
row so that its largest value is 0, the shift summed into the block's per-frame fp64 offset (alpha[t, s] = row[t, s] +
offset[block, t], offsets (batch, blocks, frames)): on long utterances alpha and beta reach ~1e5, and fp32 rounding of
numbers that large ruins the occupancies (native fp32 F.ctc_loss's gradient is far off its own float64 result there;
bench/NOTES.md, "CTC"). At every frame a block first moves its row and the producer's edge states onto the larger of
the two offsets (``_joined_with_producer``, in fp64; nothing moves when they are equal, as with one block): so the
states that carry the probability stay near 0 as a single row's would, and only much smaller ones lose digits. The nll
comes from states S - 1 and S - 2 of the last frame, in one block or two, each with its block's offset; the block that
holds S - 1 writes it. ``_ctc_beta_occupancy`` runs beta backwards the same way (its row in registers, its offset
running; each block stores its first two states and its offset per frame, (batch, blocks, frames, 2) and (batch,
blocks, frames), for the block before) and overwrites each alpha row in place with gamma, its block's alpha offset, the
beta offset and nll (fp64) meeting in one fp32 shift. Both kernels load what a frame reads from memory a frame ahead
(its log-probs; beta's alpha row; the producer's edge once it is known to be published), so that no load waits in the
chain of a frame's dependent steps. ``_ctc_grad`` (grid: frame tiles, vocab tiles, batch) sums gamma per class as a dot
with the states' one-hot classes (fp32 "ieee" dot: the training's --use_tf32 does not reach it) and writes the
gradient. A batch whose padded label count needs more than MAX_STATES states falls back to ``ctc_loss_ref``.

Synchronisation between the blocks of an utterance (none with one block): a per-(utterance, block) int32 progress flag
in global memory, zeroed before each launch, counts the frames the block has published (monotonic). Every PUBLISH_EVERY
frames (and at its last) a block publishes the frames it has stored: a barrier after all its threads stored them, then
one thread's release exchange of the flag at gpu scope; so a consumer trails its producer by up to PUBLISH_EVERY
frames. A consumer that needs frame t of its producer spins with one thread's acquire load of the producer's flag until
it counts past t (remembering the count: a consumer behind its producer polls nothing), a barrier hands that on to its
threads, which load the edge states and the offset with ``.cg`` (L2, past the multiprocessor's non-coherent L1); an
edge whose frame was already known published at an earlier barrier is loaded a frame ahead. Deadlock freedom: a
program takes its (utterance, block) from a ticket counter at its start, in the order that programs start, producers
first (alpha: block 0 first; beta: the last block first); so a program that waits can only wait for one that has
started, holds a multiprocessor and waits for none but its own producer, down to a block that waits for nothing: every
wait ends, whatever order the GPU starts programs in and however few fit at once. In Triton's interpreter (the CPU
tests) programs run one after another, so a producer has always finished; the tests force several tiny blocks there.

STATES_PER_PROGRAM and PUBLISH_EVERY are the fastest of bench/ctc_speed.py's sweeps (bench/NOTES.md, "CTC").
"""
import math

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice
from triton.runtime.interpreter import InterpretedFunction

from models.kernels.ctc import ctc_loss_ref

STATES_PER_PROGRAM = 256  # one program up to this many states of an utterance, else blocks of at most this many (>= 2)
MAX_STATES = 2 ** 30  # 2 * max_label + 1 at most (int32 state arithmetic); alpha's memory binds long before
RENORMALISE_EVERY = 16  # frames between shifts of alpha and beta to a largest value of 0 (see _renormalised)
PUBLISH_EVERY = 16  # frames between a block's releases of its progress to the block after it (see "Synchronisation")
GRAD_BLOCK_T, GRAD_BLOCK_K = 64, 64  # _ctc_grad's frames per program and states per step of its dot
LOG2E: tl.constexpr = tl.constexpr(math.log2(math.e))  # alpha and beta are kept in base 2
LN2: tl.constexpr = tl.constexpr(math.log(2.0))
# Integer arguments that change from batch to batch are not specialised: Triton would compile a kernel again the first
# time one of them is 1 or a multiple of 16, in the middle of a run (models/kernels/__init__.py)
LENGTH_ARGS = ("frames", "max_label", "states_per_block", "num_blocks", "stride_targets_b")


@triton.jit
def _state_classes(targets_row_ptr, state, num_labels, blank):
    """Class l'(s) of each state (int32; blank on even s and past the last state) and skip(s)."""
    is_label = (state % 2 == 1) & (state < 2 * num_labels + 1)
    label_index = (state - 1) // 2
    label = tl.load(targets_row_ptr + label_index, mask=is_label, other=blank).to(tl.int32)
    label_before = tl.load(targets_row_ptr + label_index - 1, mask=is_label & (state >= 3), other=blank).to(tl.int32)
    can_skip = is_label & (state >= 3) & (label != label_before)
    return tl.where(is_label, label, blank), can_skip


@triton.jit
def _logsumexp2_3(a, b, c, FAST_LOG2: tl.constexpr):
    """log2(2^a + 2^b + 2^c), elementwise; -inf where all three are (no NaN). Two exp2 and one log2 of a number in
    [1, 3]: FAST_LOG2 takes the GPU's lg2.approx for it (libdevice, which Triton's interpreter lacks) instead of
    the libdevice log2 that tl.log2 compiles to (a polynomial and a branch for special values)."""
    a_is_max = (a >= b) & (a >= c)
    b_is_max = (b >= c) & ~a_is_max
    largest = tl.where(a_is_max, a, tl.where(b_is_max, b, c))
    other_1 = tl.where(a_is_max, b, a)
    other_2 = tl.where(a_is_max | b_is_max, c, b)
    shift = tl.where(largest == -float("inf"), 0.0, largest)
    total = 1.0 + tl.exp2(other_1 - shift) + tl.exp2(other_2 - shift)
    if FAST_LOG2:
        log2_total = libdevice.fast_log2f(total)
    else:
        log2_total = tl.log2(total)
    return largest + log2_total


@triton.jit
def _claim_utterance_block(ticket_ptr, input_lengths_ptr, target_lengths_ptr, frames, max_label, num_blocks,
                           LAST_BLOCK_FIRST: tl.constexpr):
    """This program's utterance (int64: buffer offsets can pass 2^31) and block of states, from a ticket that one
    thread draws at the program's start: tickets go in the order programs start, an utterance's blocks in producer
    order (block 0 first, or the last block first), so a block's producer has started before it. Also the
    utterance's frames and labels, clamped to the padded sizes so that a wrong length cannot read out of bounds."""
    ticket = tl.atomic_add(ticket_ptr, 1, sem="relaxed")
    batch = (ticket // num_blocks).to(tl.int64)
    block = ticket % num_blocks
    if LAST_BLOCK_FIRST:
        block = num_blocks - 1 - block
    num_frames = tl.minimum(tl.load(input_lengths_ptr + batch), frames).to(tl.int32)
    num_labels = tl.minimum(tl.load(target_lengths_ptr + batch), max_label).to(tl.int32)
    return batch, block, num_frames, num_labels


@triton.jit
def _block_states(block, num_labels, max_label, states_per_block, BLOCK_S: tl.constexpr):
    """The states of an utterance's block: (num_states, row_width (the padded row, 2 * max_label + 1), the block's
    first state, lane (BLOCK_S,), state (BLOCK_S,) = first_state + lane, is_state: the lanes holding one)."""
    num_states = 2 * num_labels + 1
    first_state = block * states_per_block
    lane = tl.arange(0, BLOCK_S)
    state = first_state + lane
    is_state = (lane < states_per_block) & (state < num_states)
    return num_states, 2 * max_label + 1, first_state, lane, state, is_state


@triton.jit
def _wait_until(progress_ptr, ready, needed):
    """The producer's progress (frames it has published) once it is at least ``needed``: one thread's acquire loads
    of its flag, spinning; ``ready`` is the progress last seen, so a consumer behind its producer polls nothing.
    The caller's next barrier hands the acquire on to its threads."""
    while ready < needed:
        ready = tl.atomic_add(progress_ptr, 0, sem="acquire", scope="gpu")
    return ready


@triton.jit
def _producer_edge(near_ptr, far_ptr, offset_ptr, load):
    """The producer's edge states next to this block (near) and one further (far) and its offset, read from L2
    (``.cg``, past the multiprocessor's non-coherent L1) where ``load``, else -inf. Only once the frame is known
    published: after an acquire that saw it, and a barrier since."""
    near = tl.load(near_ptr, mask=load, other=-float("inf"), cache_modifier=".cg")
    far = tl.load(far_ptr, mask=load, other=-float("inf"), cache_modifier=".cg")
    offset = tl.load(offset_ptr, mask=load, other=-float("inf"), cache_modifier=".cg")
    return near, far, offset


@triton.jit
def _alpha_producer_edge(alpha_rows, producer_offsets, t, row_width, first_state, load):
    """What frame t of alpha needs from the producer: its states first_state - 1 and - 2 at frame t - 1, and its
    offset there."""
    near = alpha_rows + (t - 1).to(tl.int64) * row_width + first_state - 1
    return _producer_edge(near, near - 1, producer_offsets + t - 1, load)


@triton.jit
def _beta_producer_edge(producer_edges, producer_offsets, t, load):
    """What frame t of beta needs from the producer: its first two states at frame t + 1 (edges (frames, 2)), and
    its offset there."""
    near = producer_edges + 2 * (t + 1)
    return _producer_edge(near, near + 1, producer_offsets + t + 1, load)


@triton.jit
def _joined_with_producer(row, one_step, two_steps, offset, edge_near, edge_far, producer_offset,
                          steps_to_producer, two_steps_allowed):
    """A block's previous row and its neighbours one and two states towards the producer (all relative to offset,
    fp64), with the lanes next to the producer taking its edge states (edge_near next to the block, edge_far one
    further; relative to producer_offset, -inf without a producer), moved onto the larger of the two offsets."""
    joint_offset = tl.maximum(offset, producer_offset)
    own_shift = (offset - joint_offset).to(tl.float32)  # <= 0; exactly 0 without a producer
    edge_shift = (producer_offset - joint_offset).to(tl.float32)  # <= 0; -inf without a producer
    one_step = tl.where(steps_to_producer == 0, edge_near + edge_shift, one_step + own_shift)
    two_steps = tl.where(steps_to_producer == 0, edge_far + edge_shift,
                         tl.where(steps_to_producer == 1, edge_near + edge_shift, two_steps + own_shift))
    return row + own_shift, one_step, tl.where(two_steps_allowed, two_steps, -float("inf")), joint_offset


@triton.jit
def _renormalised(values, is_state, offset, t, EVERY: tl.constexpr):
    """values (BLOCK_S,) relative to offset (fp64): every EVERY frames shifted so that their largest is 0, the
    shift added to offset; so values stay small and keep fp32's digits over tens of thousands of frames."""
    if t % EVERY == 0:
        largest = tl.max(tl.where(is_state, values, -float("inf")), axis=0)
        largest = tl.where(largest == -float("inf"), 0.0, largest)
        values -= largest
        offset += largest.to(tl.float64)
    return values, offset


@triton.jit(do_not_specialize=LENGTH_ARGS)
def _ctc_alpha(log_probs_ptr, targets_ptr, input_lengths_ptr, target_lengths_ptr, alpha_ptr, alpha_offsets_ptr,
               nll_ptr, ticket_ptr, progress_ptr, frames, max_label, states_per_block, num_blocks, stride_lp_t,
               stride_lp_b, stride_lp_c, stride_targets_b, blank, BLOCK_S: tl.constexpr,
               RENORMALISE_EVERY: tl.constexpr, PUBLISH_EVERY: tl.constexpr, FAST_LOG2: tl.constexpr):
    """alpha rows of one block of one utterance's states (base 2, each relative to its block's offset for the
    frame) into alpha_ptr (batch, frames, 2 * max_label + 1), the offsets into alpha_offsets_ptr (batch, blocks,
    frames) fp64; the block holding the last state writes the nll (natural log) into nll_ptr (batch,) fp64.
    progress_ptr (batch, blocks) int32, ticket_ptr (1,) int32: zeros."""
    batch, block, num_frames, num_labels = _claim_utterance_block(ticket_ptr, input_lengths_ptr, target_lengths_ptr,
                                                                  frames, max_label, num_blocks, False)
    num_states, row_width, first_state, lane, state, is_state = _block_states(block, num_labels, max_label,
                                                                              states_per_block, BLOCK_S)
    state_class, can_skip = _state_classes(targets_ptr + batch * stride_targets_b, state, num_labels, blank)
    walked_frames = tl.where(first_state < num_states, num_frames, 0)  # none in a block past the last state
    has_producer = block > 0  # block - 1: states first_state - 2 and - 1 (states_per_block >= 2)
    has_consumer = first_state + states_per_block < num_states
    class_offset = state_class * stride_lp_c  # (BLOCK_S,) int32: fewer registers than a vector of pointers
    lp_rows = log_probs_ptr + batch * stride_lp_b
    alpha_rows = alpha_ptr + batch * frames * row_width  # rows of row_width, written up to num_states: the block
    #                                                      after reads its edge from them, the nll the last row
    utterance_block = batch * num_blocks + block
    offsets = alpha_offsets_ptr + utterance_block * frames  # (frames,) this block's
    producer_offsets = offsets - frames
    progress = progress_ptr + utterance_block
    producer_progress = progress - 1
    ready = tl.where(has_producer, 0, num_frames)  # the producer's frames known to be in memory
    lp = tl.load(lp_rows + class_offset, mask=walked_frames > 0, other=0.0) * LOG2E
    alpha = tl.where(is_state & (state < 2), lp, -float("inf"))  # (BLOCK_S,) frame 0
    offset = tl.zeros((), dtype=tl.float64)
    alpha, offset = _renormalised(alpha, is_state, offset, 0, RENORMALISE_EVERY)
    tl.store(alpha_rows + state, alpha, mask=is_state & (walked_frames > 0))
    tl.store(offsets, offset, mask=walked_frames > 0)
    t = 1
    lp_next = tl.load(lp_rows + stride_lp_t + class_offset, mask=walked_frames > 1, other=0.0)  # a frame ahead
    edge_known = has_producer & (ready >= t)  # whether near, far and producer_offset hold frame t's edge
    near, far, producer_offset = _alpha_producer_edge(alpha_rows, producer_offsets, t, row_width, first_state,
                                                      edge_known)
    while t < walked_frames:  # while, not range: the interpreter cannot take a loaded bound as a range's
        lp = lp_next * LOG2E
        lp_next = tl.load(lp_rows + (t + 1) * stride_lp_t + class_offset, mask=t + 1 < walked_frames, other=0.0)
        ready = _wait_until(producer_progress, ready, t)  # the producer's rows up to t - 1
        tl.debug_barrier()  # every lane's row t - 1 is stored, and the acquire is handed on to every thread
        if t % PUBLISH_EVERY == 0:
            tl.atomic_xchg(progress, t, mask=has_consumer, sem="release", scope="gpu")  # rows 0..t-1 published
        late_near, late_far, late_offset = _alpha_producer_edge(alpha_rows, producer_offsets, t, row_width,
                                                                first_state, has_producer & ~edge_known)
        near = tl.where(edge_known, near, late_near)
        far = tl.where(edge_known, far, late_far)
        producer_offset = tl.where(edge_known, producer_offset, late_offset)
        one_back = tl.gather(alpha, tl.maximum(lane - 1, 0), 0)  # lanes 0 and 1 take the producer's edge instead
        two_back = tl.gather(alpha, tl.maximum(lane - 2, 0), 0)
        alpha, one_back, two_back, offset = _joined_with_producer(alpha, one_back, two_back, offset, near, far,
                                                                  producer_offset, lane, can_skip)
        alpha = tl.where(is_state, lp + _logsumexp2_3(alpha, one_back, two_back, FAST_LOG2), -float("inf"))
        alpha, offset = _renormalised(alpha, is_state, offset, t, RENORMALISE_EVERY)
        tl.store(alpha_rows + t.to(tl.int64) * row_width + state, alpha, mask=is_state)
        tl.store(offsets + t, offset)
        t += 1
        edge_known = has_producer & (ready >= t)  # published before this frame's barrier: loaded a frame ahead
        near, far, producer_offset = _alpha_producer_edge(alpha_rows, producer_offsets, t, row_width, first_state,
                                                          edge_known)
    # the nll, from the last frame's states S - 1 (this block's, if it holds it) and S - 2 (the producer's if S - 1
    # is this block's first state)
    holds_last = block == (num_states - 1) // states_per_block
    second_in_producer = has_producer & (num_states - 2 < first_state)
    ready = _wait_until(producer_progress, ready, tl.where(holds_last & second_in_producer, walked_frames, 0))
    tl.debug_barrier()  # the last row is in memory for every lane (and the producer's)
    tl.atomic_xchg(progress, walked_frames, mask=has_consumer, sem="release", scope="gpu")
    last_row = alpha_rows + (walked_frames - 1).to(tl.int64) * row_width
    has_frames = holds_last & (walked_frames > 0)
    last = tl.load(last_row + num_states - 1, mask=has_frames, other=-float("inf"))
    second_last = tl.load(last_row + num_states - 2, mask=has_frames & (num_states >= 2), other=-float("inf"),
                          cache_modifier=".cg")
    second_offset = tl.load(producer_offsets + walked_frames - 1, mask=has_frames & second_in_producer, other=0.0,
                            cache_modifier=".cg")
    second_last += (tl.where(second_in_producer, second_offset, offset) - offset).to(tl.float32)
    log2_likelihood = _logsumexp2_3(last, second_last, -float("inf"), FAST_LOG2).to(tl.float64) + offset
    no_frames_nll = tl.where(num_labels == 0, 0.0, float("inf")).to(tl.float64)
    tl.store(nll_ptr + batch, tl.where(num_frames > 0, -log2_likelihood * LN2, no_frames_nll), mask=holds_last)


@triton.jit
def _alpha_at(alpha_rows, alpha_offsets, t, state, row_width, is_state, walks):
    """Frame t's alpha row at this block's states and its offset (fp64) where the block walks frame t (else -inf
    and 0). Loaded a frame ahead of its use, so that the read from memory overlaps a frame's chain of steps."""
    alpha = tl.load(alpha_rows + t.to(tl.int64) * row_width + state, mask=is_state & walks, other=-float("inf"))
    alpha_offset = tl.load(alpha_offsets + t, mask=walks, other=0.0)  # written where the block walked
    return alpha, alpha_offset


@triton.jit
def _store_beta_and_occupancy(beta, beta_offset, lp, nll, finite, alpha, alpha_offset, alpha_rows, edges, offsets,
                              t, state, lane, row_width, is_state, walks, has_consumer):
    """Frame t's first two beta states and its offset for the block before (edges (frames, 2), offsets (frames,), if
    it has one), and gamma over its alpha row (``_alpha_at``'s values; each lane overwrites only what it read);
    nothing unless the block walks frame t. The offsets and nll (base 2, fp64, ~1e5 on long utterances) meet in
    one fp32 shift of modest size."""
    tl.store(edges + 2 * t + lane, beta, mask=has_consumer & walks & (lane < 2))
    tl.store(offsets + t, beta_offset, mask=has_consumer & walks)
    shift = tl.where(finite, (alpha_offset + beta_offset + nll).to(tl.float32), 0.0)  # no inf - inf
    tl.store(alpha_rows + t.to(tl.int64) * row_width + state, tl.where(finite, tl.exp2(alpha + beta - lp + shift), 0.0),
             mask=is_state & walks)


@triton.jit(do_not_specialize=LENGTH_ARGS)
def _ctc_beta_occupancy(log_probs_ptr, targets_ptr, input_lengths_ptr, target_lengths_ptr, alpha_ptr,
                        alpha_offsets_ptr, nll_ptr, beta_edges_ptr, beta_offsets_ptr, ticket_ptr, progress_ptr, frames,
                        max_label, states_per_block, num_blocks, stride_lp_t, stride_lp_b, stride_lp_c,
                        stride_targets_b, blank, BLOCK_S: tl.constexpr, RENORMALISE_EVERY: tl.constexpr,
                        PUBLISH_EVERY: tl.constexpr, FAST_LOG2: tl.constexpr):
    """beta of one block of one utterance's states backwards in time (base 2, relative to a running offset; the
    block's first two states and offset per frame into beta_edges_ptr (batch, blocks, frames, 2) fp32 and
    beta_offsets_ptr (batch, blocks, frames) fp64, for the block before), and gamma over alpha_ptr's rows, in place
    (0 everywhere for an infinite nll). progress_ptr (batch, blocks) int32, ticket_ptr (1,) int32: zeros."""
    batch, block, num_frames, num_labels = _claim_utterance_block(ticket_ptr, input_lengths_ptr, target_lengths_ptr,
                                                                  frames, max_label, num_blocks, True)
    num_states, row_width, first_state, lane, state, is_state = _block_states(block, num_labels, max_label,
                                                                              states_per_block, BLOCK_S)
    targets_row = targets_ptr + batch * stride_targets_b
    state_class, _ = _state_classes(targets_row, state, num_labels, blank)
    _, skip_from_two_ahead = _state_classes(targets_row, state + 2, num_labels, blank)  # skip(s + 2)
    walking = first_state < num_states  # not a block past the last state
    has_producer = first_state + states_per_block < num_states  # block + 1: its first two states
    has_consumer = walking & (block > 0)
    nll = tl.load(nll_ptr + batch) * LOG2E  # base 2, fp64
    finite = nll < float("inf")
    class_offset = state_class * stride_lp_c  # (BLOCK_S,) int32
    lp_rows = log_probs_ptr + batch * stride_lp_b
    alpha_rows = alpha_ptr + batch * frames * row_width
    utterance_block = batch * num_blocks + block
    alpha_offsets = alpha_offsets_ptr + utterance_block * frames
    edges = beta_edges_ptr + utterance_block * frames * 2  # (frames, 2) this block's
    producer_edges = edges + frames * 2
    offsets = beta_offsets_ptr + utterance_block * frames  # (frames,) this block's
    producer_offsets = offsets + frames
    progress = progress_ptr + utterance_block
    producer_progress = progress + 1
    ready = tl.where(has_producer, 0, num_frames)  # the producer's frames known to be in memory, from the last
    t = tl.where(walking, tl.maximum(num_frames - 1, 0), 0)
    walks_last = walking & (num_frames > 0)
    lp = tl.load(lp_rows + t * stride_lp_t + class_offset, mask=walks_last, other=0.0) * LOG2E
    alpha, alpha_offset = _alpha_at(alpha_rows, alpha_offsets, t, state, row_width, is_state, walks_last)
    beta = tl.where(is_state & (state >= num_states - 2), lp, -float("inf"))  # (BLOCK_S,) the last frame
    beta_offset = tl.zeros((), dtype=tl.float64)
    beta, beta_offset = _renormalised(beta, is_state, beta_offset, 0, RENORMALISE_EVERY)
    _store_beta_and_occupancy(beta, beta_offset, lp, nll, finite, alpha, alpha_offset, alpha_rows, edges, offsets, t,
                              state, lane, row_width, is_state, walks_last, has_consumer)
    lp_next = tl.load(lp_rows + (t - 1) * stride_lp_t + class_offset, mask=t > 0, other=0.0)  # a frame ahead
    alpha_next, alpha_offset_next = _alpha_at(alpha_rows, alpha_offsets, t - 1, state, row_width, is_state, t > 0)
    edge_known = has_producer & (ready >= num_frames - t)  # whether near, far and producer_offset hold frame t - 1's
    near, far, producer_offset = _beta_producer_edge(producer_edges, producer_offsets, t - 1, edge_known)
    while t > 0:
        t -= 1
        lp = lp_next * LOG2E
        alpha, alpha_offset = alpha_next, alpha_offset_next
        lp_next = tl.load(lp_rows + (t - 1) * stride_lp_t + class_offset, mask=t > 0, other=0.0)
        alpha_next, alpha_offset_next = _alpha_at(alpha_rows, alpha_offsets, t - 1, state, row_width, is_state, t > 0)
        ready = _wait_until(producer_progress, ready, num_frames - 1 - t)  # the producer's frames T-1 .. t+1
        tl.debug_barrier()  # hands the acquire on to every thread (and orders the stores before a release)
        published = num_frames - 1 - t  # frames T-1 .. t+1; a consumer needs them all before its frame 0
        if (published % PUBLISH_EVERY == 0) | (t == 0):
            tl.atomic_xchg(progress, published, mask=has_consumer, sem="release", scope="gpu")
        late_near, late_far, late_offset = _beta_producer_edge(producer_edges, producer_offsets, t,
                                                               has_producer & ~edge_known)
        near = tl.where(edge_known, near, late_near)
        far = tl.where(edge_known, far, late_far)
        producer_offset = tl.where(edge_known, producer_offset, late_offset)
        one_ahead = tl.gather(beta, tl.minimum(lane + 1, BLOCK_S - 1), 0)  # the last lanes take the producer's
        two_ahead = tl.gather(beta, tl.minimum(lane + 2, BLOCK_S - 1), 0)  # edge instead
        beta, one_ahead, two_ahead, beta_offset = _joined_with_producer(
            beta, one_ahead, two_ahead, beta_offset, near, far, producer_offset, states_per_block - 1 - lane,
            skip_from_two_ahead)
        beta = tl.where(is_state, lp + _logsumexp2_3(beta, one_ahead, two_ahead, FAST_LOG2), -float("inf"))
        beta, beta_offset = _renormalised(beta, is_state, beta_offset, num_frames - 1 - t, RENORMALISE_EVERY)
        _store_beta_and_occupancy(beta, beta_offset, lp, nll, finite, alpha, alpha_offset, alpha_rows, edges,
                                  offsets, t, state, lane, row_width, is_state, walking, has_consumer)
        edge_known = has_producer & (ready >= num_frames - t)  # published before this frame's barrier: loaded
        near, far, producer_offset = _beta_producer_edge(producer_edges, producer_offsets, t - 1, edge_known)  # now


@triton.jit(do_not_specialize=("frames", "max_label", "stride_targets_b"))
def _ctc_grad(log_probs_ptr, targets_ptr, input_lengths_ptr, target_lengths_ptr, gamma_ptr, nll_ptr, grad_out_ptr,
              grad_ptr, frames, max_label, vocab, stride_lp_t, stride_lp_b, stride_lp_c, stride_targets_b, blank,
              BLOCK_T: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_V: tl.constexpr):
    """grad (frames, batch, vocab) contiguous at this program's frames and classes: exp(lp) minus gamma summed
    per class, times grad_out; 0 past the utterance's frames and for an infinite nll."""
    t = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)  # (BLOCK_T,)
    c = tl.program_id(1) * BLOCK_V + tl.arange(0, BLOCK_V)  # (BLOCK_V,)
    batch = tl.program_id(2).to(tl.int64)
    num_frames = tl.minimum(tl.load(input_lengths_ptr + batch), frames).to(tl.int32)
    num_labels = tl.minimum(tl.load(target_lengths_ptr + batch), max_label).to(tl.int32)
    num_states = 2 * num_labels + 1
    row_width = 2 * max_label + 1
    targets_row = targets_ptr + batch * stride_targets_b
    frame_ok = t < num_frames
    gamma_rows = gamma_ptr + batch * frames * row_width + t.to(tl.int64)[:, None] * row_width  # (BLOCK_T, 1)
    class_sums = tl.zeros((BLOCK_T, BLOCK_V), dtype=tl.float32)
    states_to_sum = tl.where(tl.program_id(0) * BLOCK_T < num_frames, num_states, 0)  # none past the frames
    first_state = 0
    while first_state < states_to_sum:
        state = first_state + tl.arange(0, BLOCK_K)  # (BLOCK_K,)
        is_state = state < num_states
        state_class, _ = _state_classes(targets_row, state, num_labels, blank)
        gamma = tl.load(gamma_rows + state[None, :], mask=frame_ok[:, None] & is_state[None, :], other=0.0)
        one_hot = ((state_class[:, None] == c[None, :]) & is_state[:, None]).to(tl.float32)  # (BLOCK_K, BLOCK_V)
        class_sums += tl.dot(gamma, one_hot, input_precision="ieee")
        first_state += BLOCK_K
    c_ok = c < vocab
    lp = tl.load(log_probs_ptr + t[:, None] * stride_lp_t + batch * stride_lp_b + c[None, :] * stride_lp_c,
                 mask=frame_ok[:, None] & c_ok[None, :], other=0.0)
    finite = tl.load(nll_ptr + batch) < float("inf")
    scale = tl.where(finite, tl.load(grad_out_ptr + batch), 0.0)
    grad = tl.where(frame_ok[:, None], (tl.exp(lp) - class_sums) * scale, 0.0)
    tl.store(grad_ptr + (t.to(tl.int64)[:, None] * tl.num_programs(2) + batch) * vocab + c[None, :], grad,
             mask=(t < frames)[:, None] & c_ok[None, :])


def interpreted() -> bool:
    """Whether the kernels run in Triton's interpreter (TRITON_INTERPRET=1 when they were defined)."""
    return isinstance(_ctc_alpha, InterpretedFunction)


def state_blocks(max_label: int) -> tuple:
    """(states per block, blocks per utterance) of the alpha / beta programs for a padded label count: one block of
    2 * max_label + 1 states up to STATES_PER_PROGRAM, else the fewest blocks of at most that many, of equal size
    (the last one possibly smaller)."""
    states = 2 * max_label + 1
    num_blocks = triton.cdiv(states, STATES_PER_PROGRAM)
    return triton.cdiv(states, num_blocks), num_blocks


def num_warps_for(block: int) -> int:
    """Warps of the alpha / beta programs of ``block`` lanes: a thread a state, up to 32 warps (1024 threads), the
    most being the fastest at every size (bench/NOTES.md, "CTC")."""
    return min(32, max(1, block // 32))


def grad_block_classes(vocab: int) -> int:
    """_ctc_grad's classes per program: the vocab padded to a power of two, 16 (tl.dot's least) to 64."""
    return min(64, max(16, triton.next_power_of_2(vocab)))


def _sync_buffers(batch: int, num_blocks: int, device) -> tuple:
    """A launch's ticket counter (1,) and progress flags (batch, blocks), int32 zeros (one allocation)."""
    sync = torch.zeros(1 + batch * num_blocks, dtype=torch.int32, device=device)
    return sync[:1], sync[1:]


class CTCLossTriton(torch.autograd.Function):
    """log_probs (frames, batch, vocab) fp32, targets (batch, max_label) int64 contiguous, input_lengths and
    target_lengths (batch,) -> (batch,) fp32 nll. Saves the (batch, frames, 2 * max_label + 1) fp32 alpha buffer
    (as much memory as native's log_alpha; native keeps a log_beta as large too), its (batch, blocks, frames) fp64
    offsets and the fp64 nll. Backward overwrites the alpha buffer with gamma: a second backward through the same
    graph is refused."""

    @staticmethod
    def forward(ctx, log_probs, targets, input_lengths, target_lengths, blank):
        frames, batch, vocab = log_probs.shape
        max_label = targets.shape[1]
        states_per_block, num_blocks = state_blocks(max_label)
        lanes = triton.next_power_of_2(states_per_block)
        device = log_probs.device
        alpha = torch.empty((batch, frames, 2 * max_label + 1), dtype=torch.float32, device=device)
        alpha_offsets = torch.empty((batch, num_blocks, frames), dtype=torch.float64, device=device)
        nll = torch.empty(batch, dtype=torch.float64, device=device)
        _ctc_alpha[(batch * num_blocks,)](log_probs, targets, input_lengths, target_lengths, alpha, alpha_offsets,
                                          nll, *_sync_buffers(batch, num_blocks, device), frames, max_label,
                                          states_per_block, num_blocks, *log_probs.stride(), targets.stride(0), blank,
                                          BLOCK_S=lanes, RENORMALISE_EVERY=RENORMALISE_EVERY,
                                          PUBLISH_EVERY=PUBLISH_EVERY, FAST_LOG2=not interpreted(),
                                          num_warps=num_warps_for(lanes))
        ctx.save_for_backward(log_probs, targets, input_lengths, target_lengths, alpha, alpha_offsets, nll)
        ctx.blank = blank
        ctx.blocks = states_per_block, num_blocks  # backward's blocks must be forward's (the offsets are per block)
        ctx.alpha_spent = False
        return nll.float()

    @staticmethod
    def backward(ctx, grad_out):
        if ctx.alpha_spent:
            raise RuntimeError("ctc_loss_triton: backward overwrites its saved alpha buffer; it runs once per graph")
        ctx.alpha_spent = True
        log_probs, targets, input_lengths, target_lengths, alpha, alpha_offsets, nll = ctx.saved_tensors
        frames, batch, vocab = log_probs.shape
        max_label = targets.shape[1]
        states_per_block, num_blocks = ctx.blocks
        lanes = triton.next_power_of_2(states_per_block)
        device = log_probs.device
        beta_edges = torch.empty((batch, num_blocks, frames, 2), dtype=torch.float32, device=device)
        beta_offsets = torch.empty((batch, num_blocks, frames), dtype=torch.float64, device=device)
        _ctc_beta_occupancy[(batch * num_blocks,)](log_probs, targets, input_lengths, target_lengths, alpha,
                                                   alpha_offsets, nll, beta_edges, beta_offsets,
                                                   *_sync_buffers(batch, num_blocks, device), frames, max_label,
                                                   states_per_block, num_blocks, *log_probs.stride(),
                                                   targets.stride(0), ctx.blank, BLOCK_S=lanes,
                                                   RENORMALISE_EVERY=RENORMALISE_EVERY, PUBLISH_EVERY=PUBLISH_EVERY,
                                                   FAST_LOG2=not interpreted(),
                                                   num_warps=num_warps_for(lanes))
        grad = torch.empty((frames, batch, vocab), dtype=torch.float32, device=device)
        block_classes = grad_block_classes(vocab)
        grid = (triton.cdiv(frames, GRAD_BLOCK_T), triton.cdiv(vocab, block_classes), batch)
        _ctc_grad[grid](log_probs, targets, input_lengths, target_lengths, alpha, nll,
                        grad_out.float().contiguous(), grad, frames, max_label, vocab, *log_probs.stride(),
                        targets.stride(0), ctx.blank, BLOCK_T=GRAD_BLOCK_T, BLOCK_K=GRAD_BLOCK_K,
                        BLOCK_V=block_classes)
        return grad, None, None, None, None


def ctc_loss_triton(log_probs: torch.Tensor, targets: torch.Tensor, input_lengths: torch.Tensor,
                    target_lengths: torch.Tensor, blank: int) -> torch.Tensor:
    """(batch,) fp32 CTC negative log-likelihoods, as ``F.ctc_loss(log_probs, targets, input_lengths,
    target_lengths, blank=blank, reduction="none", zero_infinity=False)`` (but a zero gradient, not NaN, for an
    infinite one). log_probs (frames, batch, vocab) log-softmaxed, any strides; targets (batch, max_label) padded
    (entries past target_lengths unread); lengths (batch,) integer tensors on log_probs' device, at most frames
    and max_label (larger ones are clamped: PyTorch raises). Falls back to ``ctc_loss_ref`` past MAX_STATES states
    (2 * max_label + 1)."""
    if 2 * targets.shape[1] + 1 > MAX_STATES:
        return ctc_loss_ref(log_probs, targets, input_lengths, target_lengths, blank)
    return CTCLossTriton.apply(log_probs.float(), targets.contiguous(), input_lengths.contiguous(),
                               target_lengths.contiguous(), blank)

