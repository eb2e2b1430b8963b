"""Drop-in adapters for the peers' APIs: change one import, keep the call.

=====================================  ================================================================
module                                 replaces
=====================================  ================================================================
:mod:`h4d_fast.compat.aniposelib`      ``aniposelib.cameras.CameraGroup.triangulate`` / ``triangulate_ransac``
:mod:`h4d_fast.compat.pose2sim`        ``Pose2Sim.triangulation.triangulate_all`` (``Pose2Sim.triangulation()``)
:mod:`h4d_fast.compat.cocoeval`        ``pycocotools`` / ``xtcocotools`` ``COCOeval`` (keypoints: ``computeOks``)
:mod:`h4d_fast.compat.egohumans`       the EgoHumans / Harmony4D ``Triangulator`` (``lib/utils/triangulation.py``)
=====================================  ================================================================

Each module's docstring states what the original computes, how it is matched, and any documented
difference; the tests compare each with the original package where it installs
(``pip install "h4d_fast[compat]"``) and skip with the reason where it does not.
"""
