"""Inputs bounded before they are read (issue 30, part 4): a ``.npy`` header, an image's size and
a requested sample count are checked against what this process may allocate
(:func:`aepipe.limits.memory_budget`: the machine's available memory, ``RLIMIT_AS`` and the
cgroup's limit) before anything is allocated; beyond it, one line and exit 2 naming the file and
the size. Pillow's decompression-bomb limit is one line too.

The CLI tests run the real command in a process limited to 2 GiB of address space (``prlimit
--as``), as an attacker's input would meet it: before the bounds each was a traceback (rc 1:
numpy's ``_ArrayMemoryError``, ``MemoryError``, ``DecompressionBombError``)."""

from __future__ import annotations

import functools
import os
import shutil
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest

from aepipe.errors import DataError

AS_LIMIT = 2 << 30


@functools.lru_cache(maxsize=None)
def as_limit() -> int:
    """The address-space limit of the CLI runs: :data:`AS_LIMIT` (2 GiB), or more where torch
    alone maps more (a CUDA build of torch maps about 3 GB of libraries before any work: the limit
    is then what the imports mapped plus 2 GiB), so the command gets as far as reading the file."""
    probe = ("import torch, aepipe.cli; print(next(l.split()[1] for l in open('/proc/self/status') if "
             "l.startswith('VmSize')))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    mapped = int(out.stdout.split()[-1]) * 1024 if out.returncode == 0 and out.stdout.split() else 0
    return AS_LIMIT if mapped + (768 << 20) <= AS_LIMIT else mapped + AS_LIMIT
needs_prlimit = pytest.mark.skipif(shutil.which("prlimit") is None, reason="needs util-linux prlimit")


def blank_png(path: Path, width: int, height: int) -> Path:
    """A black 1-bit greyscale PNG written without Pillow (its zero rows through zlib): a
    20000x20000 one in about a second and 220 kB, where Pillow's encoder takes ten times longer."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = bytes(1 + (width + 7) // 8)
    z = zlib.compressobj(1)
    parts = [z.compress(row * 1000) for _ in range(height // 1000)] + [z.compress(row * (height % 1000)), z.flush()]
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b""))
    return path


def claiming_npy(path: Path, shape: tuple[int, ...], size: int = 1024) -> Path:
    """A ``.npy`` file of ``size`` bytes whose header claims a float64 array of ``shape``."""
    from numpy.lib import format as npy

    with open(path, "wb") as fh:
        npy.write_array_header_1_0(fh, {"descr": "<f8", "fortran_order": False, "shape": shape})
        fh.write(bytes(size - fh.tell()))
    return path


@pytest.fixture(scope="session")
def huge_png(tmp_path_factory) -> Path:
    return blank_png(tmp_path_factory.mktemp("huge") / "huge.png", 20000, 20000)


def limited(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """``aepipe ARGS`` in a process of at most :func:`as_limit` bytes of address space."""
    env = {**os.environ, "AEPIPE_HOME": str(cwd / "mlruns")}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run(["prlimit", f"--as={as_limit()}", sys.executable, "-m", "aepipe.cli", *args],
                          capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def one_line(out: subprocess.CompletedProcess) -> str:
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and "Traceback" not in out.stderr, (
        out.returncode,
        out.stderr[-3000:],
    )
    return lines[0]


# --- the budget --------------------------------------------------------------------------------


def test_the_budget_honours_a_lowered_address_space_limit():
    """In a process whose RLIMIT_AS leaves 300 MB above what it maps: the budget is at most that,
    says so, and a sample count that the machine's memory would take is refused by it."""
    code = textwrap.dedent("""
        import resource
        from aepipe.errors import ConfigError
        from aepipe.limits import _field, _read, memory_budget
        from pathlib import Path
        before = memory_budget()
        mapped = _field(_read(Path("/proc/self/status")), "VmSize")
        resource.setrlimit(resource.RLIMIT_AS, (mapped + 300_000_000, resource.RLIM_INFINITY))
        after = memory_budget()
        print(before.bytes, after.bytes, after.limit)
        from aepipe.usecases.arrays import check_draw_count
        try:
            check_draw_count(1_000_000, 8, 64, "cpu")  # 1.6 GB
        except ConfigError as exc:
            print("refused:", exc)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    first, second = out.stdout.strip().splitlines()
    before, after, limit = first.split(" ", 2)
    assert int(after) <= 300_000_000 < int(before) and limit.startswith("under the address-space limit RLIMIT_AS"), (
        out.stdout
    )
    assert second.startswith("refused: -n 1000000: 1,000,000 samples needs about 1.57 GB;") and "RLIMIT_AS" in second, (
        second
    )


@pytest.mark.parametrize("version", ["v2", "v1"])
def test_the_budget_honours_a_cgroup_limit_less_what_the_group_holds(tmp_path, version):
    """A cgroup limit of 500 MB holding 250 MB, 100 MB of it inactive page cache: 350 MB left."""
    from aepipe.limits import _cgroup, memory_budget

    if version == "v2":
        folder, files = tmp_path, {"memory.max": "500000000\n", "memory.current": "250000000\n",
                                   "memory.stat": "anon 150000000\ninactive_file 100000000\n"}
        limit_file = "memory.max"
    else:
        folder, files = tmp_path / "memory", {"memory.limit_in_bytes": "500000000\n",
                                              "memory.usage_in_bytes": "250000000\n",
                                              "memory.stat": "cache 1\ntotal_inactive_file 100000000\n"}
        limit_file = "memory.limit_in_bytes"
    folder.mkdir(exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    budget = memory_budget("cpu", cgroup_root=tmp_path)
    assert budget.bytes == 350_000_000 and budget.limit == f"in the cgroup limit {folder / limit_file} of 0.5 GB"
    (folder / limit_file).write_text("max\n" if version == "v2" else "9223372036854771712\n")  # no limit
    assert memory_budget("cpu", cgroup_root=tmp_path).limit != budget.limit
    assert _cgroup(tmp_path / "absent") is None


def test_a_budget_that_is_too_small_refuses_arrays_by_their_header(tmp_path, monkeypatch):
    """In-process: the header decides, nothing else is read; a file shorter than its header
    claims is damaged, memory-mapped or not; an .npz member and an IDX file the same."""
    from aepipe import limits
    from aepipe.arrays import load_npy

    monkeypatch.setattr(
        limits, "memory_budget", lambda device="cpu", cgroup_root=None: limits.Budget(1_000_000, "a test")
    )
    path = claiming_npy(tmp_path / "x.npy", (1000, 8, 8))  # 512 kB claimed, 1 kB held
    with pytest.raises(
        DataError,
        match=r"^in: header claims shape \(1000, 8, 8\) float64 = 512 kB \(2\.05 MB with the copies made "
        r"of it\), more than the 1 MB this process may allocate \(a test\)$",
    ):
        load_npy(path, "in", extra_per_value=24)
    with pytest.raises(
        DataError,
        match=r"^in: a damaged \.npy file: its header claims shape \(1000, 8, 8\) float64 = 512 kB, "
        r"but it holds 896 bytes of data$",
    ):
        load_npy(path, "in")
    with pytest.raises(DataError, match="but it holds 896 bytes"):
        load_npy(path, "in", mmap=True)
    np.save(tmp_path / "ok.npy", np.ones((10, 3)))
    assert load_npy(tmp_path / "ok.npy", "ok").shape == (10, 3)

    from aepipe_plugins.datasets.sources import ArrayFile, ArrayFileConfig, read_idx

    np.savez_compressed(tmp_path / "z.npz", x=np.zeros((2000, 100)))  # 1.6 MB of zeros, a few kB on disk
    with pytest.raises(DataError, match=r"z\.npz: array 'x': header claims shape \(2000, 100\) float64 = 1\.6 MB"):
        ArrayFile(ArrayFileConfig(path=str(tmp_path / "z.npz"))).load()
    idx = tmp_path / "train-images-idx3-ubyte"
    idx.write_bytes(b"\x00\x00\x08\x03" + struct.pack(">3i", 100_000, 28, 28))
    with pytest.raises(
        DataError, match=r"idx3-ubyte: header claims shape \(100000, 28, 28\) uint8 = 78\.4 MB, more than the 1 MB"
    ):
        read_idx(idx)


def test_images_are_bounded_from_their_headers_before_any_is_decoded(tmp_path, monkeypatch):
    """An image whose decoding would not fit is refused by name; a streamed batch that would not
    fit is refused; Pillow's bomb limit is one line (an error beyond twice it, a warning beyond
    it); nothing is decoded on the way."""
    from PIL import Image

    from aepipe import limits
    from aepipe_plugins.datasets import images

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(4):
        Image.new("L", (40, 30)).save(folder / f"{i}.png")
    blank_png(folder / "9-wide.png", 200, 30)
    decoded = []
    monkeypatch.setattr(images, "to_chw", lambda *a, **k: decoded.append(a) or np.zeros((3, 30, 40), np.uint8))
    monkeypatch.setattr(limits, "memory_budget", lambda device="cpu", cgroup_root=None: limits.Budget(40_000, "a test"))
    # 200x30 grey into RGB: 6,000 pixels x (1 + 4 + 3) bytes = 48 kB
    with pytest.raises(
        DataError,
        match=r"9-wide\.png: a 200x30 image \(Pillow mode '1'\) takes 48 kB to decode, more than the 40 kB "
        r"this process may allocate \(a test\)$",
    ):
        images.ImageFolder(images.ImageFolderConfig(path=str(folder), image_size=(30, 40))).load()
    (folder / "9-wide.png").unlink()
    raw = images.ImageFolder(images.ImageFolderConfig(path=str(folder))).load()
    assert raw.x.shape == (4, 3, 30, 40) and not decoded
    assert raw.x.read(np.arange(2)).shape == (2, 3, 30, 40) and len(decoded) == 2
    decoded.clear()
    monkeypatch.setattr(limits, "memory_budget", lambda device="cpu", cgroup_root=None: limits.Budget(10_000, "a test"))
    with pytest.raises(
        DataError,
        match=r"reading 4 images of 3x30x40 at once takes 24 kB, more than the 10 kB .* lower train\.batch_size",
    ):
        raw.x.read(np.arange(4))

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)
    with pytest.raises(
        DataError,
        match=r"0\.png: an image of 1,200 pixels; aepipe does not decode it \(Pillow's decompression-bomb "
        r"limit: PIL\.Image\.MAX_IMAGE_PIXELS = 500 pixels, refused beyond twice that\)$",
    ):
        images.header(folder / "0.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1100)
    with pytest.warns(
        images.ImageDataWarning, match=r"0\.png: a 40x30 image \(1,200 pixels\), more than Pillow's decompression-bomb"
    ):
        assert images.header(folder / "0.png") == (40, 30, "L")
    assert not decoded


# --- the real command, under an address-space limit ------------------------------------------


@needs_prlimit
def test_a_npy_whose_header_claims_terabytes_is_one_line(tmp_path):
    """A 1 kB file claiming (10^12, 8, 8) float64 given to ``encode``: refused from its header,
    before the run is even looked up."""
    claiming_npy(tmp_path / "x.npy", (10**12, 8, 8))
    line = one_line(limited(["encode", "0" * 32, "x.npy", "-o", "out.npy"], tmp_path))
    assert (
        line.startswith("Error: x.npy: header claims shape (1000000000000, 8, 8) float64 = 512 TB (")
        and f"this process may allocate (under the address-space limit RLIMIT_AS of {as_limit() / 1e9:.3g} GB)" in line
    ), line
    assert not (tmp_path / "out.npy").exists()


def _pipeline(folder: Path, name: str) -> Path:
    path = folder / f"{name}.toml"
    path.write_text(
        f'variant = "vanilla"\n[data]\nname = "imagefolder"\npath = "{name}"\n[tracking]\nlog_images = false\n'
    )
    return path


@needs_prlimit
def test_a_folder_of_hard_linked_huge_blank_pngs_is_refused_before_decoding(tmp_path):
    """60 links to one 8000x8000 blank PNG (a few kB on disk, 11.5 GB of RGB rows): with the
    default data.in_memory = "auto" the headers say the rows cannot be held under the limit, so
    they would stream, and the model for rows of 192 million values is refused in one line before
    any image is decoded (it was a MemoryError traceback). Held (data.in_memory = true), the
    same rows are refused by the data's own line: tests/test_streaming.py."""
    folder = tmp_path / "links"
    folder.mkdir()
    blank_png(folder / "00.png", 8000, 8000)
    for i in range(1, 60):
        os.link(folder / "00.png", folder / f"{i:02d}.png")
    assert sum(p.stat().st_size for p in folder.iterdir()) < 3e6
    out = limited(["train", str(_pipeline(tmp_path, "links"))], tmp_path)
    errors = [line for line in out.stderr.splitlines() if line.startswith("Error:")]
    assert out.returncode == 2 and len(errors) == 1 and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert (
        "(auto: 11.5 GB is more than 0.5 of the" in out.stderr
        and "is free on cpu (under the address-space limit RLIMIT_AS" in errors[0]
        and "6,336,000,016 parameters" in errors[0]
    ), out.stderr


@needs_prlimit
def test_one_huge_png_is_pillows_bomb_limit_in_one_line(tmp_path, huge_png):
    folder = tmp_path / "huge"
    folder.mkdir()
    shutil.copy(huge_png, folder / "huge.png")
    line = one_line(limited(["train", str(_pipeline(tmp_path, "huge"))], tmp_path))
    assert line == (
        f"Error: {Path('huge') / 'huge.png'}: an image of 400,000,000 pixels; aepipe does not decode it (Pillow's "
        "decompression-bomb limit: PIL.Image.MAX_IMAGE_PIXELS = 89,478,485 pixels, refused beyond twice that)"
    ), line
