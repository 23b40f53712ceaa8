"""The stdlib PNG decoder and the deterministic print variants fed to virtual_image."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from cardap_sim.biometric import (
    PRINT_NAMES,
    blurred,
    cropped,
    nist_print,
    read_print,
    rotated,
    shifted,
    variants,
    write_pgm,
)


@pytest.mark.parametrize("name", PRINT_NAMES)
def test_decodes_alpha_channel(name: str) -> None:
    """Each NIST PNG decodes to a grey image whose print has real contrast."""
    img = nist_print(name)
    assert 200 < img.width <= 300
    assert 200 < img.height <= 300
    assert len(img.pixels) == img.width * img.height
    assert max(img.pixels) - min(img.pixels) > 100


def test_frame_layout() -> None:
    """A frame is (width, height) as two native ints, then the grey bytes."""
    img = nist_print("arch")
    frame = img.frame()
    assert struct.unpack("ii", frame[:8]) == (img.width, img.height)
    assert frame[8:] == img.pixels


def test_variants_are_deterministic_and_distinct() -> None:
    """Variants are the same on every run and differ from the original and each other."""
    img = nist_print("whorl")
    first, second = variants(img), variants(img)
    assert first == second
    assert len({v.pixels for v in first} | {img.pixels}) == len(first) + 1


def test_transforms_keep_or_shrink_size() -> None:
    """Rotation, shift and blur keep the size; crop removes the margins."""
    img = nist_print("arch")
    for out in (rotated(img, 3.0), shifted(img, 4, -2), blurred(img)):
        assert (out.width, out.height) == (img.width, img.height)
    small = cropped(img, 2, 3, 4, 5)
    assert (small.width, small.height) == (img.width - 6, img.height - 8)
    assert small.at(0, 0, -1) == img.at(2, 3, -1)


def test_rejects_non_png(tmp_path: Path) -> None:
    """A file that is not a PNG is refused, not misread."""
    bad = tmp_path / "x.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(ValueError, match="not a PNG"):
        read_print(bad)


def test_pgm_for_inspection(tmp_path: Path) -> None:
    """A variant can be saved as PGM to look at."""
    out = write_pgm(nist_print("arch"), tmp_path / "arch.pgm")
    assert out.read_bytes().startswith(b"P5\n256 240\n255\n")
