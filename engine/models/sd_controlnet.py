"""CCIS-Diff's ControlNet: diffusers' ControlNetModel + blur mask weighting + text-aware attention.

Paper: Xie et al., "CCIS-DIFF: a generative model with Stable Diffusion prior for controlled colonoscopy image
synthesis" (arXiv 2411.12198). No public code exists; this is our reading, built on diffusers' ControlNetModel
(trainable copy of the SD-1.5 U-Net encoder, zero convolutions) so that a checkpoint is an ordinary diffusers
folder (``save_pretrained`` / ``from_pretrained``). With both additions off the model *is* diffusers'
ControlNetModel (same modules, same state-dict keys, same forward).

The condition is the polyp mask as a 3-channel image in [0, 1] (white = polyp), as a standard mask
ControlNet takes it, so a plain mask ControlNet checkpoint loads as this model with the additions off.

Readings of the paper's ambiguities (stated here because the paper leaves them open):

Blur mask weighting (Sec. 2.2.2, Eq. 1, Fig. 2a)
  * σ is a Gaussian blur of the mask in pixel space, inside the model (so the exported ControlNet part
    includes it): separable, ``blur_sigma`` pixels (the paper gives no value; default 8 px at 512²),
    kernel radius ⌈3σ⌉, replicate padding.
  * The two mask encoders Em are two ``ControlNetConditioningEmbedding``s with separate weights: the
    ControlNet's own ``controlnet_cond_embedding`` for M and ``blur_cond_embedding`` for σ(M).
  * The "three-layer MLP" that learns Mw is applied per latent pixel (three 1×1 convolutions, SiLU between)
    to the concatenation [Em(M), Em(σ(M))] — the paper says Mw "balances the two mask branches", so it sees
    both — and ends in a sigmoid, so Mw ∈ (0, 1) has the embedding's shape (C × h × w).
  * Fb = Mw ⊙ Em(σ(M)) (Eq. 1) and the mask condition added (⊕ in Fig. 2a) to the noise embedding
    (conv_in of the noisy latents) is Em(M) + Fb, where ControlNet adds Em(M) alone.
  * "The output of the cross-attention ... interacts once more with the blur mask embedding" is read as the
    ordinary ControlNet path (the embedding entered the trainable branch at its input and is carried through
    it); we add no second injection point.

Text-aware attention (Sec. 2.2.3, Eq. 2–3)
  * Mc = softmax(Qc Kcᵀ/√d) with Qc from the *cross*-attention layer's query projection applied to the
    self-attention's input (Fig. 2a: "sharing Q, K"; the map must exist before self-attention runs) and Kc
    from its key projection of the text embeddings.
  * The softmax is taken over the pixel axis, per token: taken over tokens (the usual cross-attention
    softmax) every pixel's sum over tokens would be exactly 1 and the map would carry no information.
  * s_j = Σ_tokens Mc[j, ·] (all sequence positions, as the U-Net sees no attention mask), averaged over
    heads; Norm is a per-image min-max to [0, 1] followed by a clamp to [0, 1] (a constant map gives 0).
  * The updated attention map re-weights the self-attention's *keys* by (1 + S):
    P'_jk ∝ softmax(Ms)_jk · (1 + S_k), i.e. softmax(Ms + log(1 + S_k)). Pixels that match the text weigh
    more as sources in every query's mixture, so text-relevant content propagates instead of being
    drowned by the mask; S constant gives back plain self-attention.
  * It is installed on every self-attention (attn1) of the trainable branch's transformer blocks (down and
    mid blocks), with no new weights.

Both additions are config switches (``blur_mask_weighting``, ``text_aware_attention``: whether the modules
exist) and run-time switches (``use_blur_mask``, ``use_text_aware_attention``: whether forward uses them),
for ablation on the same weights.

This is torch code (export and training only): the inference path runs the exported ONNX bundle, and the
import-isolation test exempts engine/models as it does engine/export.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import register_to_config
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from diffusers.models.controlnets.controlnet import (
    ControlNetConditioningEmbedding,
    ControlNetModel,
)
from torch import nn


def gaussian_blur(image: torch.Tensor, sigma: float, channels: int | None = None) -> torch.Tensor:
    """Separable Gaussian blur of (B, C, H, W), radius ⌈3σ⌉, replicate padding; σ ≤ 0 returns the input.

    ``channels`` (C as a Python int) keeps the kernel's shape static when traced for ONNX export."""
    if sigma <= 0:
        return image
    radius = max(1, math.ceil(3.0 * sigma))
    xs = [math.exp(-(i * i) / (2.0 * sigma * sigma)) for i in range(-radius, radius + 1)]
    total = sum(xs)
    kernel = torch.tensor([x / total for x in xs], dtype=image.dtype, device=image.device)
    channels = int(image.shape[1]) if channels is None else channels
    horizontal = kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1)
    vertical = kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1)
    out = F.pad(image, (radius, radius, 0, 0), mode="replicate")
    out = F.conv2d(out, horizontal, groups=channels)
    out = F.pad(out, (0, 0, radius, radius), mode="replicate")
    return F.conv2d(out, vertical, groups=channels)


