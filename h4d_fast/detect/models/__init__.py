"""Pose models and person detectors of the image stage (see :mod:`h4d_fast.detect.api`)."""
