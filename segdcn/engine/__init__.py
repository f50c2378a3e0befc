"""The engine: training loop, evaluation (mIoU), checkpoints, distributed helpers, lr schedules.

Modules are imported by name (`from segdcn.engine.checkpoint import load_checkpoint`), so importing
one does not pull in the others.
"""
