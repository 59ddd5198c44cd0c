"""Export the corpus's torch models to ONNX (random weights, seeded, fixed shapes).

Runs in the export environment that `scripts/corpus` builds (pinned torch, torchvision, timm,
transformers), never in tvmflow's own venv: `python scripts/corpus_export.py OUT_DIR NAME...`.
Each model is written to OUT_DIR/NAME.onnx (temp file + rename), so a killed export leaves
nothing half-written. Weights are random: correctness and speed do not need trained ones.
"""

from __future__ import annotations

import itertools
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

OPSET = 17

Built = tuple[nn.Module, tuple[Any, ...], list[str]]
Builder = Callable[[], Built]


@dataclass(frozen=True)
class Options:
    """How one model is exported, where it differs from the default (TorchScript, opset 17)."""

    opset: int = OPSET
    dynamo: bool = False  # torch.export-based exporter instead of TorchScript tracing
    dynamic: dict[str, dict[int, str]] = field(default_factory=dict)  # input -> {axis: name}
    half: bool = False  # exported in fp16


def _vision(name: str, size: int = 224) -> Builder:
    def build() -> Built:
        import torchvision

        model = torchvision.models.get_model(name, weights=None)
        return model, (torch.randn(1, 3, size, size),), ["image"]

    return build


def _batched(builder: Builder, batch: int) -> Builder:
    """BUILDER's model exported at batch BATCH (float inputs drawn afresh)."""

    def build() -> Built:
        model, args, names = builder()
        return model, tuple(torch.randn(batch, *a.shape[1:]) for a in args), names

    return build


def _timm(name: str, size: int = 224) -> Callable[[], tuple[nn.Module, tuple[Any, ...], list[str]]]:
    def build() -> tuple[nn.Module, tuple[Any, ...], list[str]]:
        import timm

        model = timm.create_model(name, pretrained=False)
        return model, (torch.randn(1, 3, size, size),), ["image"]

    return build


