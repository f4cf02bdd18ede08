"""Adapter to the pinned OpenMMLab stack (mmdet 3.3, mmseg 1.2, mmaction2 1.2).

Everything that touches their registries lives here; import it only where a
detector, segmentor or recognizer is built.
"""

from frozenbench.openmmlab.backbone import FrozenbenchBackbone
from frozenbench.openmmlab.task_models import build_registered_model, register

__all__ = ["FrozenbenchBackbone", "build_registered_model", "register"]
