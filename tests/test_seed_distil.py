"""SEED similarity-distribution distillation (``seed-distil``): the loss against its formula, the teacher-embedding
queue (filled, wrapped, restored with the method's state), the default layers (the backbones' outputs) and one step's
gradients. The real-data check (on Animal-MNIST the student shares more of a fine-tuned teacher's nearest neighbours
than the same fit without the SEED term) is in :mod:`tests.test_feature_distillation`, beside the other feature
methods."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from tests.test_feature_distillation import _batch, _setup, _student
from transferkit.errors import ConfigError
from transferkit.methods.seed_distil import similarity_distribution_loss
from transferkit.train.schedules import build_optimizer


def test_the_loss_is_the_cross_entropy_of_the_two_similarity_distributions() -> None:
    g = torch.Generator().manual_seed(0)
    s, t, a = (F.normalize(torch.randn(n, 5, generator=g), dim=1) for n in (4, 4, 7))
    p_t = torch.softmax(t @ a.T / 0.1, dim=1)
    by_hand = -(p_t * torch.log_softmax(s @ a.T / 0.2, dim=1)).sum(1).mean()
    assert float(similarity_distribution_loss(s, t, a, 0.2, 0.1)) == pytest.approx(float(by_hand), rel=1e-5)
    # at equal temperatures the student that is the teacher reaches the minimum, the teacher's entropy
    entropy = float(-(p_t * p_t.log()).sum(1).mean())
    assert float(similarity_distribution_loss(t, t, a, 0.1, 0.1)) == pytest.approx(entropy, rel=1e-5)
    assert float(similarity_distribution_loss(s, t, a, 0.1, 0.1)) > entropy + 1e-3


def test_defaults_are_the_backbone_outputs_and_named_layers_resolve() -> None:
    m = _setup("seed-distil", _student(), {})
    assert m.student_paths == [""] and m.teacher_paths == [""]  # what the heads read
    assert m.projection[0].in_features == 16 and m.projection[-1].out_features == 32  # student width -> teacher's
    named = _setup("seed-distil", _student(), {"student_layers": ["b1"], "teacher_layers": ["c1"]})
    assert named.student_paths == ["b1"] and named.teacher_paths == ["c1"]
    assert named.projection[-1].out_features == 24
    with pytest.raises(ConfigError, match="one embedding per example"):
        _setup("seed-distil", _student(), {"student_layers": ["b1", "b2"], "teacher_layers": ["c1", "c2"]})


def test_the_queue_fills_wraps_and_comes_back_with_the_method_state() -> None:
    student = _student()
    m = _setup("seed-distil", student, {"queue": 12})
    m.train_mode(student)
    for i in range(2):  # 8 + 8 examples into 12 slots: full, the cursor wrapped to 4
        m.training_step(student, _batch(seed=i))
    assert int(m.filled) == 12 and int(m.cursor) == 4
    x, _ = _batch(seed=1)
    t_maps, _ = m.teacher_outputs(student, x)
    latest = m._teacher_embedding(t_maps[0], update=False)
    # the second batch went to slots 8-11 and, wrapping, 0-3; slots 4-7 still hold the first batch's last four
    assert torch.allclose(m.anchors[8:], latest[:4], atol=1e-6) and torch.allclose(m.anchors[:4], latest[4:], atol=1e-6)
    assert torch.allclose(m.anchors.norm(dim=1), torch.ones(12))  # normalised teacher embeddings
    state = copy.deepcopy(m.state_dict())
    fresh = _setup("seed-distil", _student(), {"queue": 12})
    fresh.load_state_dict(state)  # a checkpoint restores the anchors, the cursor and the centre
    assert torch.equal(fresh.anchors, m.anchors) and int(fresh.cursor) == 4 and torch.equal(fresh.centre, m.centre)
    with torch.no_grad():  # an evaluation pass moves nothing
        before = m.anchors.clone()
        s_maps, logits = m.student_outputs(student, x)
        m.distil_loss(s_maps, t_maps, logits, logits)
    assert torch.equal(m.anchors, before) and int(m.cursor) == 4


def test_a_step_trains_the_student_and_the_projection_and_leaves_the_teacher() -> None:
    student = _student()
    m = _setup("seed-distil", student, {})
    teacher_before = copy.deepcopy(m.teacher_net.module.state_dict())
    groups = {g["name"]: g for g in m.param_groups(student)}
    own = groups["method.seed-distil"]
    assert own["lr"] == groups["head"]["lr"]
    assert {id(p) for p in own["params"]} == {id(p) for p in m.projection.parameters()}
    m.train_mode(student)
    out = m.training_step(student, _batch())
    assert out.logs["distil"] > 0
    out.loss.backward()
    assert student.backbone.b0[0].weight.grad.abs().sum() > 0
    assert m.projection[0].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in m.teacher_net.parameters())
    build_optimizer(m.param_groups(student), m.train_config).step()
    after = m.teacher_net.module.state_dict()
    assert all(torch.equal(teacher_before[k], after[k]) for k in after)
