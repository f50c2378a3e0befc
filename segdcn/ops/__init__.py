"""Deformable operators: functional API, modules, reference and build facts."""

from . import reference
from ._extension import build_info
from .deform_conv import deform_conv2d
from .modules import DeformConv2d

__all__ = ["DeformConv2d", "build_info", "deform_conv2d", "reference"]
