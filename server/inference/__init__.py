"""Hosted models: inference tasks (template-method hooks over MONAI), weights and the inference service.

- ``task.InferTask``: load, ``pre_transforms``, ``inferer``, invert, ``post_transforms``, ``writer``.
- ``segmentation.SegmentationTask`` and ``classification.ClassificationTask``: the two kinds apps use.
- ``networks`` / ``transfer``: network factories and transfer-learning helpers, shared with training.
- ``service.InferenceService`` (``Services.inference``): bounded queue, thread pool, cached
  networks per (model, version, device), the registry checked on every request.
"""
