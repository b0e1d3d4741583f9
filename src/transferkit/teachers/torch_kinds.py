"""Torch teachers: a saved transferkit model (run folder or ``save()`` folder) or a catalog backbone with a head.

Both become a :class:`~transferkit.model.TransferModel` in evaluation mode with frozen parameters, so they run online
(on the student's own augmented batch, :meth:`TorchTeacher.adapt_batch`) as well as cached, and a feature method can
tap ``teacher.module.backbone`` by module path (:mod:`transferkit.backbones.taps`).

A catalog backbone takes its head from ``head``: a finished run folder / saved model (its head and classes; the head's
input width must be the backbone's feature width), a ``.safetensors`` file with a linear head (``weight`` ``(C, D)``
and ``bias`` ``(C,)``, or the ``head.1.weight`` / ``head.1.bias`` entries of a saved model), or, without ``head``, the
backbone's own source classifier when it has one (the packaged ImageNet MobileNetV2's 1000 classes).

**A catalog teacher with a head** (``mobilenet_v2.imagenet`` + a ``.safetensors`` head) holds its packaged backbone
as :mod:`transferkit.backbones.deferred` does for a probe: from its card in the feature cache, built on its first
forward pass; its fingerprint hashes the backbone's (declared) weights and the head's apart, so it is the same before
and after the build. A head given as a run folder still loads that folder's model to take its head.

**A folder teacher is built only when it has to run** (:class:`FolderTeacher`). Its classes, preprocessing and image
size come from ``model.json``, and its fingerprint (the cached mode's key) from the folder's files: the SHA-256 of
``model.json``'s bytes and of ``model.safetensors``'s bytes. So a second run whose outputs are in the feature cache
never rebuilds the model nor loads its weights: it reads two files through SHA-256 (about 0.2 s for MiniLM's 90 MB
here, against seconds for building it and running it on the data). The bytes are hashed in full on every run, with
no memo keyed by path, size and modification time: such a memo would trust a file rewritten in place with the same
size and a restored mtime, and the hash is cheap next to what it saves. ``model.safetensors`` holds every weight
(``load_model`` loads it strictly) and ``model.json`` the architecture, preprocessing, classes, head and pruned shapes,
so equal files build equal models; what they do not capture is the same as for a model given in memory: the code of
a trusted ``module:`` factory and the contents of the tokenizer files the preprocessing names by path. When the model
is built, the weights file is hashed again; a file that changed in between (another process saving over it) is
refused, so outputs are never stored under the key of other weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..backbones import build_backbone, code_references, feature_backbone
from ..data.base import Dataset
from ..data.preprocessing import Preprocessing
from ..errors import ConfigError, RunError, WeightsError
from ..features.cache import default_cache
from ..features.keys import weights_sha256
from ..io import file_sha256
from ..model import MODEL_META, MODEL_WEIGHTS, TransferModel, load_model, make_head, read_model_meta
from .base import Teacher, convert_images, sha256_text


class TorchTeacher(Teacher):
    """A frozen :class:`TransferModel` as a teacher (kind ``transferkit`` or ``catalog``)."""

    def __init__(self, model: TransferModel, *, kind: str, name: str, known_classes: bool = True) -> None:
        model.requires_grad_(False)
        model.eval()
        self.module = model
        self.kind = kind
        self.name = name
        self.classes = list(model.classes) if known_classes else None
        self.num_outputs = len(model.classes)
        self.preprocessing = model.preprocessing
        self.modality = model.preprocessing.modality
        self.image_size = model.image_size

    @property
    def model(self) -> TransferModel:
        assert isinstance(self.module, TransferModel)
        return self.module

    def fingerprint(self) -> str:
        """Architecture spec, preprocessing, image size, classes and a SHA-256 of every weight tensor, the backbone's
        and the head's apart (recomputed each call, so weights changed in place give a new fingerprint; a packaged
        backbone not built yet answers the hash its card declares, which its build checks)."""
        m = self.model
        return sha256_text("torch-teacher/2", json.dumps(m.backbone.spec(), sort_keys=True, default=str),
                           json.dumps(m.preprocessing.to_dict(), sort_keys=True, default=str), m.image_size,
                           json.dumps(m.classes), m.head_kind, weights_sha256(m.backbone), weights_sha256(m.head))

    def outputs(self, ds: Dataset, *, batch_size: int = 64, progress: bool = False) -> np.ndarray:
        from ..train.inference import predict_logits

        if self.modality != ds.modality:
            raise ConfigError(f"The teacher '{self.name}' takes {self.modality} inputs but the data is {ds.modality}; "
                              "give a teacher for the same kind of data.")
        logits = predict_logits(self.model, ds, batch_size=batch_size, progress=progress)
        return np.ascontiguousarray(logits, dtype=np.float32)

    def online_problem(self, student_pre: Preprocessing) -> str | None:
        """Why the student's batches cannot be fed to this teacher (one sentence), or ``None`` when they can."""
        pre = self.preprocessing
        assert pre is not None
        if pre.modality != student_pre.modality:
            return (f"The teacher '{self.name}' takes {pre.modality} inputs but the student {student_pre.modality}; "
                    "use teacher_mode: cached with a teacher of the same examples, or a teacher of the same modality.")
        if pre.modality == "text" and (pre.tokenizer, pre.max_length) != (student_pre.tokenizer,
                                                                           student_pre.max_length):
            return (f"The text teacher '{self.name}' uses another tokenizer or max_length than the student (the batch "
                    "holds token ids); use teacher_mode: cached.")
        return None

    def adapt_batch(self, x: Any, student_pre: Preprocessing, student_image_size: int | None) -> Any:
        """Images re-normalised and resized from the student's preprocessing to the teacher's; text as is when the
        tokenizers match (else ConfigError: use the cached mode); tabular as is."""
        problem = self.online_problem(student_pre)
        if problem is not None:
            raise ConfigError(problem)
        if self.modality == "image":
            assert self.preprocessing is not None
            return convert_images(x, student_pre, student_image_size, self.preprocessing, self.image_size)
        return x


