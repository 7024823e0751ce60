"""The digits data and training: fixed split, reproducible training, trained once then cached."""
from __future__ import annotations

import numpy as np
import torch

from infermatrix.models import digits


def test_split_is_fixed_and_stratified():
    x_train, y_train, x_test, y_test = digits.split()
    again = digits.split()
    np.testing.assert_array_equal(x_test, again[2])
    assert x_train.shape[1:] == (1, 8, 8) and len(x_test) == 450 and 0.0 <= x_train.min() and x_train.max() <= 1.0
    assert np.bincount(y_test).min() >= 43  # stratified: every class ~10 % of the 450


def test_training_is_bitwise_reproducible():
    recipe = digits.Recipe("t", train_fraction=0.05, epochs=2)
    a, b = digits.train(recipe), digits.train(recipe)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_trained_weights_are_cached_by_recipe(tmp_path, monkeypatch):
    calls = []
    real = digits.train
    monkeypatch.setitem(digits.RECIPES, "quick", digits.Recipe("quick", train_fraction=0.05, epochs=2))
    monkeypatch.setattr(digits, "train", lambda r: calls.append(r) or real(r))
    first = digits.trained_model("quick", tmp_path)
    second = digits.trained_model("quick", tmp_path)
    assert len(calls) == 1
    assert all(torch.equal(first.state_dict()[k], second.state_dict()[k]) for k in first.state_dict())
    assert list((tmp_path / "trained").glob("*/model.safetensors"))
