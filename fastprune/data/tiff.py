"""Windowed reads of (large) TIFF files without loading more than the window needs.

- Uncompressed contiguous images: memory-mapped (``tifffile.memmap``), a window is a slice.
- Tiled or striped images (compressed or not, chunky samples): only the tiles / strips that
  intersect the window are read from disk and decoded (``TiffPage.decode``).
- Anything else: the page is decoded once and kept while the reader lives.
Separate sample planes (planar configuration 2, e.g. GDAL's band-interleaved GeoTIFFs) are
stored (S, H, W) and read as (H, W, S) like every other layout.
Every failure is a ``ValueError`` naming the file.
"""
from __future__ import annotations

import os

import numpy as np
import tifffile


class TiffImage:
    """One TIFF's first page as an (H, W[, S]) array readable by window ``(y, x, h, w)``."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = str(path)
        try:
            self._tif = tifffile.TiffFile(self.path)
            page = self._tif.pages.first
            self.shape: tuple[int, ...] = tuple(int(s) for s in page.shape)
            # separate planes: page.shape is (S, H, W); windows are (H, W, S) like chunky data
            self._planes = page.planarconfig == 2 and len(self.shape) == 3
            if self._planes:
                self.shape = self.shape[1:] + self.shape[:1]
            self.dtype = np.dtype(page.dtype)
        except Exception as e:  # noqa: BLE001 - any parse failure is a bad file
            raise ValueError(f"{self.path}: not a readable TIFF ({type(e).__name__}: {e})") from None
        if len(self.shape) not in (2, 3) or min(self.shape[:2]) < 1:
            self.close()
            raise ValueError(f"{self.path}: expected a 2-D image (H, W[, samples]), got shape {self.shape}")
        self._page = page
        self._mm: np.ndarray | None = None
        self._full: np.ndarray | None = None
        self._segments = False
        try:
            if page.is_memmappable:
                mm = tifffile.memmap(self.path, mode="r")
                self._mm = np.moveaxis(mm, 0, -1) if self._planes else mm
            elif page.planarconfig == 1 or len(self.shape) == 2:
                ch = tuple(page.chunked)
                self._segments = len(ch) == 2 or (len(ch) == 3 and ch[-1] == 1)
        except Exception:  # noqa: BLE001 - fall back to decoding the page
            self._mm, self._segments = None, False

    @property
    def height(self) -> int:
        return self.shape[0]

    @property
    def width(self) -> int:
        return self.shape[1]

    def close(self) -> None:
        self._mm = None
        self._full = None
        tif = getattr(self, "_tif", None)
        if tif is not None:
            tif.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass

    def read(self, window: tuple[int, int, int, int] | None = None) -> np.ndarray:
        """The window ``(y, x, h, w)`` (whole image if None) as a new array (H, W[, S])."""
        y, x, h, w = (0, 0, self.height, self.width) if window is None else window
        if h < 1 or w < 1 or y < 0 or x < 0 or y + h > self.height or x + w > self.width:
            raise ValueError(f"{self.path}: window {(y, x, h, w)} outside the {self.height}x{self.width} image")
        try:
            if self._mm is not None:
                return np.array(self._mm[y:y + h, x:x + w])
            if self._segments:
                return self._read_segments(y, x, h, w)
            if self._full is None:
                full = self._page.asarray()
                self._full = np.moveaxis(full, 0, -1) if self._planes else full
            return np.array(self._full[y:y + h, x:x + w])
        except ValueError:
            raise
        except Exception as e:  # noqa: BLE001 - truncated / corrupt data
            raise ValueError(f"{self.path}: cannot decode image data ({type(e).__name__}: {e})") from None

    def _read_segments(self, y: int, x: int, h: int, w: int) -> np.ndarray:
        page = self._page
        ch, cw = page.chunks[0], page.chunks[1]
        rows, cols = page.chunked[0], page.chunked[1]
        out = np.empty((h, w) + self.shape[2:], self.dtype)
        fh = self._tif.filehandle
        for r in range(y // ch, min(rows, (y + h - 1) // ch + 1)):
            for c in range(x // cw, min(cols, (x + w - 1) // cw + 1)):
                index = r * cols + c
                offset, count = page.dataoffsets[index], page.databytecounts[index]
                if count == 0:
                    raise ValueError(f"{self.path}: segment {index} is missing")
                fh.seek(offset)
                data = fh.read(count)
                if len(data) != count:
                    raise ValueError(f"{self.path}: file truncated in segment {index}")
                seg, _, _ = page.decode(data, index)
                if seg is None:
                    raise ValueError(f"{self.path}: segment {index} could not be decoded")
                seg = seg.reshape(seg.shape[1:3] + self.shape[2:])
                sy, sx = r * ch, c * cw
                y0, y1 = max(y, sy), min(y + h, sy + seg.shape[0], self.height)
                x0, x1 = max(x, sx), min(x + w, sx + seg.shape[1], self.width)
                out[y0 - y:y1 - y, x0 - x:x1 - x] = seg[y0 - sy:y1 - sy, x0 - sx:x1 - sx]
        return out
