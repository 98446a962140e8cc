"""A small Vision Transformer (Dosovitskiy et al., ICLR 2021) for 28x28 and 32x32 images.

Patches of `patch_size` pixels are embedded by one strided convolution, a learned class token and
position embeddings are added, then `depth` pre-norm encoder blocks (multi-head self-attention
and a GELU MLP of width mlp_ratio * dim, each in a residual branch after LayerNorm; torch's
`nn.TransformerEncoderLayer` with `norm_first=True`), a final LayerNorm, and the class token
(`pool="cls"`) or the mean of the patch tokens (`pool="mean"`) as `features` for the linear
`classifier`. The image size and channels come from the dataset by default.

Attention runs through `F.scaled_dot_product_attention`, whose fused kernels have no
forward-mode AD rule; in the meta engines' JVP passes it takes a fused tangent of ours
(`l2rw.meta.functional_tangents`), everywhere else torch's fused kernels run.
"""

from dataclasses import dataclass, field

import torch
from torch import nn

from l2rw.config.options import ModelConf, ModelOptions
from l2rw.errors import ConfigError
from l2rw.models import MODELS

POOLS = ("cls", "mean")


class ViT(nn.Module):
    def __init__(
        self,
        num_classes: int,
        image_size: int,
        in_channels: int,
        patch_size: int,
        dim: int,
        depth: int,
        heads: int,
        mlp_ratio: float,
        pool: str,
        dropout: float,
    ) -> None:
        super().__init__()
        self.input_shape = (in_channels, image_size, image_size)
        self.pool = pool
        self.patch = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)
        tokens = (image_size // patch_size) ** 2 + 1
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.position = nn.Parameter(torch.randn(1, tokens, dim) * 0.02)
        block = nn.TransformerEncoderLayer(
            dim,
            heads,
            int(mlp_ratio * dim),
            dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.blocks = nn.TransformerEncoder(block, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.classifier = nn.Linear(dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        patches = self.patch(x).flatten(2).transpose(1, 2)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        h = self.norm(self.blocks(torch.cat([cls, patches], dim=1) + self.position))
        return h[:, 0] if self.pool == "cls" else h[:, 1:].mean(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@dataclass
class ViTOptions(ModelOptions):
    # The dataset's image side and channels (square images).
    image_size: int = "${dataset.input_shape.1}"  # type: ignore[assignment]
    in_channels: int = "${dataset.input_shape.0}"  # type: ignore[assignment]
    # 4 px: 7x7 patches of a 28x28 image, 8x8 of a 32x32 one.
    patch_size: int = 4
    # Width, blocks and attention heads: 64 / 4 / 4 trains on a CPU; ViT-Tiny is 192 / 12 / 3.
    dim: int = 64
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 2.0
    pool: str = "cls"
    dropout: float = 0.0


@dataclass
class ViTConf(ModelConf):
    input_shape: list[int] = "${dataset.input_shape}"  # type: ignore[assignment]
    options: ViTOptions = field(default_factory=ViTOptions)


@MODELS.register("vit", schema=ViTConf)
def vit(
    num_classes: int,
    image_size: int = 28,
    in_channels: int = 1,
    patch_size: int = 4,
    dim: int = 64,
    depth: int = 4,
    heads: int = 4,
    mlp_ratio: float = 2.0,
    pool: str = "cls",
    dropout: float = 0.0,
) -> ViT:
    """A pre-norm ViT; the image side must be a multiple of the patch size and the width of the
    number of heads."""
    problems = []
    if image_size % patch_size:
        problems.append(f"the image side {image_size} is not a multiple of patch_size={patch_size}")
    if dim % heads:
        problems.append(f"dim={dim} is not a multiple of heads={heads}")
    if pool not in POOLS:
        problems.append(f"pool={pool!r} is not one of {', '.join(POOLS)}")
    if problems:
        raise ConfigError(
            f"model=vit: {'; '.join(problems)}. Set model.options.patch_size, dim, heads and "
            "pool accordingly (e.g. patch_size=4 for 28x28 and 32x32 images, dim=64 heads=4)."
        )
    return ViT(
        num_classes,
        image_size,
        in_channels,
        patch_size,
        dim,
        depth,
        heads,
        mlp_ratio,
        pool,
        dropout,
    )
