"""How mmdet / mmseg pipelines read images and COCO files in frozenbench.

* ``LoadImageFrozenbench``: mmcv's ``LoadImageFromFile`` with the decoding of
  :func:`frozenbench.data.images.decode_image` (the one reader of every task). mmcv's default
  ``color_type='color'`` decodes with OpenCV's ``IMREAD_COLOR``, which applies an EXIF orientation
  tag, while COCO annotations and ADE20K label maps are in the stored frame: phone photos would
  train on pixels rotated away from their labels. Here the stored frame is read, in the BGR order
  mmcv's loader gives (the detectors' and segmentors' preprocessors convert to RGB).
* ``FrozenbenchCocoDataset``: mmdet's CocoDataset with training label ``k`` = the ``k``-th category
  id in increasing order, the mapping the evaluator and the test-dev writer use
  (:func:`frozenbench.evaluation.coco.category_ids`). mmdet's own mapping follows the order the
  json lists its categories in, so a json listed out of id order trained every class under
  another's label and was scored wrong.
"""

from __future__ import annotations

import numpy as np
from mmcv.transforms import LoadImageFromFile
from mmdet.datasets import CocoDataset
from mmdet.datasets.api_wrappers import COCO
from mmengine import fileio

from frozenbench.data.images import ImageError, decode_image
from frozenbench.evaluation.coco import category_ids


class LoadImageFrozenbench(LoadImageFromFile):
    """Reads ``results['img_path']`` through frozenbench's image reader; ``apply_orientation``
    as :data:`frozenbench.data.formats.ORIENTATION_BY_FORMAT` says for the dataset's format."""

    def __init__(self, apply_orientation: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.apply_orientation = apply_orientation

    def transform(self, results: dict) -> dict:
        filename = results["img_path"]
        try:
            data = fileio.get(filename, backend_args=self.backend_args)
        except OSError as err:
            raise ImageError(filename, f"cannot read ({err.strerror or err})") from None
        img = np.ascontiguousarray(decode_image(data, filename, self.apply_orientation)[..., ::-1])
        if self.to_float32:
            img = img.astype(np.float32)
        results["img"] = img
        results["img_shape"] = results["ori_shape"] = img.shape[:2]
        return results


class _IdOrderedCOCO(COCO):
    def get_cat_ids(self, cat_names=None, sup_names=None, cat_ids=None) -> list[int]:
        chosen = set(super().get_cat_ids(cat_names or [], sup_names or [], cat_ids or []))
        return [cid for cid in category_ids(self.dataset["categories"]) if cid in chosen]


class FrozenbenchCocoDataset(CocoDataset):
    """CocoDataset whose labels follow the category ids in increasing order, whatever the json's order."""

    COCOAPI = _IdOrderedCOCO


def register_loading() -> None:
    """Register the loader and the dataset in the registries of mmdet and mmseg (idempotent)."""
    from mmdet.registry import DATASETS as MMDET_DATASETS
    from mmdet.registry import TRANSFORMS as MMDET_TRANSFORMS
    from mmseg.registry import TRANSFORMS as MMSEG_TRANSFORMS

    for registry in (MMDET_TRANSFORMS, MMSEG_TRANSFORMS):
        registry.register_module(name="LoadImageFrozenbench", module=LoadImageFrozenbench, force=True)
    MMDET_DATASETS.register_module(name="FrozenbenchCocoDataset", module=FrozenbenchCocoDataset, force=True)