def text_aware_map(cross: Attention, hidden_states: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """S (B, h·w) in [0, 1]: per-pixel similarity to the prompt from the cross-attention's projections (Eq. 2–3)."""
    batch = hidden_states.shape[0]
    query = cross.to_q(hidden_states)
    key = cross.to_k(text)
    head_dim = key.shape[-1] // cross.heads
    query = query.view(batch, -1, cross.heads, head_dim).transpose(1, 2)  # (B, heads, hw, d)
    key = key.view(batch, -1, cross.heads, head_dim).transpose(1, 2)  # (B, heads, L, d)
    logits = torch.matmul(query, key.transpose(-1, -2)) * (1.0 / math.sqrt(head_dim))  # (B, heads, hw, L)
    mc = torch.softmax(logits, dim=-2)  # over pixels, per token (see the module docstring)
    scores = mc.sum(dim=-1).mean(dim=1)  # (B, hw)
    low = scores.amin(dim=-1, keepdim=True)
    high = scores.amax(dim=-1, keepdim=True)
    return torch.clamp((scores - low) / (high - low + 1e-12), 0.0, 1.0)


class _TextContext:
    """The text embeddings of the forward in progress, shared by the model and its processors."""

    def __init__(self):
        self.text: torch.Tensor | None = None
        self.enabled = True
        self.record = False
        self.maps: list[torch.Tensor] = []


class TextAwareAttnProcessor:
    """Self-attention whose keys are re-weighted by (1 + S), S the text-aware map (module docstring)."""

    def __init__(self, cross: Attention, context: _TextContext):
        self.cross = cross  # the transformer block's cross-attention (attn2): its to_q/to_k give Mc
        self.context = context
        self.plain = AttnProcessor2_0()

    def __call__(self, attn: Attention, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None):
        text = self.context.text
        if text is None or not self.context.enabled or encoder_hidden_states is not None or hidden_states.ndim != 3:
            return self.plain(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        residual = hidden_states
        batch = hidden_states.shape[0]
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        score = text_aware_map(self.cross, hidden_states, text)  # (B, hw)
        if self.context.record:
            self.context.maps.append(score.detach())
        query = attn.to_q(hidden_states)
        key = attn.to_k(hidden_states)
        value = attn.to_v(hidden_states)
        head_dim = key.shape[-1] // attn.heads
        query = query.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        bias = torch.log1p(score)[:, None, None, :].to(query.dtype)  # (B, 1, 1, hw): per key
        if attention_mask is not None:
            mask = attn.prepare_attention_mask(attention_mask, hidden_states.shape[1], batch)
            bias = bias + mask.view(batch, attn.heads, -1, mask.shape[-1])
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=bias, dropout_p=0.0, is_causal=False)
        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)
        out = attn.to_out[0](out)
        out = attn.to_out[1](out)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


class BlurMaskWeighting(nn.Module):
    """Mw = sigmoid(MLP([Em(M), Em(σ(M))])) per latent pixel; returns Fb = Mw ⊙ Em(σ(M))."""

    def __init__(self, channels: int):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Conv2d(2 * channels, channels, 1),
            nn.SiLU(),
            nn.Conv2d(channels, channels, 1),
            nn.SiLU(),
            nn.Conv2d(channels, channels, 1),
        )

    def weights(self, mask_embedding: torch.Tensor, blur_embedding: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.mlp(torch.cat([mask_embedding, blur_embedding], dim=1)))

    def forward(self, mask_embedding: torch.Tensor, blur_embedding: torch.Tensor) -> torch.Tensor:
        return self.weights(mask_embedding, blur_embedding) * blur_embedding


