"""python -m segdcn.predict ckpt=...|onnx=...|program=... input=... (see segdcn.predict.app)."""

from segdcn.predict.app import main

if __name__ == "__main__":
    main()