class FolderTeacher(TorchTeacher):
    """A saved transferkit model (or finished run) folder as a teacher, built on first use (see the module docstring).

    ``module`` (and ``model``) build it; ``classes``, ``preprocessing``, ``image_size``, ``fingerprint()`` and the
    checks of the teacher contract do not. ``builds`` counts the builds (0 after a run served from the cache).
    """

    def __init__(self, folder: str | Path, *, trust_code: bool = False) -> None:
        self.folder = Path(folder)
        self.trust_code = trust_code
        meta_path, weights_path = self.folder / MODEL_META, self.folder / MODEL_WEIGHTS
        if not meta_path.is_file() or not weights_path.is_file():
            raise RunError(f"'{folder}' is not a saved transferkit model (it needs {MODEL_META} and {MODEL_WEIGHTS}); "
                           "point at a finished run folder or a folder written by save().")
        meta = read_model_meta(meta_path)
        named = code_references(meta["backbone"])
        if named and not trust_code:  # refused now, as load_model would, not at the first forward pass
            raise RunError(f"The model folder '{folder}' names the Python callable '{named[0]}' to rebuild its "
                           "backbone, and loading it would import and run that code; pass trust_code=True (command "
                           "line: --trust-code) only if it comes from a source you trust.")
        self.kind, self.name = "transferkit", str(folder)
        self.classes = [str(c) for c in meta["classes"]]
        self.num_outputs = len(self.classes)
        self.preprocessing = Preprocessing.from_dict(meta["preprocessing"])
        self.modality = self.preprocessing.modality
        self.image_size = meta.get("image_size")
        self._module: TransferModel | None = None
        self._files_sha: str | None = None
        self._built_weights = ""
        self.builds = 0

    def _file_hashes(self) -> str:
        return sha256_text("torch-folder-teacher/1", file_sha256(self.folder / MODEL_META),
                           file_sha256(self.folder / MODEL_WEIGHTS))

    @property  # type: ignore[override]
    def module(self) -> TransferModel:
        """The frozen model, built (once) on first access."""
        if self._module is None:
            expected = self._files_sha
            model = load_model(self.folder, trust_code=self.trust_code)
            if expected is not None and self._file_hashes() != expected:
                raise RunError(f"The teacher folder '{self.folder}' changed while it was in use; run again once it "
                               "is written.")
            model.requires_grad_(False)
            model.eval()
            self._module, self._built_weights = model, weights_sha256(model)
            self.preprocessing = model.preprocessing  # load_model may point a moved tokenizer at the packaged one
            self.builds += 1
        return self._module

    @module.setter
    def module(self, value: TransferModel) -> None:
        self._module = value

    def fingerprint(self) -> str:
        """SHA-256 of the folder's ``model.json`` and ``model.safetensors`` bytes (hashed once per teacher object; a
        model built later is checked against it), extended by the weights' hash if the built model's weights were
        changed in memory since."""
        if self._files_sha is None:
            self._files_sha = self._file_hashes()
        if self._module is None:
            return self._files_sha
        now = weights_sha256(self._module)
        return self._files_sha if now == self._built_weights else sha256_text(self._files_sha, now)

    def supports_online(self) -> bool:
        return True

    def online_problem(self, student_pre: Preprocessing) -> str | None:
        pre = self.preprocessing
        if pre is not None and pre.modality == "text" and pre.tokenizer and not Path(pre.tokenizer).exists():
            _ = self.module  # the saved tokenizer path moved: the built model says which tokenizer it uses
        return super().online_problem(student_pre)


