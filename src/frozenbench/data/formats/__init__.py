"""The dataset formats frozenbench reads, one module each: where a format's files lie, how its class
names are read, whether its images are read with their EXIF orientation applied, its validator, and
the writers that the mini datasets (:mod:`frozenbench.data.synth`) and the preparation of real
downloads (:mod:`frozenbench.data.prepare`) share.

Every module here imports only the standard library and frozenbench's own small modules (numpy,
PIL and PyAV load when a dataset is validated, pycocotools when COCO class names are read): the
Snakefile and the config checks may import them. A new format is a new module with the same names
(``validate``, ``class_names``, ``APPLY_EXIF_ORIENTATION`` for an image format, its layout
constants), listed in :data:`MODULES`.
"""

from __future__ import annotations

from types import ModuleType

from frozenbench.data.formats import ade, coco, imagefolder, kinetics

MODULES: dict[str, ModuleType] = {"coco": coco, "ade": ade, "kinetics": kinetics, "imagefolder": imagefolder}

# Whether each image format's reader applies the EXIF orientation (the frame its labels are drawn
# in; each module says why). Video formats have none.
ORIENTATION_BY_FORMAT: dict[str, bool] = {
    name: module.APPLY_EXIF_ORIENTATION for name, module in MODULES.items() if hasattr(module, "APPLY_EXIF_ORIENTATION")
}
