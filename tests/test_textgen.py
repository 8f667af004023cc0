"""Text generation from a character LM: the same characters as an independent cold-start greedy
loop, reproducible sampling, clear errors, and the `analogeq generate` command."""

import json

import pytest
import torch
from analogeq.integrators import Status

from analogeq.cli import main
from analogeq.model import EquilibriumTransformer, ModelConfig
from analogeq.tasks import TEXT_ALPHABET, _encode
from analogeq.textgen import generate
from analogeq.train import save_model


def lm(context=8, seed=0):
    cfg = ModelConfig(vocab_size=len(TEXT_ALPHABET), d_model=16, n_heads=2, context=context,
                      ffn_mult=2, dtype=torch.float64)
    return EquilibriumTransformer(cfg, seed=seed).eval()


@torch.no_grad()
def reference_greedy(model, prompt, n):
    """Cold start every step, a tight IMEX relaxation (not the generator's Anderson), argmax."""
    ids = _encode(prompt).tolist()
    for _ in range(n):
        window = torch.tensor(ids[-model.config.context:])[None]
        res = model.settle(window, "imex", tol=1e-11, max_steps=5000)
        assert res.status is Status.CONVERGED
        ids.append(int(model.readout(res.z)[0, -1].argmax()))
    return "".join(TEXT_ALPHABET[i] for i in ids[len(prompt):])


def test_greedy_generation_matches_an_independent_cold_start_loop():
    model = lm()
    # prompt shorter than the context: the warm-started growing window, then the sliding one
    sample = generate(model, "abc", 12, temperature=0, tol=1e-10, max_steps=500)
    assert sample.text == reference_greedy(model, "abc", 12)
    assert sample.unsettled == 0 and len(sample.statuses) == 12
    assert sample.nfe > 12


def test_sampling_is_reproducible_per_seed_and_differs_between_seeds():
    model = lm(seed=1)
    a = generate(model, "The ", 30, temperature=1.0, seed=3)
    b = generate(model, "The ", 30, temperature=1.0, seed=3)
    c = generate(model, "The ", 30, temperature=1.0, seed=4)
    assert a.text == b.text and a.text != c.text
    assert set(a.text) <= set(TEXT_ALPHABET)
    assert a.prompt == "The "


def test_unknown_prompt_characters_fold_like_the_task():
    sample = generate(lm(), "\u201cx\u00e9", 1, temperature=0)
    assert sample.prompt == '"x?'


def test_bad_arguments_name_themselves():
    model = lm()
    with pytest.raises(ValueError, match="prompt"):
        generate(model, "", 3)
    with pytest.raises(ValueError, match="n_chars"):
        generate(model, "a", 0)
    with pytest.raises(ValueError, match="temperature"):
        generate(model, "a", 2, temperature=-1.0)
    with pytest.raises(ValueError, match="seed"):
        generate(model, "a", 2, seed=-1)
    digits_like = EquilibriumTransformer(ModelConfig(
        vocab_size=None, input_dim=8, n_classes=10, d_model=16, n_heads=2, context=8), seed=0)
    with pytest.raises(ValueError, match="language model"):
        generate(digits_like, "a", 2)
    with pytest.raises(TypeError, match="model"):
        generate(object(), "a", 2)


def test_generate_command_prints_and_writes_json(tmp_path, capsys):
    path = save_model(tmp_path / "lm.pt", lm(), task="text")
    out = tmp_path / "sample.json"
    code = main(["generate", str(path), "--prompt", "ab", "--chars", "5", "--temperature", "0",
                 "--json", str(out)])
    assert code == 0
    data = json.loads(out.read_text())
    assert data["chars"] == 5 and data["prompt"] == "ab"
    assert capsys.readouterr().out.startswith("ab" + data["text"])
    with pytest.raises(SystemExit, match="no such file"):
        main(["generate", str(tmp_path / "missing.pt")])
    with pytest.raises(SystemExit) as exc:
        main(["generate", "--help"])
    assert exc.value.code == 0