def from_folder(folder: str | Path, *, trust_code: bool = False) -> FolderTeacher:
    """A saved transferkit model (or a finished run folder) as a teacher, built on first use."""
    return FolderTeacher(folder, trust_code=trust_code)


def from_catalog(name: str, *, head: str | None = None, classes: list[str] | None = None,
                 trust_code: bool = False) -> TorchTeacher:
    """Catalog backbone ``name`` under ``head`` (see the module docstring). With a head given, a packaged pretrained
    backbone is described from its card in the feature cache and built only when the teacher runs (a cached-mode
    re-run whose outputs are in the cache never builds it); without one, its own classifier needs it built now."""
    backbone = build_backbone(name) if head is None else feature_backbone(name, cards=default_cache().cards_dir)
    dim = backbone.feature_dim
    known = True
    if head is None:
        src = backbone.source_head()
        if src is None:
            raise ConfigError(f"The backbone '{name}' has no classifier of its own; give the teacher a head "
                              "(a run folder or a .safetensors linear head) trained on your classes.")
        src_classes = backbone.source_classes() or classes
        n_out = int(src.out_features) if hasattr(src, "out_features") else None
        if src_classes is None:
            known = False
            src_classes = [str(i) for i in range(n_out or 0)]
        model = TransferModel(backbone, list(src_classes))
        model.head = src
    elif Path(head).is_dir():
        donor = load_model(head, trust_code=trust_code)
        in_dim = _head_in_features(donor.head)
        if in_dim != dim:
            raise ConfigError(f"The head of '{head}' takes {in_dim}-d features but '{name}' gives {dim}-d; give a "
                              "head trained on this backbone.")
        model = TransferModel(backbone, list(donor.classes), head=donor.head_kind, head_hidden=donor.head_hidden)
        model.head = donor.head
    elif str(head).endswith(".safetensors"):
        weight, bias = _linear_head(head)
        if weight.shape[1] != dim:
            raise ConfigError(f"The head '{head}' takes {weight.shape[1]}-d features but '{name}' gives {dim}-d; give "
                              "a head trained on this backbone.")
        n = int(weight.shape[0])
        if classes is not None and len(classes) != n:
            raise ConfigError(f"The head '{head}' has {n} outputs but {len(classes)} class names were given; give "
                              "one name per output.")
        known = classes is not None
        model = TransferModel(backbone, list(classes) if classes is not None else [str(i) for i in range(n)])
        lin = make_head("linear", dim, n)
        lin[1].weight.data.copy_(weight)
        lin[1].bias.data.copy_(bias)
        model.head = lin
    else:
        raise ConfigError(f"The teacher head '{head}' is neither a model folder nor a .safetensors file; give one of "
                          "those.")
    return TorchTeacher(model, kind="catalog", name=name, known_classes=known)


def _head_in_features(head: torch.nn.Module) -> int:
    first = next(m for m in head.modules() if isinstance(m, torch.nn.Linear))
    return int(first.in_features)


def _linear_head(path: str) -> tuple[torch.Tensor, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise ConfigError(f"The teacher head file '{path}' does not exist; give the path of a .safetensors head.")
    try:
        state = load_file(path)
    except (SafetensorError, OSError) as e:
        raise WeightsError(f"'{path}' cannot be read as safetensors ({e}); save the head again.") from None
    for w, b in (("weight", "bias"), ("head.1.weight", "head.1.bias"), ("1.weight", "1.bias")):
        if w in state and b in state and state[w].ndim == 2 and state[b].shape == (state[w].shape[0],):
            return state[w].float(), state[b].float()
    raise WeightsError(f"'{path}' holds no linear head (tensors 'weight' (C, D) and 'bias' (C,)); save the head "
                       "again.")
