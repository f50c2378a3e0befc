"""segdcn-predict: label maps of images from a checkpoint (PyTorch) or an ONNX file (onnxruntime).

Modules: inputs (image, folder or glob), sources (checkpoint or ONNX file, with the metadata of
segdcn.export.metadata), batches (read, resize like evaluation, group by size), writer (palette PNGs,
overlays, Cityscapes label ids), app (the command).
"""