class _LogitsOnly(nn.Module):
    """A transformers model reduced to its first output tensor (no ModelOutput dicts)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        return self.model(*args, return_dict=False)[0]


def _bert() -> tuple[nn.Module, tuple[Any, ...], list[str]]:
    from transformers import BertConfig, BertModel

    config = BertConfig(
        num_hidden_layers=4, hidden_size=256, num_attention_heads=4, intermediate_size=1024
    )
    ids = torch.randint(0, config.vocab_size, (1, 128))
    return _LogitsOnly(BertModel(config)), (ids, torch.ones_like(ids)), ["input_ids", "mask"]


def _distilbert() -> tuple[nn.Module, tuple[Any, ...], list[str]]:
    from transformers import DistilBertConfig, DistilBertModel

    config = DistilBertConfig()  # the base size: 6 layers, 768 wide
    ids = torch.randint(0, config.vocab_size, (1, 64))
    return _LogitsOnly(DistilBertModel(config)), (ids, torch.ones_like(ids)), ["input_ids", "mask"]


class CausalSelfAttention(nn.Module):
    def __init__(self, width: int, heads: int, context: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        mask = torch.full((context, context), float("-inf")).triu(1)
        self.register_buffer("mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        att = (q @ k.transpose(-1, -2)) / math.sqrt(c // self.heads) + self.mask[:t, :t]
        y = att.softmax(dim=-1) @ v
        return self.proj(y.transpose(1, 2).reshape(b, t, c))


class GPTBlock(nn.Module):
    def __init__(self, width: int, heads: int, context: int) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn = CausalSelfAttention(width, heads, context)
        self.mlp = nn.Sequential(
            nn.Linear(width, 4 * width), nn.GELU(approximate="tanh"), nn.Linear(4 * width, width)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPTDecoder(nn.Module):
    """A GPT-2-style decoder (pre-LN blocks, causal mask, tied LM head) at a fixed length.

    Written out in plain torch: transformers' GPT-2 builds its causal mask with vmap, which
    the TorchScript ONNX exporter cannot trace.
    """

    def __init__(
        self,
        vocab: int = 8192,
        width: int = 256,
        layers: int = 4,
        heads: int = 4,
        context: int = 128,
    ) -> None:
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, width), nn.Embedding(context, width)
        self.blocks = nn.Sequential(*(GPTBlock(width, heads, context) for _ in range(layers)))
        self.ln = nn.LayerNorm(width)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(ids.shape[1]).unsqueeze(0)
        x = self.ln(self.blocks(self.tok(ids) + self.pos(positions)))
        return x @ self.tok.weight.t()


def _gpt2() -> tuple[nn.Module, tuple[Any, ...], list[str]]:
    return GPTDecoder(), (torch.randint(0, 8192, (1, 64)),), ["input_ids"]


def _whisper_encoder() -> tuple[nn.Module, tuple[Any, ...], list[str]]:
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    config = WhisperConfig(
        d_model=256,
        encoder_layers=2,
        encoder_attention_heads=4,
        encoder_ffn_dim=1024,
        max_source_positions=500,
    )
    return _LogitsOnly(WhisperEncoder(config)), (torch.randn(1, 80, 1000),), ["mel"]


class _Block(nn.Sequential):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1),
            nn.BatchNorm2d(cout),
            nn.ReLU(),
            nn.Conv2d(cout, cout, 3, padding=1),
            nn.BatchNorm2d(cout),
            nn.ReLU(),
        )


class UNet(nn.Module):
    """A 4-level U-Net (max-pool down, transposed-conv up, skip concats) for segmentation."""

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64, 128), classes: int = 2) -> None:
        super().__init__()
        self.down = nn.ModuleList()
        cin = 3
        for w in widths:
            self.down.append(_Block(cin, w))
            cin = w
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(w2, w1, 2, stride=2) for w1, w2 in itertools.pairwise(widths)
        )
        self.merge = nn.ModuleList(_Block(2 * w, w) for w in widths[:-1])
        self.head = nn.Conv2d(widths[0], classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else nn.functional.max_pool2d(x, 2))
            skips.append(x)
        for i in reversed(range(len(self.up))):
            x = self.merge[i](torch.cat([self.up[i](x), skips[i]], dim=1))
        return self.head(x)


class AudioConv1d(nn.Module):
    """A keyword-spotting style Conv1D net over raw 16 kHz audio (M5-like)."""

    def __init__(self, classes: int = 35) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv1d(1, 64, 80, stride=16), nn.BatchNorm1d(64), nn.ReLU()]
        cin = 64
        for cout in (64, 128, 256):
            layers += [
                nn.MaxPool1d(4),
                nn.Conv1d(cin, cout, 3, padding=1),
                nn.BatchNorm1d(cout),
                nn.ReLU(),
            ]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=-1))


class Recurrent(nn.Module):
    """A 2-layer (bi)directional LSTM/GRU tagger over feature frames, as speech models use."""

    def __init__(self, cell: str, bidirectional: bool) -> None:
        super().__init__()
        rnn = nn.LSTM if cell == "lstm" else nn.GRU
        self.rnn = rnn(40, 128, num_layers=2, batch_first=True, bidirectional=bidirectional)
        self.fc = nn.Linear(128 * (2 if bidirectional else 1), 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.rnn(x)[0])


def _conv(cin: int, cout: int, k: int = 3, s: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, s, k // 2, bias=False), nn.BatchNorm2d(cout), nn.SiLU()
    )


class C2f(nn.Module):
    """YOLOv8's C2f: split, a chain of bottlenecks, concat every stage."""

    def __init__(self, cin: int, cout: int, n: int = 1) -> None:
        super().__init__()
        self.c = cout // 2
        self.cv1, self.cv2 = _conv(cin, 2 * self.c, 1), _conv((2 + n) * self.c, cout, 1)
        self.m = nn.ModuleList(
            nn.Sequential(_conv(self.c, self.c), _conv(self.c, self.c)) for _ in range(n)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = list(self.cv1(x).split((self.c, self.c), 1))
        for m in self.m:
            y.append(y[-1] + m(y[-1]))
        return self.cv2(torch.cat(y, 1))


class YoloV8n(nn.Module):
    """A YOLOv8n-shaped detector (C2f backbone, SPPF, PAN neck, decoupled head with DFL).

    Ends at the decoded boxes and class scores before NMS, as exported YOLO models do.
    """

    def __init__(self, classes: int = 80, reg: int = 16) -> None:
        super().__init__()
        w = (16, 32, 64, 128, 256)
        self.stem = nn.Sequential(_conv(3, w[0], 3, 2), _conv(w[0], w[1], 3, 2), C2f(w[1], w[1]))
        self.p3 = nn.Sequential(_conv(w[1], w[2], 3, 2), C2f(w[2], w[2], 2))
        self.p4 = nn.Sequential(_conv(w[2], w[3], 3, 2), C2f(w[3], w[3], 2))
        self.p5 = nn.Sequential(_conv(w[3], w[4], 3, 2), C2f(w[4], w[4]))
        self.sppf_in, self.sppf_out = _conv(w[4], w[4] // 2, 1), _conv(w[4] * 2, w[4], 1)
        self.up4, self.up3 = C2f(w[4] + w[3], w[3]), C2f(w[3] + w[2], w[2])
        self.down4, self.n4 = _conv(w[2], w[2], 3, 2), C2f(w[2] + w[3], w[3])
        self.down5, self.n5 = _conv(w[3], w[3], 3, 2), C2f(w[3] + w[4], w[4])
        self.box = nn.ModuleList(
            nn.Sequential(_conv(c, 64), _conv(64, 64), nn.Conv2d(64, 4 * reg, 1)) for c in w[2:]
        )
        self.cls = nn.ModuleList(
            nn.Sequential(_conv(c, 80), _conv(80, 80), nn.Conv2d(80, classes, 1)) for c in w[2:]
        )
        self.reg = reg
        self.register_buffer("proj", torch.arange(reg, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p3 = self.p3(self.stem(x))
        p4 = self.p4(p3)
        y = self.sppf_in(self.p5(p4))
        pools = [y]
        for _ in range(3):
            pools.append(nn.functional.max_pool2d(pools[-1], 5, 1, 2))
        p5 = self.sppf_out(torch.cat(pools, 1))
        up = nn.functional.interpolate
        h4 = self.up4(torch.cat([up(p5, scale_factor=2.0), p4], 1))
        h3 = self.up3(torch.cat([up(h4, scale_factor=2.0), p3], 1))
        h4 = self.n4(torch.cat([self.down4(h3), h4], 1))
        h5 = self.n5(torch.cat([self.down5(h4), p5], 1))
        outs = []
        for feat, box, cls in zip((h3, h4, h5), self.box, self.cls, strict=True):
            b, _, h, w = feat.shape
            dist = box(feat).view(b, 4, self.reg, h * w).softmax(2)  # DFL
            ltrb = (dist * self.proj.view(1, 1, -1, 1)).sum(2)
            outs.append(torch.cat([ltrb, cls(feat).view(b, -1, h * w).sigmoid()], 1))
        return torch.cat(outs, 2)


class C3D(nn.Module):
    """A small 3-D CNN video classifier (Conv3d, BatchNorm3d, MaxPool3d, global pooling)."""

    def __init__(self, classes: int = 400) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for i, cout in enumerate((32, 64, 128, 256)):
            stride = (1, 2, 2) if i == 0 else (2, 2, 2)
            layers += [
                nn.Conv3d(cin, cout, 3, padding=1),
                nn.BatchNorm3d(cout),
                nn.ReLU(),
                nn.MaxPool3d(stride, stride),
            ]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3, 4)))


def _wav2vec2() -> tuple[nn.Module, tuple[Any, ...], list[str]]:
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    config = Wav2Vec2Config(
        hidden_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=1024,
        do_stable_layer_norm=True,
        feat_extract_norm="layer",
        apply_spec_augment=False,
    )
    return _LogitsOnly(Wav2Vec2Model(config)), (torch.randn(1, 16000),), ["audio"]


# ------------------------------------------------------------- session 3: unseen architectures


class _Out(nn.Module):
    """A model whose output is a dict/list/ModelOutput reduced to the tensors KEYS pick."""

    def __init__(self, model: nn.Module, *keys: Any, **kwargs: Any) -> None:
        super().__init__()
        self.model, self.keys, self.kwargs = model, keys, kwargs

    def forward(self, *args: torch.Tensor) -> Any:
        out = self.model(*args, **self.kwargs)
        picked = tuple(out[k] for k in self.keys)
        return picked[0] if len(picked) == 1 else picked


class _Detector(nn.Module):
    """A torchvision detector on one image tensor: boxes, scores and labels after its NMS.

    Calibration trains only its norms (a detector in training mode wants targets).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def train(self, mode: bool = True) -> _Detector:
        super().train(False)
        for m in self.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.train(mode)
        return self

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        det = self.model(list(x))[0]
        return det["boxes"], det["scores"], det["labels"]


def _tv_detection(name: str, size: int) -> Builder:
    def build() -> Built:
        import torchvision

        model = torchvision.models.get_model(name, weights=None, weights_backbone=None)
        return _Detector(model), (torch.rand(1, 3, size, size),), ["image"]

    return build


def _tv_segmentation(name: str, size: int = 256) -> Builder:
    def build() -> Built:
        import torchvision

        model = torchvision.models.get_model(name, weights=None, weights_backbone=None)
        return _Out(model, "out"), (torch.randn(1, 3, size, size),), ["image"]

    return build


class _Raft(_Detector):
    """torchvision's RAFT (small) with a fixed number of flow updates; the last flow only."""

    def __init__(self, updates: int) -> None:
        import torchvision

        super().__init__(torchvision.models.optical_flow.raft_small(weights=None))
        self.updates = updates

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.model(a, b, num_flow_updates=self.updates)[-1]


def _raft() -> Built:
    return (
        _Raft(3),
        (torch.randn(1, 3, 128, 128), torch.randn(1, 3, 128, 128)),
        ["frame0", "frame1"],
    )


def _ids(vocab: int, length: int, batch: int = 1) -> torch.Tensor:
    return torch.randint(2, vocab, (batch, length))


def _encoder(config_cls: str, model_cls: str, length: int = 64, **config: Any) -> Builder:
    """A transformers text encoder (small config) on ids and an attention mask."""

    def build() -> Built:
        import transformers

        cfg = getattr(transformers, config_cls)(**config)
        model = getattr(transformers, model_cls)(cfg)
        ids = _ids(cfg.vocab_size, length)
        mask = torch.ones_like(ids)
        mask[:, length - length // 4 :] = 0  # padded tail: masks must matter
        return _LogitsOnly(model), (ids, mask), ["input_ids", "attention_mask"]

    return build


_SMALL_TEXT = {
    "vocab_size": 1000,
    "hidden_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 1024,
}


def _t5() -> Built:
    from transformers import T5Config, T5Model

    cfg = T5Config(
        vocab_size=1000,
        d_model=128,
        d_kv=32,
        d_ff=512,
        num_layers=2,
        num_heads=4,
        decoder_start_token_id=0,
    )
    ids, dec = _ids(1000, 48), _ids(1000, 16)

    class Step(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = T5Model(cfg)

        def forward(self, ids: torch.Tensor, mask: torch.Tensor, dec: torch.Tensor) -> Any:
            out = self.model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec)
            return out.last_hidden_state

    return Step(), (ids, torch.ones_like(ids), dec), ["input_ids", "attention_mask", "decoder_ids"]


def _bart() -> Built:
    from transformers import BartConfig, BartModel

    cfg = BartConfig(
        vocab_size=1000,
        d_model=128,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=512,
        decoder_ffn_dim=512,
        max_position_embeddings=128,
    )
    ids = _ids(1000, 32)
    return _LogitsOnly(BartModel(cfg)), (ids, torch.ones_like(ids)), ["input_ids", "attention_mask"]


def _clip() -> Built:
    from transformers import CLIPConfig, CLIPModel

    small = {
        "hidden_size": 128,
        "intermediate_size": 512,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
    }
    cfg = CLIPConfig(
        text_config=small | {"vocab_size": 1000, "max_position_embeddings": 32},
        vision_config=small | {"image_size": 224, "patch_size": 32},
        projection_dim=64,
    )

    class Logits(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = CLIPModel(cfg)

        def forward(self, ids: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
            return self.model(input_ids=ids, pixel_values=pixels).logits_per_image

    return Logits(), (_ids(1000, 32, 3), torch.randn(2, 3, 224, 224)), ["input_ids", "pixels"]


def _hf_vision(config_cls: str, model_cls: str, size: int = 224, **config: Any) -> Builder:
    def build() -> Built:
        import transformers

        model = getattr(transformers, model_cls)(getattr(transformers, config_cls)(**config))
        return _LogitsOnly(model), (torch.randn(1, 3, size, size),), ["pixels"]

    return build


def _hf_audio(config_cls: str, model_cls: str, **config: Any) -> Builder:
    def build() -> Built:
        import transformers

        model = getattr(transformers, model_cls)(getattr(transformers, config_cls)(**config))
        return _LogitsOnly(model), (torch.randn(1, 16000),), ["audio"]

    return build


class _DecodeStep(nn.Module):
    """A causal LM's one-token step: ids, mask and the KV cache in; logits and new cache out."""

    def __init__(self, model: nn.Module, layers: int) -> None:
        super().__init__()
        self.model, self.layers = model, layers

    def forward(self, ids: torch.Tensor, mask: torch.Tensor, *past: torch.Tensor) -> Any:
        from transformers import DynamicCache

        cache = DynamicCache()
        for i in range(self.layers):
            cache.update(past[2 * i], past[2 * i + 1], i)
        out = self.model(input_ids=ids, attention_mask=mask, past_key_values=cache, use_cache=True)
        return (out.logits, *itertools.chain.from_iterable(out.past_key_values.to_legacy_cache()))


def _causal_lm(config_cls: str, model_cls: str, past: int = 15, **config: Any) -> Builder:
    def build() -> Built:
        import transformers

        cfg = getattr(transformers, config_cls)(**config)
        model = getattr(transformers, model_cls)(cfg)
        heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        layers = cfg.num_hidden_layers
        kv = [torch.randn(1, heads, past, dim) for _ in range(2 * layers)]
        names = [f"past_{kind}_{i}" for i in range(layers) for kind in ("key", "value")]
        args = (_ids(cfg.vocab_size, 1), torch.ones(1, past + 1, dtype=torch.int64), *kv)
        return _DecodeStep(model, layers), args, ["input_ids", "attention_mask", *names]

    return build


def _whisper_decoder() -> Built:
    from transformers import WhisperConfig
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache
    from transformers.models.whisper.modeling_whisper import WhisperDecoder

    cfg = WhisperConfig(
        vocab_size=1000,
        d_model=128,
        decoder_layers=2,
        decoder_attention_heads=4,
        decoder_ffn_dim=512,
        max_target_positions=64,
        pad_token_id=0,
    )

    class Step(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.decoder = WhisperDecoder(cfg)

        def forward(self, ids: torch.Tensor, enc: torch.Tensor, *past: torch.Tensor) -> Any:
            cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
            for i in range(cfg.decoder_layers):
                cache.self_attention_cache.update(past[2 * i], past[2 * i + 1], i)
            out = self.decoder(
                input_ids=ids, encoder_hidden_states=enc, past_key_values=cache, use_cache=True
            )
            layers = out.past_key_values.self_attention_cache.to_legacy_cache()
            return (out.last_hidden_state, *itertools.chain.from_iterable(layers))

    kv = [torch.randn(1, 4, 7, 32) for _ in range(4)]
    names = [f"past_{kind}_{i}" for i in range(2) for kind in ("key", "value")]
    return Step(), (_ids(1000, 1), torch.randn(1, 100, 128), *kv), ["ids", "encoder", *names]


class _ConvMixer(nn.Sequential):
    def __init__(self, dim: int = 256, depth: int = 8, kernel: int = 9, patch: int = 7) -> None:
        class Residual(nn.Module):
            def __init__(self, fn: nn.Module) -> None:
                super().__init__()
                self.fn = fn

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return self.fn(x) + x

        act = nn.GELU
        super().__init__(
            nn.Conv2d(3, dim, patch, patch),
            act(),
            nn.BatchNorm2d(dim),
            *[
                nn.Sequential(
                    Residual(
                        nn.Sequential(
                            nn.Conv2d(dim, dim, kernel, groups=dim, padding="same"),
                            act(),
                            nn.BatchNorm2d(dim),
                        )
                    ),
                    nn.Conv2d(dim, dim, 1),
                    act(),
                    nn.BatchNorm2d(dim),
                )
                for _ in range(depth)
            ],
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(dim, 1000),
        )


def _plain(
    factory: Callable[[], nn.Module], *shape: int, name: str = "x"
) -> Callable[[], tuple[nn.Module, tuple[Any, ...], list[str]]]:
    return lambda: (factory(), (torch.randn(*shape),), [name])


EXPORTS: dict[str, Callable[[], tuple[nn.Module, tuple[Any, ...], list[str]]]] = {
    "resnet50": _vision("resnet50"),
    "mobilenet_v3_large": _vision("mobilenet_v3_large"),
    "efficientnet_b0": _vision("efficientnet_b0"),
    "convnext_tiny": _vision("convnext_tiny"),
    "regnet_y_800mf": _vision("regnet_y_800mf"),
    "densenet121": _vision("densenet121"),
    "squeezenet1_1": _vision("squeezenet1_1"),
    "shufflenet_v2_x1_0": _vision("shufflenet_v2_x1_0"),
    "googlenet": _vision("googlenet"),
    "mnasnet1_0": _vision("mnasnet1_0"),
    "swin_t": _vision("swin_t"),
    "deit_tiny": _timm("deit_tiny_patch16_224"),
    "mobilevit_xs": _timm("mobilevit_xs", 256),
    "bert_4l": _bert,
    "distilbert": _distilbert,
    "gpt2_4l": _gpt2,
    "whisper_encoder": _whisper_encoder,
    "unet": _plain(UNet, 1, 3, 256, 256, name="image"),
    "yolov8n_like": _plain(YoloV8n, 1, 3, 640, 640, name="images"),
    "c3d_video": _plain(C3D, 1, 3, 8, 112, 112, name="clip"),
    "wav2vec2_2l": _wav2vec2,
    "audio_conv1d": _plain(AudioConv1d, 1, 1, 16000, name="audio"),
    "lstm_tagger": _plain(lambda: Recurrent("lstm", False), 1, 100, 40, name="frames"),
    "bigru_tagger": _plain(lambda: Recurrent("gru", True), 1, 100, 40, name="frames"),
    # session 3: architectures nobody had compiled (op, shape and exporter variety)
    # (mobilenet_v3_small_b8, inception_v3, resnext50_32x4d, efficientnet_v2_s, maxvit_t,
    # convmixer_256_8, fastvit_t8, efficientformer_l1, coatnet_nano_rw export but are not in
    # corpus.toml yet: their compiles did not fit the shared machine's session)
    "mobilenet_v3_small_b8": _batched(_vision("mobilenet_v3_small"), 8),
    "inception_v3": _vision("inception_v3", 299),
    "resnext50_32x4d": _vision("resnext50_32x4d"),
    "efficientnet_v2_s": _vision("efficientnet_v2_s"),
    "maxvit_t": _vision("maxvit_t"),
    "lraspp_mobilenet_v3": _tv_segmentation("lraspp_mobilenet_v3_large"),
    "deeplabv3_mobilenet_v3": _tv_segmentation("deeplabv3_mobilenet_v3_large"),
    "ssdlite320_mobilenet_v3": _tv_detection("ssdlite320_mobilenet_v3_large", 320),
    "raft_small": _raft,
    "ghostnet_100": _timm("ghostnet_100"),
    "repvgg_a0": _timm("repvgg_a0"),
    "convmixer_256_8": _plain(_ConvMixer, 1, 3, 224, 224, name="image"),
    "levit_128s": _timm("levit_128s"),
    "poolformer_s12": _timm("poolformer_s12"),
    "edgenext_xx_small": _timm("edgenext_xx_small", 256),
    "fastvit_t8": _timm("fastvit_t8", 256),
    "efficientformer_l1": _timm("efficientformer_l1"),
    "coatnet_nano_rw": _timm("coatnet_nano_rw_224"),
    "convnextv2_atto": _timm("convnextv2_atto"),
    "t5_small_step": _t5,
    "bart_2l": _bart,
    "xlm_roberta_2l": _encoder("XLMRobertaConfig", "XLMRobertaModel", **_SMALL_TEXT),
    "albert_4l": _encoder("AlbertConfig", "AlbertModel", **(_SMALL_TEXT | {"embedding_size": 128})),
    "electra_2l": _encoder(
        "ElectraConfig", "ElectraModel", **(_SMALL_TEXT | {"embedding_size": 128})
    ),
    "deberta_v2_2l": _encoder(
        "DebertaV2Config",
        "DebertaV2Model",
        **(
            _SMALL_TEXT
            | {
                "relative_attention": True,
                "pos_att_type": ["p2c", "c2p"],
                "position_buckets": 64,
                "norm_rel_ebd": "layer_norm",
                "share_att_key": True,
                "max_relative_positions": -1,
            }
        ),
    ),
    "clip_b2": _clip,
    "segformer_b0": _hf_vision("SegformerConfig", "SegformerForSemanticSegmentation", 256),
    "yolos_4l": _hf_vision(
        "YolosConfig",
        "YolosModel",
        256,
        hidden_size=192,
        num_hidden_layers=4,
        num_attention_heads=3,
        intermediate_size=768,
        num_detection_tokens=20,
    ),
    "dinov2_4l": _hf_vision(
        "Dinov2Config",
        "Dinov2Model",
        224,
        hidden_size=384,
        num_hidden_layers=4,
        num_attention_heads=6,
        intermediate_size=1536,
    ),
    "wavlm_2l": _hf_audio(
        "WavLMConfig",
        "WavLMModel",
        hidden_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=1024,
        apply_spec_augment=False,
    ),
    "whisper_decoder_kv": _whisper_decoder,
    "llama_kv": _causal_lm(
        "LlamaConfig",
        "LlamaForCausalLM",
        vocab_size=1000,
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
    ),
    "phi_kv": _causal_lm(
        "PhiConfig",
        "PhiForCausalLM",
        vocab_size=1000,
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=256,
        partial_rotary_factor=0.5,
    ),
    "mistral_kv_dynamo": _causal_lm(
        "MistralConfig",
        "MistralForCausalLM",
        vocab_size=1000,
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=1,
        max_position_embeddings=256,
        sliding_window=8,
    ),
    "resnet18_dynamo_op18": _vision("resnet18"),
    "squeezenet_op11": _vision("squeezenet1_0"),
    "bert_dynbatch_op13": _encoder(  # opset 13 has no SDPA export: eager attention
        "BertConfig", "BertModel", **_SMALL_TEXT, attn_implementation="eager"
    ),
    "mobilenet_v2_fp16": _vision("mobilenet_v2"),
    "distilbert_fp16": _distilbert,
}

# Exported otherwise than the default (TorchScript, opset 17, static shapes, fp32).
OPTIONS: dict[str, Options] = {
    "mistral_kv_dynamo": Options(opset=18, dynamo=True),
    "phi_kv": Options(dynamo=True),  # TorchScript tracing fails in transformers' mask code
    "resnet18_dynamo_op18": Options(opset=18, dynamo=True),
    "squeezenet_op11": Options(opset=11),
    "bert_dynbatch_op13": Options(
        opset=13,
        dynamic={"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}},
    ),
    "inception_v3": Options(dynamic={"image": {0: "batch"}}),
    "mobilenet_v2_fp16": Options(half=True),
    "distilbert_fp16": Options(half=True),
    "segformer_b0": Options(opset=18, dynamo=True),
    "llama_kv": Options(opset=18, dynamo=True),
}


def _random_like(args: tuple[Any, ...], batch: int = 1) -> tuple[Any, ...]:
    """Fresh random inputs shaped like ARGS (float: N(0, 1); integer ids: kept)."""
    return tuple(
        torch.randn(batch, *a.shape[1:]) if a.is_floating_point() else a.repeat(batch, 1)
        for a in args
    )


def _calibrate(model: nn.Module, args: tuple[Any, ...]) -> None:
    """Set BatchNorm running statistics from random inputs, as training would.

    With the default statistics (mean 0, var 1) random-weight CNNs' activations vanish or
    blow up layer by layer, and their outputs stop depending on the input: a comparison
    against onnxruntime would then pass whatever the compiled code computes.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the calibration batches
    model.train()
    with torch.no_grad():
        for _ in range(4):
            model(*_random_like(args, batch=4))
    model.eval()


def _first(out: Any) -> torch.Tensor:
    return out if isinstance(out, torch.Tensor) else out[0]


def _check_depends_on_input(model: nn.Module, args: tuple[Any, ...]) -> None:
    with torch.no_grad():
        a, b = _first(model(*args)), _first(model(*_random_like(args)))
    scale = float(a.abs().max())
    if not scale > 1e-6 or float((a - b).abs().max()) <= 1e-4 * scale:
        raise ValueError(f"degenerate model: output (max {scale:.3g}) ignores its input")


def export(name: str, out: Path) -> None:
    torch.manual_seed(0)
    model, args, input_names = EXPORTS[name]()
    options = OPTIONS.get(name, Options())
    _calibrate(model, args)
    model.eval()
    if all(a.is_floating_point() for a in args):
        _check_depends_on_input(model, args)
    if options.half:
        model = model.half()
        args = tuple(a.half() if a.is_floating_point() else a for a in args)
    tmp = out.with_suffix(".tmp.onnx")
    extra: dict[str, Any] = {"external_data": False} if options.dynamo else {}
    with torch.no_grad():
        torch.onnx.export(
            model,
            args,
            str(tmp),
            input_names=input_names,
            opset_version=options.opset,
            dynamo=options.dynamo,
            dynamic_axes=options.dynamic or None,
            **extra,
        )
    os.replace(tmp, out)


def main() -> None:
    """Export each named model not cached yet; one failing export does not stop the others."""
    out_dir = Path(sys.argv[1])
    out_dir.mkdir(parents=True, exist_ok=True)
    failed = []
    for name in sys.argv[2:] or sorted(EXPORTS):
        target = out_dir / f"{name}.onnx"
        if target.is_file():
            continue
        print(f"export {name}", flush=True)
        try:
            export(name, target)
        except Exception as exc:
            print(f"export {name} failed: {type(exc).__name__}: {exc}", flush=True)
            failed.append(name)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
