"""CoDA views and the grid localisation score."""

import numpy as np
import pytest
from glasszoo.zoo.coda import views as coda_plots
from glasszoo.explain.localisation import cell_box, compose_grid, positive_share_in_cell


def test_compose_grid_is_row_major():
    images = np.arange(4, dtype="float32")[:, None, None, None] * np.ones((4, 2, 3, 1), "float32")
    grid = compose_grid(images, 2)
    assert grid.shape == (4, 6, 1)
    assert grid[0, 0, 0] == 0 and grid[0, 3, 0] == 1 and grid[2, 0, 0] == 2 and grid[3, 5, 0] == 3
    assert cell_box(3, 2, 2, 3) == (2, 3, 4, 6)
    with pytest.raises(ValueError, match="needs 9 images"):
        compose_grid(images, 3)


def test_positive_share_in_cell():
    contribution = np.zeros((6, 6))
    contribution[0:3, 3:6] = 1.0  # cell 1 of a 2x2 grid of 3x3 tiles
    contribution[4, 1] = 3.0  # cell 2
    contribution[5, 5] = -50.0  # negative evidence is ignored
    assert positive_share_in_cell(contribution, 1, 2) == pytest.approx(9 / 12)
    assert positive_share_in_cell(contribution, 2, 2) == pytest.approx(3 / 12)
    assert positive_share_in_cell(-np.ones((6, 6)), 0, 2) == 0.0


def test_views_draw_and_save(tiny_coda, samples, tmp_path):
    images, labels = samples[0], samples[1]
    figure = coda_plots.contribution_view(tiny_coda, images[0], path=tmp_path / "view.png")
    assert (tmp_path / "view.png").stat().st_size > 0 and len(figure.axes) == 4  # 3 panels + colorbar
    figure = coda_plots.contribution_view(tiny_coda, images[0], classes=[1, 2, 3])
    assert len(figure.axes) == 5
    with pytest.raises(ValueError, match="class"):
        coda_plots.contribution_view(tiny_coda, images[0], classes=[0, 12])
    coda_plots.contribution_view(tiny_coda, images[1], overlay=True, path=tmp_path / "overlay.png")
    coda_plots.contribution_grid(tiny_coda, images[:3], overlay=True, path=tmp_path / "grid.png")
    assert (tmp_path / "grid.png").exists()


def test_localisation_view_scores_each_cell(tiny_coda, samples, tmp_path):
    images, labels = samples[0], samples[1]
    first = [int(np.flatnonzero(labels == c)[0]) for c in range(4)]
    figure, scores = coda_plots.localisation_view(tiny_coda, images[first], labels[first], rows=2, path=tmp_path / "loc.png")
    assert scores.shape == (4,) and ((scores >= 0) & (scores <= 1)).all()
    assert (tmp_path / "loc.png").exists()
    with pytest.raises(ValueError, match="different classes"):
        coda_plots.localisation_view(tiny_coda, images[[first[0]] * 4], labels[[first[0]] * 4], rows=2)
