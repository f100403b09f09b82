"""The original study's segmentation route, one package: ``nnunet-raw``, ``nnunet-qc``, ``nnunet-refined``.

``vertebrae`` (smp U-Net on SPIDER) -> ``pseudo_masks`` (coordinates painted on the
annotated slices; the regions themselves in ``painting``) -> ``qc`` (plausibility per series)
-> ``dataset``/``trainer``/``predictor`` (nnU-Net v2 export, plan, train, predict; a training's
``schedule`` and checkpoint sidecar) -> ``grading`` (probabilities -> 25 x 3 per study).
``approach`` wires them into the three registered approaches (their settings in ``configs``);
each stage is cached by the harness's :mod:`lumbar_bench.core.stage_cache`.
"""
