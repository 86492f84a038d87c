"""Data: synthetic generator, specs, tiling, and the real formats written here and read back."""
from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from fastprune.data import RandomCrops, SlidingTiles, SyntheticSource, open_dataset, parse_spec, window_starts
from fastprune.data.camvid import PALETTE, VOID
from fastprune.data.synthetic import generate_scene
from fastprune.data.tiff import TiffImage
from fastprune.train import evaluate, evaluate_tiles


def test_synthetic_deterministic_and_plausible():
    a = generate_scene(7, 3, 96)
    b = generate_scene(7, 3, 96)
    c = generate_scene(8, 3, 96)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    img, mask = a
    assert img.shape == (3, 96, 96) and img.dtype == np.float32 and 0 <= img.min() and img.max() <= 1
    assert mask.dtype == np.int64 and set(np.unique(mask)) <= {0, 1}
    _, multi = generate_scene(7, 3, 96, multiclass=True)
    np.testing.assert_array_equal(multi == 1, mask == 1)
    fr = np.mean([generate_scene(0, i, 128)[1].mean() for i in range(12)])
    assert 0.05 < fr < 0.35  # buildings are a minority class, as in Inria (~15%)
    multis = np.concatenate([generate_scene(0, i, 128, multiclass=True)[1].ravel() for i in range(6)])
    assert set(np.unique(multis)) == {0, 1, 2, 3}


def test_buildings_differ_from_background_in_colour_and_shadow():
    img, mask = generate_scene(1, 0, 256)
    gray = img.mean(0)
    # shadows: darkest pixels lie next to buildings (within 8 px), not at random
    dark = gray < np.quantile(gray, 0.02)
    near = np.zeros_like(mask, bool)
    ys, xs = np.nonzero(mask)
    for dy in range(-8, 9, 2):
        for dx in range(-8, 9, 2):
            near[np.clip(ys + dy, 0, 255), np.clip(xs + dx, 0, 255)] = True
    assert dark[near].mean() > 3 * dark[~near].mean()


def test_specs_and_options():
    assert parse_spec("synthetic:n=4,size=64,seed=2,classes=multiclass") == \
        ("synthetic", None, {"n": 4, "size": 64, "seed": 2, "classes": "multiclass"})
    assert parse_spec("inria:/data/train") == ("inria", "/data/train", {})
    ds = open_dataset("synthetic:n=3,size=40", seed=5)
    assert len(ds) == 3 and ds.num_classes == 2
    x, y = ds[1]
    assert x.dtype == torch.float32 and x.shape == (3, 40, 40) and y.dtype == torch.int64 and y.shape == (40, 40)
    torch.testing.assert_close(x, torch.from_numpy(generate_scene(5, 1, 40)[0]))
    assert open_dataset("synthetic:classes=multiclass,n=2,size=32").num_classes == 4
    for bad in ("", "imagenet:/x", "inria", "synthetic:n", "synthetic:n=2,bogus=1"):
        with pytest.raises(ValueError):
            open_dataset(bad)


@pytest.mark.parametrize("length,tile,stride", [(100, 32, 32), (100, 32, 24), (32, 32, 8), (20, 32, 8), (101, 50, 50)])
def test_window_starts_cover(length, tile, stride):
    s = window_starts(length, tile, stride)
    covered = np.zeros(length, bool)
    for a in s:
        covered[a:a + min(tile, length)] = True
        assert a + min(tile, length) <= length
    assert covered.all() and s == sorted(set(s))


def test_sliding_tiles_and_random_crops():
    src = SyntheticSource(n=2, size=70, seed=1)
    tiles = SlidingTiles(src, 32, 24)
    img, mask = src.read(1)
    for k, (i, y, x, h, w) in enumerate(tiles.windows):
        if i == 1:
            xi, yi = tiles[k]
            np.testing.assert_array_equal(xi.numpy(), img[:, y:y + h, x:x + w])
            np.testing.assert_array_equal(yi.numpy(), mask[y:y + h, x:x + w])
    crops = RandomCrops(src, 32, samples=5, seed=3)
    a = [crops[k][0] for k in range(5)]
    assert all(torch.equal(p, crops[k][0]) for k, p in enumerate(a))
    crops.set_epoch(1)
    assert not all(torch.equal(p, crops[k][0]) for k, p in enumerate(a))
    ds = open_dataset("synthetic:n=2,size=70", tile=32)
    assert isinstance(ds, RandomCrops) and len(ds) == 2 * 4
    assert isinstance(open_dataset("synthetic:n=2,size=70", tile=32, stride=16), SlidingTiles)
    with pytest.raises(ValueError, match="smaller than tile"):
        RandomCrops(src, 80)


