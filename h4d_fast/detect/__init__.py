"""Stage 0: 2D keypoints from the cameras' images (frames in, person boxes, top-down pose models).

:mod:`h4d_fast.detect.api` defines what a pose model and a person detector are; the models live
in :mod:`h4d_fast.detect.models`, the stage around them in :mod:`h4d_fast.pipeline.detect`.
"""
