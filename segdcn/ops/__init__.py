"""Deformable operators: functional API, modules, reference and build facts."""

from . import reference
from ._extension import build_info, deform_conv2d_plan
from .deform_conv import deform_conv2d
from .deform_roi_pool import deform_ps_roi_pool, deform_roi_pool
from .modules import DeformConv2d
from .roi_modules import DeformPSRoIPool, DeformRoIPool, DeformRoIPoolPack, ModulatedDeformRoIPoolPack

__all__ = [
    "DeformConv2d",
    "DeformPSRoIPool",
    "DeformRoIPool",
    "DeformRoIPoolPack",
    "ModulatedDeformRoIPoolPack",
    "build_info",
    "deform_conv2d",
    "deform_conv2d_plan",
    "deform_ps_roi_pool",
    "deform_roi_pool",
    "reference",
]
