"""segdcn-predict: label maps of images from a checkpoint (PyTorch), an ONNX file (onnxruntime) or a
torch.export program.

Modules: inputs (image, folder or glob), sources (checkpoint, ONNX file or program, with the metadata of
segdcn.export.metadata), batches (read, resize like evaluation, group by size), writer (palette PNGs,
overlays, Cityscapes label ids), app (the command).
"""
