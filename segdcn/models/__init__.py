"""DeepLab with deformable ResNet layers (Dai et al. 2017): backbone, heads, builder, parameter groups."""

from .builder import build_backbone, build_model
from .dcn import deformable_layer_names, deformable_layers, make_deformable
from .deeplab import DeepLab, upsample_logits
from .naming import block_name, conv3x3_paths, last_conv3x3_paths, module_path, paper_name
from .norm import FrozenBatchNorm2d
from .param_groups import param_groups
from .pretrained import LoadReport, load_pretrained
from .resnet import ResNet

__all__ = [
    "DeepLab",
    "FrozenBatchNorm2d",
    "LoadReport",
    "ResNet",
    "block_name",
    "build_backbone",
    "build_model",
    "conv3x3_paths",
    "deformable_layer_names",
    "deformable_layers",
    "last_conv3x3_paths",
    "load_pretrained",
    "make_deformable",
    "module_path",
    "paper_name",
    "param_groups",
    "upsample_logits",
]
