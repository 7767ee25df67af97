"""Training for people (docs/people.md): writer-style digits and non-digits join the training
set (`digitlab.train.PeopleConfig`), and non-digits are taught to give no digit."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from digitlab import train as tr  # noqa: E402


def test_people_digits_and_non_digits_join_the_training_set() -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (100, 28, 28), dtype=np.uint8)
    y = np.arange(100) % 10
    people = tr.PeopleConfig(varied=500, styles=100, non_digits=50, seed=1)
    images, labels = tr.with_people(x, y, people, quick=True)  # a fiftieth: 10 + 2 + 6 x 1
    n_non_digits = int((labels == tr.NON_DIGIT).sum())
    assert n_non_digits == 6  # one drawing of each family of digitlab.negatives
    assert len(images) == len(labels) == 100 + 10 + 2 + n_non_digits
    np.testing.assert_array_equal(images[:100], x)  # the digits themselves come first, as given
    assert set(labels[100:112].tolist()) <= set(range(10))
    assert all(images[i].any() for i in range(100, len(images)))  # every added one has ink
    again, _ = tr.with_people(x, y, people, quick=True)
    np.testing.assert_array_equal(again, images)  # made from the seed: a resumed run sees them


def test_a_non_digit_is_taught_the_uniform_distribution() -> None:
    cfg = tr.replace(tr.CPU_PEOPLE, label_smoothing=0.0)
    flat = torch.zeros(1, 10)
    sure = torch.tensor([[10.0] + [0.0] * 9])
    non_digit = torch.tensor([tr.NON_DIGIT])
    # For a non-digit the loss is least when no digit stands out: log(10), times the weight.
    w = cfg.people.non_digit_weight
    assert tr.training_loss(flat, non_digit, None, cfg).item() == pytest.approx(w * np.log(10))
    assert tr.training_loss(sure, non_digit, None, cfg) > tr.training_loss(
        flat, non_digit, None, cfg
    )
    # Digits alone: the plain cross-entropy, as before.
    digits = torch.tensor([0])
    plain = torch.nn.functional.cross_entropy(sure, digits)
    assert tr.training_loss(sure, digits, None, cfg).item() == pytest.approx(plain.item())
    # A mixed batch: the digits' share of their loss plus the non-digits' term.
    both = tr.training_loss(torch.cat([sure, flat]), torch.tensor([0, tr.NON_DIGIT]), None, cfg)
    assert both.item() == pytest.approx(0.5 * plain.item() + w * np.log(10) / 2)
