"""Distillation: the loss itself and its use in ``ClassifierModule``."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from alphaprune.errors import UserError
from alphaprune.train.losses import distillation_loss
from alphaprune.train.module import ClassifierModule


def _hand_kd(student: torch.Tensor, teacher: torch.Tensor, t: float) -> float:
    """T^2 * mean over the batch of sum_c p_t log(p_t / p_s), p = softmax(logits / T)."""
    total = 0.0
    for s_row, t_row in zip(student.double().tolist(), teacher.double().tolist()):
        def softmax(row):
            m = max(row)
            e = [math.exp((v - m) / t) for v in row]
            return [v / sum(e) for v in e]
        ps, pt = softmax(s_row), softmax(t_row)
        total += sum(a * math.log(a / b) for a, b in zip(pt, ps))
    return t * t * total / len(student)


@pytest.mark.parametrize("t", [0.5, 1.0, 2.0, 4.0])
def test_zero_for_equal_logits(t):
    logits = torch.randn(6, 10) * 3
    assert float(distillation_loss(logits, logits.clone(), t)) == pytest.approx(0.0, abs=1e-6)
    # shifting every logit of a row by a constant changes nothing either
    assert float(distillation_loss(logits + 5.0, logits, t)) == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize("t", [0.5, 1.0, 2.0, 4.0, 10.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_hand_computation(t, seed):
    g = torch.Generator().manual_seed(seed)
    student, teacher = torch.randn(5, 7, generator=g) * 2, torch.randn(5, 7, generator=g) * 2
    got = float(distillation_loss(student, teacher, t))
    assert got > 0
    assert got == pytest.approx(_hand_kd(student, teacher, t), rel=1e-4, abs=1e-7)


def test_direction_is_teacher_to_student():
    """KL(teacher || student), not the reverse (the two differ for these logits)."""
    student = torch.tensor([[4.0, 0.0, 0.0]])
    teacher = torch.tensor([[1.0, 0.5, 0.0]])
    fwd, rev = _hand_kd(student, teacher, 1.0), _hand_kd(teacher, student, 1.0)
    assert abs(fwd - rev) > 0.1
    assert float(distillation_loss(student, teacher, 1.0)) == pytest.approx(fwd, rel=1e-5)


@pytest.mark.parametrize("t", [2.0, 3.0, 8.0])
def test_scales_as_t_squared_times_kl(t):
    student, teacher = torch.randn(4, 10), torch.randn(4, 10)
    kl = F.kl_div(F.log_softmax(student / t, 1), F.softmax(teacher / t, 1), reduction="sum") / 4
    assert float(distillation_loss(student, teacher, t)) == pytest.approx(t * t * float(kl),
                                                                          rel=1e-5)


def test_is_a_batch_mean():
    student, teacher = torch.randn(3, 5), torch.randn(3, 5)
    per_row = [float(distillation_loss(student[i:i + 1], teacher[i:i + 1], 2.0)) for i in range(3)]
    assert float(distillation_loss(student, teacher, 2.0)) == pytest.approx(sum(per_row) / 3,
                                                                            rel=1e-5)


def test_gradient_flows_to_the_student_only():
    student = torch.randn(4, 6, requires_grad=True)
    teacher = torch.randn(4, 6, requires_grad=True)
    distillation_loss(student, teacher.detach(), 3.0).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0


# --------------------------------------------------------------------------- ClassifierModule


class _Net(nn.Module):
    def __init__(self, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        return self.fc(x)


def _batch():
    g = torch.Generator().manual_seed(3)
    return torch.randn(6, 8, generator=g), torch.randint(0, 5, (6,), generator=g)


@pytest.mark.parametrize("distill, t", [(0.5, 4.0), (0.25, 2.0), (1.0, 1.0), (0.9, 3.0)])
def test_training_loss_blends_ce_and_kd(distill, t):
    student, teacher = _Net(0), _Net(1)
    module = ClassifierModule(student, teacher=teacher, distill=distill, temperature=t)
    x, y = _batch()
    logits = module(x)
    loss, ce = module.training_loss(logits, x, y)
    with torch.no_grad():
        t_logits = teacher(x)
    want_ce = F.cross_entropy(logits, y)
    want_kd = _hand_kd(logits.detach(), t_logits, t)
    assert float(ce) == pytest.approx(float(want_ce), rel=1e-6)
    assert float(loss) == pytest.approx((1 - distill) * float(want_ce) + distill * want_kd,
                                        rel=1e-5)
    assert want_kd > 1e-3 and abs(float(loss) - float(ce)) > 1e-4  # sharp
    loss.backward()  # trains the student, not the teacher
    assert student.fc.weight.grad is not None
    assert teacher.fc.weight.grad is None


@pytest.mark.parametrize("with_teacher", [False, True])
def test_no_distillation_is_plain_cross_entropy(with_teacher):
    module = ClassifierModule(_Net(0), teacher=_Net(1) if with_teacher else None, distill=0.0)
    x, y = _batch()
    logits = module(x)
    loss, ce = module.training_loss(logits, x, y)
    assert torch.equal(loss, ce)
    assert float(ce) == pytest.approx(float(F.cross_entropy(logits, y)))


@pytest.mark.parametrize("kwargs, flag", [
    ({"distill": 1.5}, "--distill"),
    ({"distill": -0.1}, "--distill"),
    ({"distill": 1.0001}, "--distill"),
    ({"distill": 0.5, "temperature": 0.0}, "--temperature"),
    ({"distill": 0.5, "temperature": -2.0}, "--temperature"),
])
def test_bad_settings_raise_user_error(kwargs, flag):
    with pytest.raises(UserError, match=flag):
        ClassifierModule(_Net(0), teacher=_Net(1), **kwargs)


@pytest.mark.parametrize("distill", [0.0, 1.0])
def test_range_ends_are_allowed(distill):
    module = ClassifierModule(_Net(0), teacher=_Net(1), distill=distill)
    assert module.distill == distill


def test_teacher_is_frozen_and_not_part_of_the_module():
    student, teacher = _Net(0), _Net(1)
    teacher.train()
    module = ClassifierModule(student, teacher=teacher, distill=0.5)
    student_ids = {id(p) for p in student.parameters()}
    teacher_ids = {id(p) for p in teacher.parameters()}
    assert {id(p) for p in module.parameters()} == student_ids
    assert not teacher_ids & {id(p) for p in module.parameters()}
    assert set(module.state_dict()) == {f"model.{k}" for k in student.state_dict()}
    assert all(teacher is not m for m in module.modules())
    assert not any(p.requires_grad for p in teacher.parameters())
    module.train()  # putting the module in training mode leaves the teacher in eval
    assert module.model.training and not teacher.training
    # the teacher's weights are untouched by a training step on the student
    before = teacher.fc.weight.clone()
    opt = torch.optim.SGD(module.parameters(), lr=0.5)
    x, y = _batch()
    module.training_loss(module(x), x, y)[0].backward()
    opt.step()
    assert torch.equal(teacher.fc.weight, before)
