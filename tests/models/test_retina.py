"""The retinal transform: geometry, sampling density, crop equivalence, maps back to the image."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from bioattn.errors import BioattnError
from bioattn.models.retina import Retina, coordinate_grid, falloff_for_field, retina


def _pixel_centre(i: int, n: int) -> float:
    return (2 * i + 1) / n - 1


@pytest.mark.parametrize("antialias", [True, False])
def test_fixation_point_maps_to_output_centre(antialias):
    torch.manual_seed(0)
    img = torch.randn(3, 2, 48, 64)
    # fixations on pixel centres; an odd retina has a pixel at its exact centre
    cols, rows = [10, 40, 63], [5, 24, 47]
    fix = torch.tensor([[_pixel_centre(c, 64), _pixel_centre(r, 48)] for c, r in zip(cols, rows)])
    out = retina(img, fix, 33, fovea=0.4, falloff=4.0, antialias=antialias)
    assert out.shape == (3, 2, 33, 33)
    for b, (c, r) in enumerate(zip(cols, rows)):
        torch.testing.assert_close(out[b, :, 16, 16], img[b, :, r, c], atol=1e-5, rtol=0)

    r = Retina(33, fovea=0.4, falloff=4.0)
    centre = torch.zeros(3, 2)
    torch.testing.assert_close(r.to_image(centre, fix, (48, 64)), fix)
    torch.testing.assert_close(r.to_retina(fix, fix, (48, 64)), torch.zeros(3, 2))


def test_inverse_mapping_round_trip():
    torch.manual_seed(1)
    r = Retina(32, fovea=0.3, falloff=5.0, scale=1.5)
    fix = torch.rand(4, 1, 2) * 2 - 1
    u = torch.rand(4, 50, 2) * 2.8 - 1.4  # also beyond the retinal square
    p = r.to_image(u, fix, (40, 72))
    torch.testing.assert_close(r.to_retina(p, fix, (40, 72)), u, atol=1e-5, rtol=1e-5)


def test_sampling_density_decreases_with_eccentricity():
    r = Retina(32, fovea=0.5, falloff=4.0, scale=1.0)
    grid = r.grid(torch.zeros(1, 2), (64, 64))  # (1, 32, 32, 2)
    # image pixel coordinates of the samples along the row through the centre, right half
    xs = (grid[0, 16, 16:, 0] + 1) / 2 * 64
    gaps = xs[1:] - xs[:-1]
    u = torch.tensor([_pixel_centre(i, 32) for i in range(16, 32)])
    inside = u[1:] <= 0.5
    # full resolution in the fovea: one image pixel per retinal pixel
    torch.testing.assert_close(gaps[inside], torch.ones(int(inside.sum())), atol=1e-4, rtol=0)
    outside = gaps[~inside]
    assert outside.numel() > 3
    assert bool((outside[1:] > outside[:-1]).all()), "spacing must grow beyond the fovea"
    assert float(outside[-1]) > 4 * float(gaps[0])
    # the analytic spacing agrees and is monotone in eccentricity
    rho = torch.linspace(0, 1.4, 50)
    spacing = r.spacing(rho)
    assert bool((spacing[1:] >= spacing[:-1]).all())
    assert float(spacing[0]) == pytest.approx(1.0)


def test_no_falloff_is_a_plain_crop():
    torch.manual_seed(2)
    img = torch.randn(2, 3, 64, 80)
    # fixation x = -0.5 -> pixel column 20, y = 0.25 -> pixel row 40 (boundaries between pixels)
    fix = torch.tensor([[0.0, 0.0], [-0.5, 0.25]])
    out = retina(img, fix, 16, falloff=0.0, scale=1.0)
    torch.testing.assert_close(out[0], img[0, :, 24:40, 32:48], atol=1e-5, rtol=0)
    torch.testing.assert_close(out[1], img[1, :, 32:48, 12:28], atol=1e-5, rtol=0)
    for antialias in (True, False):  # a 2x down-scaled crop, checked against F.interpolate
        out2 = retina(img, fix, 16, falloff=0.0, scale=2.0, antialias=antialias)
        ref0 = F.interpolate(img[:1, :, 16:48, 24:56], size=(16, 16), mode="bilinear", align_corners=False)
        ref1 = F.interpolate(img[1:, :, 24:56, 4:36], size=(16, 16), mode="bilinear", align_corners=False)
        torch.testing.assert_close(out2, torch.cat([ref0, ref1]), atol=1e-5, rtol=0)


def test_periphery_is_blurred_not_aliased():
    # a one-pixel checkerboard: its local mean is 0.5 everywhere
    yy, xx = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    board = ((xx + yy) % 2).float()[None, None]
    fix = torch.zeros(1, 2)
    sharp = retina(board, fix, 32, fovea=0.3, falloff=5.0, antialias=False)
    soft = retina(board, fix, 32, fovea=0.3, falloff=5.0, antialias=True)
    rho = coordinate_grid(32, 32).norm(dim=-1)
    # periphery with a sample spacing of 2 to 3 image pixels, inside the image
    ring = (rho > 0.45) & (rho < 0.6)
    assert int(ring.sum()) > 50
    assert float((soft[0, 0][ring] - 0.5).abs().max()) < 0.01
    assert float((sharp[0, 0][ring] - 0.5).abs().mean()) > 0.06
    fovea = rho < 0.25
    torch.testing.assert_close(soft[0, 0][fovea], sharp[0, 0][fovea])


def test_falloff_for_field_reaches_the_field():
    a = falloff_for_field(2.0, 0.5, 0.5)
    r = Retina(32, fovea=0.5, falloff=a)
    edge = r.to_image(torch.tensor([[1.0, 0.0]]), torch.zeros(1, 2), (64, 64))
    assert float(edge[0, 0]) == pytest.approx(2.0, rel=1e-5)
    assert falloff_for_field(0.5, 0.5, 0.5) == 0.0
    with pytest.raises(BioattnError, match="smaller than"):
        falloff_for_field(0.2, 0.5, 0.5)


def test_maps_go_back_to_image_coordinates():
    """A retinal map holding each pixel's image coordinates, carried back to a grid over the
    image (inverse mapping), reads each cell's own coordinates; remapping it into another
    fixation's frame reads the new frame's coordinates where the old retina saw the point."""
    r = Retina(64, fovea=0.5, falloff=3.0)
    hw = (64, 64)
    old = torch.tensor([[0.2, -0.1]])
    new = torch.tensor([[-0.3, 0.25]])
    coords_old = r.grid(old, hw).permute(0, 3, 1, 2)  # (1, 2, 64, 64) image coordinates
    back = r.to_image_grid(coords_old, old, hw, (16, 16))
    cells = coordinate_grid(16, 16).permute(2, 0, 1)[None]
    inside = r.retinal_coordinates_of(old, hw, (16, 16)).abs().amax(-1) < 0.95
    err = (back - cells).norm(dim=1)[inside]
    assert float(err.max()) < 0.03

    moved = r.remap(coords_old, old, new, hw)
    coords_new = r.grid(new, hw).permute(0, 3, 1, 2)
    seen = r.to_retina(r.grid(new, hw), old[:, None, None], hw).abs().amax(-1) < 0.95
    err = (moved - coords_new).norm(dim=1)[seen]
    assert seen.float().mean() > 0.3
    assert float(err.max()) < 0.05


def test_gradient_reaches_the_image():
    img = torch.randn(2, 3, 40, 40, requires_grad=True)
    out = retina(img, torch.tensor([[0.1, -0.2], [0.9, 0.9]]), 24, falloff=3.0)
    out.square().sum().backward()
    assert torch.isfinite(img.grad).all()
    assert float(img.grad.abs().sum()) > 0


def test_bad_input():
    img = torch.randn(2, 3, 32, 32)
    with pytest.raises(BioattnError, match="outside the image"):
        retina(img, torch.tensor([[0.0, 0.0], [1.2, 0.0]]), 16)
    with pytest.raises(BioattnError, match="outside the image"):
        retina(img, torch.tensor([[0.0, float("nan")], [0.0, 0.0]]), 16)
    with pytest.raises(BioattnError, match=r"\(B, 2\)"):
        retina(img, torch.zeros(2, 3), 16)
    with pytest.raises(BioattnError, match="2 images"):
        retina(img, torch.zeros(3, 2), 16)
    with pytest.raises(BioattnError, match="smaller than the retina"):
        retina(img, torch.zeros(2, 2), 48)
    with pytest.raises(BioattnError, match=r"\(B, C, H, W\)"):
        retina(img[0], torch.zeros(2, 2), 16)
    with pytest.raises(BioattnError, match="falloff"):
        Retina(16, falloff=-1.0)
    with pytest.raises(BioattnError, match="out_size"):
        Retina(0)
    # the edge of the image is a valid fixation
    assert retina(img, torch.tensor([[1.0, -1.0], [-1.0, 1.0]]), 16).shape == (2, 3, 16, 16)
    assert math.isfinite(float(retina(img, torch.ones(2, 2), 16).sum()))
