"""An inference copy of a model that runs every member of an ensemble as one network.

At batch 1 on a CPU a layer costs about as much to call as to compute, so a pair of EmotionNets costs twice the
calls of one. :func:`fuse` rebuilds a model (one EmotionNet or an ensemble of M) as a single network of the same
depth: each CNN branch becomes one stack of grouped convolutions (member m owns group m) with the batch norms
folded into them, and each Transformer layer one batched matrix product per weight. Its outputs are the model's
to float rounding. The copy is for inference only: it cannot train, and its tensors no longer match the
checkpoint format, so save and train the model itself.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from .model import (
    ConvBranch,
    EmotionEnsemble,
    EmotionNet,
    EncoderBlock,
    ModelConfig,
    ModelOutput,
    band_snr,
    condition_log_mel,
    log_mean_probability,
    pool_tokens,
)


class GroupedLinear(nn.Module):
    """M linear layers at once: rows (M, N, in) -> (M, N, out), member m's rows through member m's weights."""

    def __init__(self, linears: list[nn.Linear]):
        super().__init__()
        self.register_buffer("weight", torch.stack([linear.weight.t() for linear in linears]).contiguous())
        self.register_buffer("bias", torch.stack([linear.bias for linear in linears])[:, None])

    def forward(self, x: Tensor) -> Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class GroupedLayerNorm(nn.Module):
    """M layer norms at once over (M, N, D)."""

    def __init__(self, norms: list[nn.LayerNorm]):
        super().__init__()
        self.eps = norms[0].eps
        self.register_buffer("weight", torch.stack([norm.weight for norm in norms])[:, None])
        self.register_buffer("bias", torch.stack([norm.bias for norm in norms])[:, None])

    def forward(self, x: Tensor) -> Tensor:
        return torch.addcmul(self.bias, F.layer_norm(x, x.shape[-1:], eps=self.eps), self.weight)


class GroupedConvBranch(nn.Module):
    """M members' ConvBranch of one kernel size, batch norms folded in: (B, M * n_inputs, F, T) -> (M, B, 2C)."""

    def __init__(self, branches: list[ConvBranch]):
        super().__init__()
        n_members, layers = len(branches), []
        for i, layer in enumerate(branches[0].blocks):
            if isinstance(layer, nn.Conv2d):
                folded = [_folded(branch.blocks[i], branch.blocks[i + 1]) for branch in branches]
                conv = nn.Conv2d(
                    n_members * layer.in_channels,
                    n_members * layer.out_channels,
                    layer.kernel_size,
                    padding=layer.padding,
                    groups=n_members,
                )
                conv.weight.data = torch.cat([weight for weight, _ in folded])
                conv.bias.data = torch.cat([bias for _, bias in folded])
                layers.append(conv)
            elif not isinstance(layer, (nn.BatchNorm2d, nn.Dropout)):
                layers.append(layer)  # pooling and GELU act on each channel alone, so they serve every member
        self.blocks = nn.Sequential(*layers)
        self.n_members = n_members

    def forward(self, x: Tensor) -> Tensor:
        # One grouped call per layer at batch 1, where a call costs about as much as its work. With more windows
        # (a long recording) the work dominates and oneDNN's dense kernels beat its grouped ones (-30% for 20
        # windows), so each member runs alone through its slice of the weights.
        if x.shape[0] == 1:
            x = self._run(x, member=None)
        else:
            x = torch.cat([self._run(part, member) for member, part in enumerate(x.chunk(self.n_members, dim=1))], 1)
        B, M = x.shape[0], self.n_members  # x: (B, M * C, F', T')
        pooled = torch.cat([x.mean(dim=(2, 3)).view(B, M, -1), x.amax(dim=(2, 3)).view(B, M, -1)], dim=2)
        return pooled.transpose(0, 1)  # (M, B, 2C)

    def _run(self, x: Tensor, member: int | None) -> Tensor:
        """Every member's layers (``member`` None: x holds every member's channels), or one member's."""
        for i, layer in enumerate(self.blocks):
            if isinstance(layer, nn.Conv2d) and member is not None:
                n_out = layer.out_channels // self.n_members
                own = slice(member * n_out, (member + 1) * n_out)
                x = F.conv2d(x, layer.weight[own], layer.bias[own], padding=layer.padding)
            else:
                x = layer(x)
            if i == 1 and x.device.type == "cpu":  # as ConvBranch: channels-last after the first convolution
                x = x.contiguous(memory_format=torch.channels_last)
        return x


