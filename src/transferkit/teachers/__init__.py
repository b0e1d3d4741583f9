"""Teachers for distillation: anything that predicts, behind one small contract (see :mod:`.base`).

``load_teacher(spec)`` turns a run folder, a catalog backbone with a head, an ONNX or Keras 3 file, a callable or a
scikit-learn estimator into a :class:`Teacher`; ``teacher_outputs(teacher, ds)`` is the cached mode (outputs kept
in the feature cache, keyed by the teacher's fingerprint and the data).
"""

from .base import Teacher, check_fit, convert_images, log_probabilities
from .cached import teacher_outputs
from .load import load_teacher
from .torch_kinds import TorchTeacher

__all__ = ["Teacher", "TorchTeacher", "check_fit", "convert_images", "load_teacher", "log_probabilities",
           "teacher_outputs"]
