"""segdcn: semantic segmentation with deformable convolution (Dai et al., ICCV 2017)."""

__version__ = "0.1.0"
