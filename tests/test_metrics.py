"""The identity / constant scores on hand-built outputs whose answers are known."""

import pytest
import torch

from lightning_modules.metrics import VERDICTS, IdentityScores, pearson, per_image_scores


def images(n=4, seed=0):
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


def test_pearson_matches_numpy_corrcoef_and_ignores_affine_maps():
    a, b = images(3, 0), images(3, 1)
    expected = torch.tensor(
        [
            torch.corrcoef(torch.stack([x.flatten(), y.flatten()]))[0, 1]
            for x, y in zip(a, b, strict=True)
        ]
    )
    assert torch.allclose(pearson(a, b), expected, atol=1e-6)
    assert torch.allclose(pearson(a, 3 * a + 0.5), torch.ones(3), atol=1e-6)
    assert torch.allclose(pearson(a, -a), -torch.ones(3), atol=1e-6)


def test_flat_output_correlates_zero_and_gets_no_verdict():
    inputs, train = images(2, 0), images(1, 1).expand(2, -1, -1, -1)
    flat = torch.full_like(inputs, 0.3)
    scores = per_image_scores(inputs, flat, train)
    assert torch.equal(scores["identity_corr"], torch.zeros(2))
    assert torch.equal(scores["constant_corr"], torch.zeros(2))
    assert scores["flat"].all()
    assert [VERDICTS[v] for v in scores["verdict"]] == ["neither", "neither"]
    assert torch.allclose(scores["mse_identity"], (inputs - 0.3).pow(2).flatten(1).mean(1))


def test_verdicts_identity_constant_neither():
    inputs, train = images(3, 0), images(1, 1).expand(3, -1, -1, -1)
    noise = images(3, 2)
    outputs = torch.stack([inputs[0], train[1], noise[2]])
    verdicts = [VERDICTS[v] for v in per_image_scores(inputs, outputs, train)["verdict"]]
    assert verdicts == ["identity", "constant", "neither"]
    # A blurred identity below the threshold is "neither".
    blurred = 0.5 * inputs + 0.5 * noise
    assert VERDICTS[per_image_scores(inputs[:1], blurred[:1], train[:1])["verdict"][0]] == "neither"


def test_metric_accumulates_batches_to_the_per_image_mean():
    inputs, train = images(6, 0), images(1, 1).expand(6, -1, -1, -1)
    outputs = torch.cat([inputs[:2], train[:2], images(2, 5)])
    metric = IdentityScores()
    metric.update(inputs[:4], outputs[:4], train[:4])
    metric.update(inputs[4:], outputs[4:], train[4:])
    result = metric.compute()
    per_image = per_image_scores(inputs, outputs, train)
    for key in IdentityScores.MEANS:
        assert result[key] == pytest.approx(per_image[key].mean().item(), abs=1e-6)
    assert result["frac_identity"] == pytest.approx(2 / 6)
    assert result["frac_constant"] == pytest.approx(2 / 6)
    assert result["frac_neither"] == pytest.approx(2 / 6)
    metric.reset()
    assert metric.count == 0
