"""Serve a model over HTTP: ``transferkit serve RUN_OR_EXPORT`` (FastAPI + uvicorn, 127.0.0.1 unless told otherwise).

Endpoints (see :mod:`.app`): ``POST /predict`` (multipart images in ``file`` / ``files``, or JSON ``{"text": ...}``,
``{"texts": [...]}``, ``{"rows": [[...]]}``) answers the top-k classes with probabilities per input; ``GET /health``;
``GET /metadata`` (classes, preprocessing, model sha256, engine, modality, settings); ``GET /stats`` (requests,
forward passes and the batch sizes seen). Concurrent requests are micro-batched into one forward (:mod:`.batching`).

What it serves (:mod:`.predictors`):

* a run folder or a folder written by ``TransferClassifier.save`` (``model.json`` + ``model.safetensors``), in
  PyTorch through ``TransferClassifier.load(...).predict_proba``;
* an exported folder, in ONNX Runtime. Its layout (the one ``transferkit export`` writes):

  - ``model.onnx``: one input, ``x`` float32 ``(N, 3, S, S)`` for images (already resized and normalised) or
    ``(N, F)`` for tables, or the tokenizer's ``input_ids`` / ``attention_mask`` (/ ``token_type_ids``) int64
    ``(N, L)`` for text; the first output is the logits ``(N, C)`` (or probabilities, see ``output``).
  - ``export.json``: ``{"classes": [...], "preprocessing": {...}, "image_size": S, "output": "logits"}`` where
    ``preprocessing`` is :meth:`transferkit.data.preprocessing.Preprocessing.to_dict` (modality, image_size, mean,
    std, tokenizer, max_length), ``image_size`` is optional (default: the preprocessing's) and ``output`` is
    ``"logits"`` (default) or ``"probabilities"``. Other keys are ignored.

Images are decoded and prepared by the toolkit's own loader code (``open_image``, the evaluation transform, the
``BatchNormalizer``), so a served prediction is the one ``transferkit predict`` gives for the same file.
"""

from __future__ import annotations

from .app import ServeSettings, create_app
from .batching import Batcher
from .predictors import BadInput, OnnxPredictor, Predictor, TorchPredictor, load_predictor
from .server import DEFAULT_HOST, serve

__all__ = ["DEFAULT_HOST", "BadInput", "Batcher", "OnnxPredictor", "Predictor", "ServeSettings", "TorchPredictor",
           "create_app", "load_predictor", "serve"]
