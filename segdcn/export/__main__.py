"""python -m segdcn.export ckpt=... format=onnx|torch_export|all (see segdcn.export.app)."""

from segdcn.export.app import main

if __name__ == "__main__":
    main()
