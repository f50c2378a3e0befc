"""nn.Modules of deformable RoI pooling: the plain op, the paper's Pack (offsets predicted from
the RoI's own features), its modulated variant, and R-FCN's position-sensitive form."""

from __future__ import annotations

from torch import Tensor, nn

from ._checks import pair
from .deform_roi_pool import deform_ps_roi_pool, deform_roi_pool


class DeformRoIPool(nn.Module):
    """deform_roi_pool with fixed output size, scale, sampling ratio and gamma; offsets are given."""

    def __init__(self, output_size, spatial_scale: float = 1.0, sampling_ratio: int = 0, gamma: float = 0.1):
        super().__init__()
        self.output_size = pair(output_size, "output_size", 1)
        self.spatial_scale = spatial_scale
        self.sampling_ratio = sampling_ratio
        self.gamma = gamma

    def forward(self, input: Tensor, rois: Tensor, offset: Tensor | None = None) -> Tensor:
        return deform_roi_pool(
            input, rois, offset, self.output_size, self.spatial_scale, self.sampling_ratio, self.gamma
        )

    def extra_repr(self) -> str:
        return (
            f"output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
            f"sampling_ratio={self.sampling_ratio}, gamma={self.gamma}"
        )


def _fc_head(in_features: int, hidden: int, out_features: int) -> nn.Sequential:
    """fc-ReLU-fc-ReLU-fc with the last layer zero-initialised, so a fresh head predicts zeros."""
    head = nn.Sequential(
        nn.Linear(in_features, hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, out_features),
    )
    nn.init.zeros_(head[-1].weight)
    nn.init.zeros_(head[-1].bias)
    return head


class DeformRoIPoolPack(DeformRoIPool):
    """The paper's deformable RoI pooling: pool without offsets, predict normalised offsets from
    the pooled features with `offset_fc` (fc layers of `deform_fc_channels`), pool again.

    The last fc layer starts at zero, so a fresh module equals plain RoIAlign pooling.
    """

    def __init__(
        self,
        output_size,
        output_channels: int,
        deform_fc_channels: int = 1024,
        spatial_scale: float = 1.0,
        sampling_ratio: int = 0,
        gamma: float = 0.1,
    ):
        super().__init__(output_size, spatial_scale, sampling_ratio, gamma)
        self.output_channels = output_channels
        bins = self.output_size[0] * self.output_size[1]
        self.offset_fc = _fc_head(bins * output_channels, deform_fc_channels, 2 * bins)

    def forward(self, input: Tensor, rois: Tensor) -> Tensor:
        pooled = super().forward(input, rois)
        offset = self.offset_fc(pooled.flatten(1)).view(rois.shape[0], 2, *self.output_size)
        return super().forward(input, rois, offset)


class ModulatedDeformRoIPoolPack(DeformRoIPoolPack):
    """DCNv2's variant: also a mask per bin, from `mask_fc` through a sigmoid (0.5 at init)."""

    def __init__(
        self,
        output_size,
        output_channels: int,
        deform_fc_channels: int = 1024,
        spatial_scale: float = 1.0,
        sampling_ratio: int = 0,
        gamma: float = 0.1,
    ):
        super().__init__(output_size, output_channels, deform_fc_channels, spatial_scale, sampling_ratio, gamma)
        bins = self.output_size[0] * self.output_size[1]
        self.mask_fc = nn.Sequential(
            nn.Linear(bins * output_channels, deform_fc_channels),
            nn.ReLU(inplace=True),
            nn.Linear(deform_fc_channels, bins),
        )
        nn.init.zeros_(self.mask_fc[-1].weight)
        nn.init.zeros_(self.mask_fc[-1].bias)

    def forward(self, input: Tensor, rois: Tensor) -> Tensor:
        pooled = DeformRoIPool.forward(self, input, rois)
        features = pooled.flatten(1)
        offset = self.offset_fc(features).view(rois.shape[0], 2, *self.output_size)
        mask = self.mask_fc(features).sigmoid().view(rois.shape[0], 1, *self.output_size)
        return DeformRoIPool.forward(self, input, rois, offset) * mask


class DeformPSRoIPool(nn.Module):
    """R-FCN's deformable position-sensitive RoI pooling (see deform_ps_roi_pool); offsets are
    given, e.g. from the same op without offsets over a 2 * classes * part_size^2-channel conv."""

    def __init__(
        self,
        output_size: int,
        output_dim: int,
        group_size: int | None = None,
        part_size: int | None = None,
        spatial_scale: float = 1.0,
        sample_per_part: int = 0,
        trans_std: float = 0.1,
    ):
        super().__init__()
        self.output_size = output_size
        self.output_dim = output_dim
        self.group_size = output_size if group_size is None else group_size
        self.part_size = output_size if part_size is None else part_size
        self.spatial_scale = spatial_scale
        self.sample_per_part = sample_per_part
        self.trans_std = trans_std

    def forward(self, input: Tensor, rois: Tensor, offset: Tensor | None = None) -> Tensor:
        return deform_ps_roi_pool(
            input, rois, offset, self.output_size, self.spatial_scale, self.output_dim, self.group_size,
            self.part_size, self.sample_per_part, self.trans_std,
        )  # fmt: skip

    def extra_repr(self) -> str:
        return (
            f"output_size={self.output_size}, output_dim={self.output_dim}, group_size={self.group_size}, "
            f"part_size={self.part_size}, spatial_scale={self.spatial_scale}, "
            f"sample_per_part={self.sample_per_part}, trans_std={self.trans_std}"
        )