class CCISControlNetModel(ControlNetModel):
    """diffusers' ControlNetModel with CCIS-Diff's blur mask weighting and text-aware attention (switchable)."""

    @register_to_config
    def __init__(
        self,
        blur_mask_weighting: bool = True,
        text_aware_attention: bool = True,
        blur_sigma: float = 8.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.use_blur_mask = bool(blur_mask_weighting)
        self.use_text_aware_attention = bool(text_aware_attention)
        self._text_context = _TextContext()
        if blur_mask_weighting:
            channels = self.config.block_out_channels[0]
            self.blur_cond_embedding = ControlNetConditioningEmbedding(
                conditioning_embedding_channels=channels,
                block_out_channels=tuple(self.config.conditioning_embedding_out_channels),
                conditioning_channels=self.config.conditioning_channels,
            )
            self.blur_weighting = BlurMaskWeighting(channels)
            self.controlnet_cond_embedding.register_forward_hook(self._add_blur_embedding)
        if text_aware_attention:
            self._install_text_aware_processors()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_unet(
        cls,
        unet,
        blur_mask_weighting: bool = True,
        text_aware_attention: bool = True,
        blur_sigma: float = 8.0,
        conditioning_embedding_out_channels=(16, 32, 96, 256),
        load_weights_from_unet: bool = True,
        conditioning_channels: int = 3,
    ) -> CCISControlNetModel:
        """A CCIS ControlNet whose trainable branch copies `unet`'s encoder (as ControlNetModel.from_unet)."""
        plain = ControlNetModel.from_unet(
            unet,
            conditioning_embedding_out_channels=conditioning_embedding_out_channels,
            load_weights_from_unet=load_weights_from_unet,
            conditioning_channels=conditioning_channels,
        )
        config = {k: v for k, v in plain.config.items() if not k.startswith("_")}
        model = cls(
            **config,
            blur_mask_weighting=blur_mask_weighting,
            text_aware_attention=text_aware_attention,
            blur_sigma=blur_sigma,
        )
        missing, unexpected = model.load_state_dict(plain.state_dict(), strict=False)
        assert not unexpected and all(k.startswith(("blur_cond_embedding.", "blur_weighting.")) for k in missing)
        return model

    def _install_text_aware_processors(self) -> None:
        processors = {}
        for name, module in self.named_modules():
            if isinstance(module, Attention):
                processors[f"{name}.processor"] = module.processor
        for name, module in self.named_modules():
            attn1 = getattr(module, "attn1", None)
            attn2 = getattr(module, "attn2", None)
            if isinstance(attn1, Attention) and isinstance(attn2, Attention) and not attn1.is_cross_attention:
                processors[f"{name}.attn1.processor"] = TextAwareAttnProcessor(attn2, self._text_context)
        self.set_attn_processor(processors)

    # ------------------------------------------------------------------ blur mask weighting
    def _add_blur_embedding(self, module, inputs, output):
        """Forward hook on controlnet_cond_embedding: Em(M) → Em(M) + Mw ⊙ Em(σ(M))."""
        if not self.use_blur_mask:
            return output
        blurred = gaussian_blur(inputs[0], float(self.config.blur_sigma), int(self.config.conditioning_channels))
        blur_embedding = self.blur_cond_embedding(blurred)
        return output + self.blur_weighting(output, blur_embedding)

    # ------------------------------------------------------------------ forward
    def forward(self, sample, timestep, encoder_hidden_states, controlnet_cond, *args, **kwargs):
        """ControlNetModel.forward; the text embeddings are handed to the text-aware processors meanwhile."""
        context = self._text_context
        context.text = encoder_hidden_states
        context.enabled = self.use_text_aware_attention
        try:
            return super().forward(sample, timestep, encoder_hidden_states, controlnet_cond, *args, **kwargs)
        finally:
            context.text = None

    @torch.no_grad()
    def text_aware_maps(self, sample, timestep, encoder_hidden_states, controlnet_cond) -> list[torch.Tensor]:
        """Run forward and return each text-aware self-attention's map S (B, h·w), in call order."""
        context = self._text_context
        context.record, context.maps = True, []
        try:
            self.forward(sample, timestep, encoder_hidden_states, controlnet_cond, return_dict=False)
            return list(context.maps)
        finally:
            context.record, context.maps = False, []


def _full_signature():
    """ControlNetModel's init parameters + ours, so diffusers' config loading passes all of them back."""
    import inspect

    parent = inspect.signature(ControlNetModel.__init__)
    ours = inspect.signature(CCISControlNetModel.__init__.__wrapped__)
    params = [p for p in parent.parameters.values()]
    params += [p for name, p in ours.parameters.items() if name not in ("self", "kwargs")]
    return parent.replace(parameters=params)


CCISControlNetModel.__init__.__signature__ = _full_signature()
