"""Bundled tasks: documented shapes, fixed splits, a stateless sampler (no downloads)."""

import numpy as np
import pytest
import torch

from analogeq.tasks import TEXT_ALPHABET, digits, get_task, synthetic, text


def test_digits_shapes_and_fixed_split():
    from sklearn.datasets import load_digits

    t = digits()
    assert t.kind == "classify"
    assert tuple(t.train_inputs.shape) == (1437, 8, 8)
    assert tuple(t.test_inputs.shape) == (360, 8, 8)
    assert t.train_inputs.dtype == torch.float32 and t.train_targets.dtype == torch.int64
    assert t.model_fields["n_classes"] == 10 and t.model_fields["input_dim"] == 8
    # independent reference: the split is numpy RandomState(0)'s permutation, rows are tokens
    raw = load_digits()
    perm = np.random.RandomState(0).permutation(1797)
    np.testing.assert_array_equal(t.test_targets.numpy(), raw.target[perm[:360]])
    img = raw.images[perm[0]]
    mean, std = raw.images[perm[360:]].mean(), raw.images[perm[360:]].std()
    np.testing.assert_allclose(t.test_inputs[0].numpy(), (img - mean) / std, rtol=1e-5, atol=1e-6)
    assert torch.equal(digits().train_inputs, t.train_inputs)  # fixed across calls
    assert set(t.test_targets.tolist()) == set(range(10))


def test_classify_batches_are_epochs_of_a_permutation():
    t = synthetic(n_train=20)
    seen = torch.cat([t.batch(s, 5, seed=3)[1] for s in range(4)])  # one epoch in 4 batches
    xs = torch.cat([t.batch(s, 5, seed=3)[0] for s in range(4)])
    # every training sample exactly once per epoch
    order = [int(torch.nonzero((t.train_inputs == x).all(-1).all(-1))[0]) for x in xs]
    assert sorted(order) == list(range(20))
    assert torch.equal(seen, t.train_targets[order])
    # stateless: the same (step, batch, seed) gives the same batch; another seed another order
    assert torch.equal(t.batch(2, 5, seed=3)[0], t.batch(2, 5, seed=3)[0])
    assert not torch.equal(t.batch(0, 5, seed=3)[0], t.batch(0, 5, seed=4)[0])
    # a batch straddling an epoch boundary has the right size
    assert t.batch(3, 7, seed=0)[0].shape[0] == 7


def test_text_shapes_split_and_targets_shifted():
    t = text(context=64, n_eval=16)
    assert t.kind == "lm" and t.model_fields["vocab_size"] == len(TEXT_ALPHABET) == 96
    x, y = t.batch(0, 4, seed=0)
    assert tuple(x.shape) == tuple(y.shape) == (4, 64)
    assert torch.equal(x[:, 1:], y[:, :-1])  # next-character targets
    assert int(x.min()) >= 0 and int(x.max()) < 96
    assert tuple(t.test_inputs.shape) == (16, 64)
    # the validation windows come from the last 10 % of the corpus, disjoint from training
    from pydoc_data.topics import topics

    corpus = "".join(topics[k] for k in sorted(topics))
    n = t.info["n_chars"]
    assert t.info["n_train_chars"] == int(n * 0.9) and t.n_train == t.info["n_train_chars"]
    assert corpus[:200].isascii() and "\t" not in corpus[:200]
    assert t.decode(t.train_text[:200]) == corpus[:200]
    assert torch.equal(text(context=64, n_eval=16).test_inputs, t.test_inputs)


def test_text_encoding_folds_to_ascii():
    t = text(context=8, n_eval=2)
    assert t.decode(t.encode("a\u201cb\u201d\u2014\n")) == 'a"b"-\n'
    assert t.decode(t.encode("\u00df")) == "?"


def test_synthetic_is_learnable_by_its_teacher_and_fixed():
    t = synthetic()
    assert tuple(t.train_inputs.shape) == (256, 4, 4) and tuple(t.test_inputs.shape) == (128, 4, 4)
    norms = torch.linalg.vector_norm(t.train_inputs, dim=-1)
    torch.testing.assert_close(norms, torch.full_like(norms, 2.0))
    counts = torch.bincount(t.train_targets, minlength=3)
    assert (counts > 30).all()  # no degenerate class
    assert torch.equal(synthetic().test_inputs, t.test_inputs)


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="task must be one of"):
        get_task("mnist")
    with pytest.raises(ValueError, match="step"):
        synthetic().batch(-1, 4)
    with pytest.raises(ValueError, match="batch_size"):
        synthetic().batch(0, 0)
    with pytest.raises(ValueError, match="split"):
        next(text(context=8, n_eval=2).eval_batches("train"))


def test_shift_augmentation_is_a_whole_pixel_shift_with_blank_fill():
    from analogeq.tasks import shift_images

    gen = torch.Generator().manual_seed(0)
    images = torch.rand(200, 8, 8) + 1.0  # no pixel equals the background
    out = shift_images(images, gen, background=-3.0)
    seen = set()
    for img, got in zip(images.numpy(), out.numpy(), strict=True):
        matches = []
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                ref = np.full((10, 10), -3.0, dtype=np.float32)
                ref[1:9, 1:9] = img
                # output pixel (i, j) reads padded (i + 1 + dy, j + 1 + dx)
                if np.array_equal(ref[1 + dy:9 + dy, 1 + dx:9 + dx], got):
                    matches.append((dy, dx))
        assert len(matches) == 1
        seen.add(matches[0])
    assert len(seen) == 9  # every offset in -1..1 x -1..1 occurs
    with pytest.raises(ValueError, match="images"):
        shift_images(torch.zeros(8, 8), gen, background=0.0)
    with pytest.raises(ValueError, match="max_shift"):
        shift_images(images, gen, background=0.0, max_shift=-1)


def test_augmented_batches_are_reproducible_and_keep_labels():
    task = digits()
    x0, y0 = task.batch(3, 32, 1)
    xa, ya = task.batch(3, 32, 1, augment=True)
    xb, _ = task.batch(3, 32, 1, augment=True)
    assert torch.equal(y0, ya) and torch.equal(xa, xb)
    assert not torch.equal(x0, xa)
    background = (0.0 - task.info["pixel_mean"]) / task.info["pixel_std"]
    assert torch.isclose(xa.min(), torch.tensor(background, dtype=xa.dtype), atol=1e-6)
    with pytest.raises(ValueError, match="augment"):
        synthetic().batch(0, 4, augment=True)
