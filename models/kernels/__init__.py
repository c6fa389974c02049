"""The fast paths of the model, each beside its reference; nothing here imports the modelling code above it.

    backend.py            which scan, conv and norm the BiMamba2 mixer runs and when it replays CUDA graphs,
                          chosen once from the hparam mamba_backend (``mixer_kernels``)
    ssd.py                the SSD scan in PyTorch: ``ssd_ref`` (the sequential recurrence, the specification) and
                          ``ssd_chunked`` (the torch backend's); mamba_ssm's Triton scan is the CUDA one
    scan_graphs.py        mamba_ssm's scan replayed as CUDA graphs
    conv.py               the mixer's causal conv + SiLU in PyTorch (references)      conv_triton.py: Triton kernels
    gated_norm.py         the mixer's gated RMSNorm in PyTorch (references)           gated_norm_triton.py
    ctc.py                the CTC loss through F.ctc_loss (reference, CPU path)       ctc_triton.py
    front_end.py          the layer-norm CNN front end on channels-last activations   norm_gelu_triton.py
    graphs.py             CUDA graphs per padded input shape (``PaddedGraphs``)
    mixer_graphs.py       a whole mixer replayed as CUDA graphs, its backward recomputing it
    layer_graphs.py       a stack of encoder layers replayed as CUDA graphs (the distillation teacher's without
                          gradients, the student's in training)

A ``*_triton.py`` file imports Triton at the top and is imported only where a Triton path runs (CUDA, or Triton's
interpreter in the CPU tests): the CPU path needs no Triton. Its kernels' length arguments (frames, rows,
labels) are ``do_not_specialize``: Triton specialises an integer argument that is 1 or a multiple of 16 by
default, so each new combination would compile the kernel again at some step of a run whose batches bring new
lengths. Each is tested against its reference
(tests/test_kernels_*.py; GPU cases under ``pytest -m gpu``). Measurements of every kernel: bench/NOTES.md.
"""