class GroupedEncoderBlock(nn.Module):
    """M members' EncoderBlock of one depth, each weight a batched matrix product."""

    def __init__(self, blocks: list[EncoderBlock], n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.norm1 = GroupedLayerNorm([b.norm1 for b in blocks])
        self.qkv = GroupedLinear([b.attention.qkv for b in blocks])
        self.out = GroupedLinear([b.attention.out for b in blocks])
        self.norm2 = GroupedLayerNorm([b.norm2 for b in blocks])
        self.mlp_in = GroupedLinear([b.mlp[0] for b in blocks])
        self.mlp_out = GroupedLinear([b.mlp[3] for b in blocks])

    def forward(self, x: Tensor, batch: int, need_weights: bool) -> tuple[Tensor, Tensor | None]:
        """x: (M, B * T, D) -> (M, B * T, D), attention (M * B, H, T, T) or None."""
        M, N, D = x.shape
        T = N // batch
        q, k, v = self.qkv(self.norm1(x)).view(M * batch, T, 3, self.n_heads, D // self.n_heads).permute(2, 0, 3, 1, 4)
        if need_weights:
            weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
            y = weights @ v
        else:
            weights, y = None, F.scaled_dot_product_attention(q, k, v)
        x = x + self.out(y.transpose(1, 2).reshape(M, N, D))
        return x + self.mlp_out(F.gelu(self.mlp_in(self.norm2(x)))), weights


class FusedModel(nn.Module):
    """What :func:`fuse` returns: ``frontend`` and ``classify`` as the model's, its members run as one."""

    def __init__(self, model: EmotionNet | EmotionEnsemble):
        super().__init__()
        members = list(model.members) if isinstance(model, EmotionEnsemble) else [model]
        self.config: ModelConfig = model.config
        self.frontend = copy.deepcopy(members[0].frontend)  # no weights: its STFT window and filterbank
        # Each member's input batch norm is a scale and shift per band: (M, F, 1) each.
        scales = [m.input_norm.weight / torch.sqrt(m.input_norm.running_var + m.input_norm.eps) for m in members]
        shifts = [m.input_norm.bias - m.input_norm.running_mean * s for m, s in zip(members, scales)]
        self.register_buffer("input_scale", torch.stack(scales)[..., None])
        self.register_buffer("input_shift", torch.stack(shifts)[..., None])
        self.cnns = nn.ModuleList(GroupedConvBranch([m.cnns[i] for m in members]) for i in range(len(members[0].cnns)))
        transformers = [m.transformer for m in members]
        self.time_pool = self.config.time_pool
        self.embed = GroupedLinear([t.embed for t in transformers])
        self.register_buffer("position", torch.cat([t.position for t in transformers])[:, None])  # (M, 1, T', D)
        self.blocks = nn.ModuleList(
            GroupedEncoderBlock([t.blocks[i] for t in transformers], self.config.n_heads)
            for i in range(self.config.n_layers)
        )
        self.norm = GroupedLayerNorm([t.norm for t in transformers])
        attention_pooling = self.config.attention_pooling
        self.token_score = GroupedLinear([t.token_score for t in transformers]) if attention_pooling else None
        self.head = GroupedLinear([m.head[1] for m in members])

    def classify(self, log_mel: Tensor, return_attention: bool = False) -> ModelOutput:
        """As :meth:`EmotionNet.classify`; for an ensemble, the log of the mean probability and the first
        member's attention maps, as :meth:`EmotionEnsemble.classify`."""
        x = torch.addcmul(self.input_shift, condition_log_mel(log_mel, self.config)[:, None], self.input_scale)
        if self.config.band_snr_quantile is not None:  # each member's log-mel beside the height above the floor
            snr = band_snr(log_mel, self.config.band_snr_quantile, self.config.band_snr_range_db)[:, None].expand_as(x)
            x = torch.stack([x, snr], dim=2).flatten(1, 2)  # (B, M * 2, F, T): member m owns channels 2m, 2m + 1
        embeddings = [cnn(x) for cnn in self.cnns]  # each (M, B, 2C)
        temporal, attentions = self._transformer(x, return_attention)  # (M, B, D), (B, L, H, T', T')
        logits = self.head(torch.cat([*embeddings, temporal], dim=2))  # (M, B, n_classes)
        if len(logits) == 1:
            return ModelOutput(logits=logits[0], attentions=attentions)
        return ModelOutput(logits=log_mean_probability(logits), attentions=attentions)

    def forward(self, waveform: Tensor, return_attention: bool = False) -> ModelOutput:
        return self.classify(self.frontend(waveform), return_attention)

    def _transformer(self, x: Tensor, need_weights: bool) -> tuple[Tensor, Tensor | None]:
        B, M = x.shape[0], len(self.position)
        x = x.view(B, M, -1, x.shape[-1])  # each member's images stacked along the bands, as the model's
        n_mels, n_frames = x.shape[2:]
        tokens = F.max_pool1d(x.view(B * M, n_mels, n_frames), self.time_pool)  # (B * M, F, T')
        T = tokens.shape[-1]
        tokens = tokens.view(B, M, n_mels, T).permute(1, 0, 3, 2)  # (M, B, T', F)
        x = (self.embed(tokens.reshape(M, B * T, n_mels)).view(M, B, T, -1) + self.position).view(M, B * T, -1)
        maps = []
        for block in self.blocks:
            x, weights = block(x, B, need_weights)
            maps.append(weights)
        x = self.norm(x)
        scores = None if self.token_score is None else self.token_score(x).view(M, B, T, 1)
        embedding = pool_tokens(x.view(M, B, T, -1), scores)  # (M, B, D)
        if not need_weights:
            return embedding, None
        first_member = [weights.view(M, B, *weights.shape[1:])[0] for weights in maps]  # each (B, H, T', T')
        return embedding, torch.stack(first_member, dim=1)


def fuse(model: EmotionNet | EmotionEnsemble) -> FusedModel:
    """The inference copy of ``model`` (left as it was) that :class:`ser_model.EmotionRecognizer` runs. Batch
    norms are folded in with their running statistics, whichever mode ``model`` is in."""
    with torch.no_grad():
        return FusedModel(model).requires_grad_(False).eval()


def _folded(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """The weight and bias of ``conv`` followed by ``norm`` in eval mode (a per-channel scale and shift)."""
    return fuse_conv_bn_weights(
        conv.weight, conv.bias, norm.running_mean, norm.running_var, norm.eps, norm.weight, norm.bias
    )
