"""The layer-norm CNN front end (wav2vec2-large-lv60's) on channels-last activations.

``use_channels_last_feature_encoder(model)`` switches a Hugging Face Wav2Vec2's front end in place to
``ChannelsLastFeatureEncoder``: same parameters (and so the same checkpoint format), same arithmetic; Hugging
Face's ``Wav2Vec2LayerNormConvLayer`` is the reference. On a GPU, where no gradient flows through a layer, its
LayerNorm and GELU are one Triton pass (``norm_gelu_triton.layer_norm_gelu``; ``layer_norm_gelu_ref`` is its
reference).
"""
import torch
import torch.nn.functional as F
from transformers import Wav2Vec2ForCTC
from transformers.activations import GELUActivation
from transformers.models.wav2vec2.modeling_wav2vec2 import Wav2Vec2FeatureEncoder, Wav2Vec2LayerNormConvLayer


def layer_norm_gelu_ref(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """The reference: nn.functional's LayerNorm over the last dimension and exact GELU, in fp32."""
    return F.gelu(F.layer_norm(x.float(), x.shape[-1:], weight.float(), bias.float(), eps))


class ChannelsLastConvLayer(Wav2Vec2LayerNormConvLayer):
    """One layer of the layer-norm CNN front end (conv, LayerNorm over channels, GELU) on channels-last
    activations, (batch, channels, 1, frames) with channels innermost in memory, the layout its LayerNorm reads.

    Hugging Face's layer keeps (batch, channels, frames) and transposes around the LayerNorm: every layer then
    copies its activations across the transpose several times (to fp32 for the norm under autocast, to contiguous,
    back to bf16 and contiguous for the next conv), strided copies that dominate long-form inference
    (bench/NOTES.md, "Front end"). Here the conv runs as a 2-d convolution over one row in channels-last memory
    format (cuDNN's NHWC kernels), so the norm and activation read and write contiguous memory. Same weights, same
    arithmetic: ``Wav2Vec2LayerNormConvLayer.forward`` is the reference (tests/test_kernels_front_end.py). On a GPU,
    where no gradient flows through the layer (a frozen front end, inference), the norm and the GELU are one Triton
    pass (``layer_norm_gelu``)."""

    def forward(self, hidden_states):  # (batch, in, 1, frames) -> (batch, out, 1, frames'), channels-last
        if self.conv.in_channels == 1:  # the first layer, on the waveform: one GEMM over its windows
            rows = self._waveform_rows(hidden_states[:, 0, 0])
        else:
            weight = self.conv.weight[:, :, None].contiguous(memory_format=torch.channels_last)  # (out, in, 1, k)
            hidden_states = F.conv2d(hidden_states, weight, self.conv.bias, stride=(1, self.conv.stride[0]))
            rows = hidden_states.permute(0, 2, 3, 1)  # (batch, 1, frames', out), a view
        if self._norm_and_gelu_fused(rows):
            from models.kernels.norm_gelu_triton import layer_norm_gelu  # here: Triton is a GPU machine's package

            norm = self.layer_norm
            return layer_norm_gelu(rows, norm.weight, norm.bias, norm.eps).permute(0, 3, 1, 2)
        return self.activation(self.layer_norm(rows)).permute(0, 3, 1, 2)

    def _waveform_rows(self, samples: torch.Tensor) -> torch.Tensor:
        """The first layer's conv (1 input channel) as a GEMM over the waveform's windows: (batch, samples) ->
        (batch, 1, frames', out), contiguous. A 2-d convolution of one input channel returns NCHW (channels-last
        and contiguous are the same layout for its input, and cuDNN takes the latter), so the norm would read a
        strided view that PyTorch copies whole (bench/NOTES.md, "Front end")."""
        kernel, stride = self.conv.kernel_size[0], self.conv.stride[0]
        windows = samples.unfold(-1, kernel, stride)  # (batch, frames', kernel), an overlapping view
        return F.linear(windows, self.conv.weight[:, 0], self.conv.bias)[:, None]  # (batch, 1, frames', out)

    def _norm_and_gelu_fused(self, rows: torch.Tensor) -> bool:
        """Whether the Triton pass applies: CUDA, exact GELU, and no gradient wanted through the layer."""
        wants_grad = torch.is_grad_enabled() and (rows.requires_grad or self.layer_norm.weight.requires_grad)
        return rows.is_cuda and type(self.activation) is GELUActivation and not wants_grad


class ChannelsLastFeatureEncoder(Wav2Vec2FeatureEncoder):
    """The CNN front end of ``ChannelsLastConvLayer`` layers: (batch, samples) -> (batch, channels, frames), a
    view whose transpose, the (batch, frames, channels) Wav2Vec2Model reads next, is contiguous."""

    def forward(self, input_values):
        hidden_states = input_values[:, None, None]  # (batch, 1, 1, samples)
        if self._requires_grad and self.training:  # as Hugging Face's: gradient checkpointing needs an input grad
            hidden_states.requires_grad = True
        for conv_layer in self.conv_layers:
            hidden_states = conv_layer(hidden_states)
        return hidden_states[:, :, 0]


def use_channels_last_feature_encoder(model: Wav2Vec2ForCTC) -> None:
    """Run a layer-norm front end (wav2vec2-large-lv60's) in channels-last layout, in place: the modules change
    class, their parameters (and so the checkpoint format) stay as they are. A group-norm front end (base size,
    normalised over time) is left as it is."""
    if model.config.feat_extract_norm != "layer":
        return
    encoder = model.wav2vec2.feature_extractor
    if type(encoder) is not Wav2Vec2FeatureEncoder or any(
            type(layer) is not Wav2Vec2LayerNormConvLayer for layer in encoder.conv_layers):
        raise TypeError(f"expected Hugging Face's layer-norm front end, found {type(encoder).__name__} of "
                        f"{sorted({type(layer).__name__ for layer in encoder.conv_layers})}")
    encoder.__class__ = ChannelsLastFeatureEncoder
    for layer in encoder.conv_layers:
        layer.__class__ = ChannelsLastConvLayer