def _write_inria(root, layout="inria", **kw):
    img_dir, lab_dir = ("images", "gt") if layout == "inria" else ("image", "label")
    (root / img_dir).mkdir(parents=True)
    (root / lab_dir).mkdir()
    rng = np.random.default_rng(0)
    out = {}
    for name, (h, w), opts in (("austin1", (150, 130), dict(tile=(32, 32), compression="zlib")),
                               ("chicago2", (97, 111), dict(rowsperstrip=8, compression="zlib")),
                               ("kitsap3", (64, 80), {})):
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        mask = (rng.random((h, w)) < 0.3).astype(np.uint8) * (255 if layout == "inria" else 1)
        tifffile.imwrite(root / img_dir / f"{name}.tif", img, photometric="rgb", **opts, **kw)
        tifffile.imwrite(root / lab_dir / f"{name}.tif", mask, **opts)
        out[name] = (img, mask)
    return out


@pytest.mark.parametrize("layout", ["inria", "airs"])
def test_aerial_folders_read_back(tmp_path, layout):
    truth = _write_inria(tmp_path, layout)
    whole = open_dataset(f"{layout}:{tmp_path}")
    assert len(whole) == 3 and whole.num_classes == 2
    for i, name in enumerate(sorted(truth)):
        img, mask = truth[name]
        x, y = whole[i]
        np.testing.assert_allclose(x.numpy(), img.transpose(2, 0, 1) / 255.0, atol=1e-7)
        np.testing.assert_array_equal(y.numpy(), (mask > 0).astype(np.int64))
    tiles = open_dataset(f"{layout}:{tmp_path}", tile=48, stride=40)
    src = tiles.source
    for k in range(0, len(tiles), 3):
        i, y0, x0, h, w = tiles.windows[k]
        img, mask = truth[src.name(i)]
        x, y = tiles[k]
        np.testing.assert_allclose(x.numpy(), img[y0:y0 + h, x0:x0 + w].transpose(2, 0, 1) / 255.0, atol=1e-7)
        np.testing.assert_array_equal(y.numpy(), mask[y0:y0 + h, x0:x0 + w] > 0)
    # tiled / striped files were read by segment, never decoded whole
    assert all(t._full is None for t in src._open.values())


def test_airs_vis_labels_used_when_plain_missing(tmp_path):
    (tmp_path / "image").mkdir()
    (tmp_path / "label").mkdir()
    img = np.full((40, 40, 3), 100, np.uint8)
    vis = np.zeros((40, 40), np.uint8)
    vis[5:15, 5:25] = 255
    tifffile.imwrite(tmp_path / "image" / "christchurch_1.tif", img, photometric="rgb")
    tifffile.imwrite(tmp_path / "label" / "christchurch_1_vis.tif", vis)
    ds = open_dataset(f"airs:{tmp_path}")
    assert int(ds[0][1].sum()) == 200


def test_bad_aerial_files_name_the_file(tmp_path):
    _write_inria(tmp_path)
    bad = tmp_path / "images" / "austin1.tif"
    bad.write_bytes(b"this is not a tiff at all")
    with pytest.raises(ValueError, match="austin1.tif"):
        open_dataset(f"inria:{tmp_path}")
    # mask of the wrong size
    tifffile.imwrite(bad, np.zeros((150, 130, 3), np.uint8), photometric="rgb")
    tifffile.imwrite(tmp_path / "gt" / "chicago2.tif", np.zeros((96, 111), np.uint8))
    with pytest.raises(ValueError, match="chicago2.tif"):
        open_dataset(f"inria:{tmp_path}")
    tifffile.imwrite(tmp_path / "gt" / "chicago2.tif", np.zeros((97, 111), np.uint8))
    # truncated compressed data: the header parses, the pixels do not
    data = (np.random.default_rng(1).integers(0, 256, (150, 130, 3))).astype(np.uint8)
    tifffile.imwrite(bad, data, photometric="rgb", tile=(32, 32), compression="zlib")
    raw = bad.read_bytes()
    with tifffile.TiffFile(bad) as t:
        off = t.pages.first.dataoffsets[0]
    bad.write_bytes(raw[:off + 10] + b"\0" * (len(raw) - off - 10))
    ds = open_dataset(f"inria:{tmp_path}")
    with pytest.raises(ValueError, match="austin1.tif"):
        ds[0]
    # missing mask, missing folder
    (tmp_path / "gt" / "kitsap3.tif").unlink()
    with pytest.raises(ValueError, match="kitsap3"):
        open_dataset(f"inria:{tmp_path}")
    with pytest.raises(ValueError, match="gt"):
        open_dataset(f"inria:{tmp_path / 'images'}")


def _camvid_label(rng, h, w):
    colours = list(PALETTE)
    idx = rng.integers(0, len(colours), (h, w))
    rgb = np.array(colours, np.uint8)[idx]
    cls = np.array([PALETTE[c] for c in colours])[idx]
    return rgb, cls


