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
from pathlib import Path
from typing import Any

import torch
from torch import nn

OPSET = 17


def _vision(name: str) -> Callable[[], tuple[nn.Module, tuple[Any, ...], list[str]]]:
    def build() -> tuple[nn.Module, tuple[Any, ...], list[str]]:
        import torchvision

        model = torchvision.models.get_model(name, weights=None)
        return model, (torch.randn(1, 3, 224, 224),), ["image"]

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


def _check_depends_on_input(model: nn.Module, args: tuple[Any, ...]) -> None:
    with torch.no_grad():
        a, b = model(*args), model(*_random_like(args))
    scale = float(a.abs().max())
    if not scale > 1e-6 or float((a - b).abs().max()) <= 1e-4 * scale:
        raise ValueError(f"degenerate model: output (max {scale:.3g}) ignores its input")


def export(name: str, out: Path) -> None:
    torch.manual_seed(0)
    model, args, input_names = EXPORTS[name]()
    _calibrate(model, args)
    model.eval()
    if all(a.is_floating_point() for a in args):
        _check_depends_on_input(model, args)
    tmp = out.with_suffix(".tmp.onnx")
    with torch.no_grad():
        torch.onnx.export(
            model, args, str(tmp), input_names=input_names, opset_version=OPSET, dynamo=False
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