@pytest.mark.parametrize("layout", ["kaggle", "plain", "annot"])
def test_camvid_read_back(tmp_path, layout):
    rng = np.random.default_rng(2)
    img_dir, lab_dir, suffix = {"kaggle": ("train", "train_labels", "_L"), "plain": ("images", "labels", ""),
                                "annot": ("train", "trainannot", "")}[layout]
    (tmp_path / img_dir).mkdir()
    (tmp_path / lab_dir).mkdir()
    truth = {}
    for name in ("0001TP_006690", "Seq05VD_f00000"):
        img = rng.integers(0, 256, (36, 48, 3), dtype=np.uint8)
        rgb, cls = _camvid_label(rng, 36, 48)
        Image.fromarray(img).save(tmp_path / img_dir / f"{name}.png")
        if layout == "annot":
            Image.fromarray(cls.astype(np.uint8), mode="L").save(tmp_path / lab_dir / f"{name}.png")
        else:
            Image.fromarray(rgb).save(tmp_path / lab_dir / f"{name}{suffix}.png")
        truth[name] = (img, cls)
    ds = open_dataset(f"camvid:{tmp_path}")
    assert ds.num_classes == 12 and ds.ignore_index == VOID and ds.classes[1] == "building"
    for i, name in enumerate(sorted(truth)):
        x, y = ds[i]
        np.testing.assert_allclose(x.numpy(), truth[name][0].transpose(2, 0, 1) / 255.0, atol=1e-7)
        np.testing.assert_array_equal(y.numpy(), truth[name][1])


def test_camvid_palette_grouping_spot_checks():
    assert PALETTE[(128, 0, 0)] == 1 and PALETTE[(64, 192, 0)] == 1      # Building, Wall
    assert PALETTE[(64, 128, 192)] == 8 and PALETTE[(0, 0, 192)] == 4    # SUVPickupTruck, Sidewalk
    assert PALETTE[(0, 0, 0)] == VOID and len(PALETTE) == 32 + 2


def test_camvid_bad_colour_names_file(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "images" / "a.png")
    lab = np.zeros((8, 8, 3), np.uint8)
    lab[3, 4] = (1, 2, 3)
    Image.fromarray(lab).save(tmp_path / "labels" / "a.png")
    ds = open_dataset(f"camvid:{tmp_path}")
    with pytest.raises(ValueError, match=r"a\.png.*\(1, 2, 3\)"):
        ds[0]
    Image.fromarray(np.zeros((9, 8, 3), np.uint8)).save(tmp_path / "labels" / "a.png")
    with pytest.raises(ValueError, match="a.png"):
        open_dataset(f"camvid:{tmp_path}")


def test_full_tile_evaluation_stitches_exactly():
    """A pixel-wise model gives the same answer tile by tile as on the whole scene, so the
    stitched full-tile metrics equal whole-image metrics exactly (oracle); a model with
    context still covers every pixel once stitched."""
    torch.manual_seed(0)
    data = open_dataset("synthetic:n=3,size=100,seed=2")
    pointwise = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1))
    whole = evaluate(pointwise, data)
    tiled = evaluate_tiles(pointwise, data, tile=48, overlap=12)
    assert tiled["confusion"] == whole["confusion"]
    assert set(tiled["per_scene"]) == {f"synthetic-2-{i}" for i in range(3)}
    assert sum(map(sum, tiled["confusion"])) == 3 * 100 * 100
    with pytest.raises(ValueError, match="overlap"):
        evaluate_tiles(pointwise, data, tile=48, overlap=48)



@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(h=st.integers(1, 90), w=st.integers(1, 90), bands=st.sampled_from([0, 3, 4]),
       dtype=st.sampled_from([np.uint8, np.uint16]),
       layout=st.sampled_from(["plain", "strips", "tiles", "tiles-zlib", "strips-zlib", "planar"]),
       data=st.data())
def test_tiff_windows_match_numpy_slices(tmp_path_factory, h, w, bands, dtype, layout, data):
    rng = np.random.default_rng(h * 1000 + w)
    shape = (h, w) if bands == 0 else (h, w, bands)
    a = rng.integers(0, np.iinfo(dtype).max, shape, dtype=dtype)
    path = tmp_path_factory.mktemp("tif") / "a.tif"
    opts = {"plain": {}, "strips": dict(rowsperstrip=7), "tiles": dict(tile=(16, 32)),
            "tiles-zlib": dict(tile=(32, 16), compression="zlib"),
            "strips-zlib": dict(rowsperstrip=5, compression="zlib"),
            "planar": dict(planarconfig="separate", rowsperstrip=9)}[layout]
    if layout == "planar" and bands == 0:
        opts = {}
    photometric = "rgb" if bands == 3 or (bands == 4 and layout != "planar") else "minisblack"
    if bands == 4:
        opts = {**opts, "extrasamples": ["unassalpha"]} if photometric == "rgb" else opts
    planes = layout == "planar" and bands > 0
    # separate planes are written as TIFF stores them, (S, H, W); TiffImage reads (H, W, S)
    tifffile.imwrite(path, np.ascontiguousarray(np.moveaxis(a, -1, 0)) if planes else a,
                     photometric=photometric, **opts)
    t = TiffImage(path)
    assert t.shape == a.shape
    for _ in range(3):
        y = data.draw(st.integers(0, h - 1))
        x = data.draw(st.integers(0, w - 1))
        hh = data.draw(st.integers(1, h - y))
        ww = data.draw(st.integers(1, w - x))
        np.testing.assert_array_equal(t.read((y, x, hh, ww)), a[y:y + hh, x:x + ww])
    with pytest.raises(ValueError, match="outside"):
        t.read((0, 0, h + 1, w))
    t.close()
