"""A zoo of hostile and odd image files, generated on the fly (nothing is downloaded or checked in).

Every entry is ``(name, bytes, expected)`` where ``expected`` is ``"ok"`` (the service must predict),
a 4xx status the service must answer with, or ``"any4xx"`` where either a prediction or any 4xx JSON
error is acceptable (odd files that some Pillow builds read and others do not). No entry may ever get
a 5xx, kill a worker or make the service unready.
"""

from __future__ import annotations

import io
import os
import random
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

from PIL import Image, features

Expected = str  # "ok", "any4xx", or a status code as text ("413", "415", "422")


@dataclass(frozen=True)
class Specimen:
    name: str
    data: bytes
    expected: Expected
    content_type: str = "application/octet-stream"


def _save(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def photo(size: tuple[int, int] = (96, 128), seed: int = 0, mode: str = "RGB") -> Image.Image:
    """A little photo-like picture: a gradient with a few coloured blocks (no pure white)."""
    width, height = size
    rnd = random.Random(seed)
    image = Image.linear_gradient("L").resize(size).convert("RGB")
    for _ in range(4):
        x, y = rnd.randrange(max(1, width)), rnd.randrange(max(1, height))
        colour = (rnd.randrange(200), rnd.randrange(200), rnd.randrange(200))
        image.paste(colour, (x, y, min(width, x + width // 3 + 1), min(height, y + height // 3 + 1)))
    return image.convert(mode) if mode != "RGB" else image


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_raw(width: int, height: int, bit_depth: int, colour_type: int, rows: bytes | None = None) -> bytes:
    """A PNG written by hand, so headers can lie and depths Pillow cannot write are possible."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    data = zlib.compress(rows if rows is not None else b"")
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", data)
            + _png_chunk(b"IEND", b""))


def png_rgb16(width: int = 40, height: int = 30) -> bytes:
    """48-bit RGB PNG (16 bits per channel)."""
    rows = b"".join(b"\x00" + b"".join(struct.pack(">HHH", x * 1600, y * 2000, 30000) for x in range(width))
                    for y in range(height))
    return png_raw(width, height, 16, 2, rows)


def png_zeros(width: int, height: int, bit_depth: int = 16, colour_type: int = 0) -> bytes:
    """A tiny file that decodes into a huge image: 16-bit grey (the default) or 8-bit RGBA
    (``bit_depth=8, colour_type=6``) of all zeros, compressed to almost nothing."""
    bytes_per_pixel = {0: 1, 2: 3, 4: 2, 6: 4}[colour_type] * bit_depth // 8
    compressor = zlib.compressobj(9)
    row = b"\0" * (1 + width * bytes_per_pixel)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", data)
            + _png_chunk(b"IEND", b""))


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A few hundred bytes whose header claims ``width`` x ``height`` pixels (a decompression bomb)."""
    row = b"\x00" + b"\x00" * 3 * 16
    return png_raw(width, height, 8, 2, row * 16)


def jpeg_claiming(width: int, height: int) -> bytes:
    """A small JPEG whose SOF marker is rewritten to claim ``width`` x ``height``."""
    data = bytearray(_save(photo((16, 16)), "JPEG"))
    index = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, index + 5, height, width)
    return bytes(data)


def gif_claiming(width: int, height: int) -> bytes:
    data = bytearray(_save(photo((16, 16)), "GIF"))
    struct.pack_into("<HH", data, 6, width, height)
    return bytes(data)


def exif_rotated(orientation: int, fmt: str = "JPEG") -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _save(photo((64, 32)), fmt, exif=exif)


def broken_exif_jpeg() -> bytes:
    """A JPEG whose APP1 EXIF segment is garbage after the header."""
    body = _save(photo((32, 32)), "JPEG")
    payload = b"Exif\x00\x00" + b"MM\x00\x2a\x00\x00\x00\x08" + b"\xff\xff" + os.urandom(40)
    segment = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    return body[:2] + segment + body[2:]


def animated(fmt: str, frames: int = 3) -> bytes:
    images = [photo((48, 48), seed=i) for i in range(frames)]
    return _save(images[0], fmt, save_all=True, append_images=images[1:], duration=50, loop=0)


def tiff_claiming(width: int, height: int) -> bytes:
    """A TIFF whose ImageWidth/ImageLength tags are patched to claim ``width`` x ``height``."""
    image = photo((16, 16))
    data = bytearray(_save(image, "TIFF"))
    (offset,) = struct.unpack_from("<I", data, 4)
    (count,) = struct.unpack_from("<H", data, offset)
    for i in range(count):
        entry = offset + 2 + 12 * i
        tag, _kind = struct.unpack_from("<HH", data, entry)
        if tag in (256, 257):  # ImageWidth, ImageLength
            value = width if tag == 256 else height
            struct.pack_into("<HHII", data, entry, tag, 4, 1, value)  # as LONG
    return bytes(data)


def bmp_claiming(width: int, height: int) -> bytes:
    data = bytearray(_save(photo((16, 16)), "BMP"))
    struct.pack_into("<ii", data, 18, width, height)
    return bytes(data)


def png_text_bomb() -> bytes:
    """A PNG with a compressed text chunk that inflates to 64 MB."""
    png = _save(photo((16, 16)), "PNG")
    payload = b"comment\x00\x00" + zlib.compress(b"A" * (64 << 20), 9)
    return png[:33] + _png_chunk(b"zTXt", payload) + png[33:]


def mutations(data: bytes, count: int, seed: int) -> Iterator[bytes]:
    """``count`` copies of ``data`` with a few random bytes overwritten past the first 16."""
    rnd = random.Random(seed)
    for _ in range(count):
        mutated = bytearray(data)
        for _ in range(rnd.randrange(1, 6)):
            mutated[rnd.randrange(16, len(data))] = rnd.randrange(256)
        yield bytes(mutated)


def oversized_upload(limit: int) -> bytes:
    """A valid JPEG header followed by filler: ``limit`` * 4 bytes in all."""
    head = _save(photo((16, 16)), "JPEG")
    return head + b"\x00" * (limit * 4 - len(head))


def specimens(max_upload_bytes: int, mutants: int = 4) -> Iterator[Specimen]:
    """The zoo. ``max_upload_bytes`` sizes the one upload that must be refused for its size; ``mutants``
    is how many randomly corrupted copies of each common format to include."""
    jpeg = _save(photo(), "JPEG", quality=90)
    rnd = random.Random(7)

    # -- ordinary files the service must read --------------------------------------------------
    yield Specimen("baseline.jpg", jpeg, "ok", "image/jpeg")
    yield Specimen("progressive.jpg", _save(photo(), "JPEG", progressive=True, optimize=True), "ok", "image/jpeg")
    yield Specimen("cmyk.jpg", _save(photo(mode="CMYK"), "JPEG"), "ok", "image/jpeg")
    yield Specimen("grayscale.jpg", _save(photo(mode="L"), "JPEG"), "ok", "image/jpeg")
    yield Specimen("subsampling-444.jpg", _save(photo(), "JPEG", subsampling=0, quality=100), "ok", "image/jpeg")
    for orientation in range(1, 9):
        yield Specimen(f"exif-orientation-{orientation}.jpg", exif_rotated(orientation), "ok", "image/jpeg")
    yield Specimen("exif-orientation-invalid.jpg", exif_rotated(42), "ok", "image/jpeg")
    yield Specimen("exif-garbage.jpg", broken_exif_jpeg(), "ok", "image/jpeg")
    yield Specimen("png-rgb.png", _save(photo(), "PNG"), "ok", "image/png")
    yield Specimen("png-rgba.png", _save(photo(mode="RGBA"), "PNG"), "ok", "image/png")
    yield Specimen("png-la.png", _save(photo(mode="LA"), "PNG"), "ok", "image/png")
    yield Specimen("png-1bit.png", _save(photo(mode="1"), "PNG"), "ok", "image/png")
    yield Specimen("png-16bit-gray.png", _save(photo().convert("I;16"), "PNG"), "ok", "image/png")
    yield Specimen("png-16bit-rgb.png", png_rgb16(), "ok", "image/png")
    palette = photo().convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    yield Specimen("png-palette-transparent.png", _save(palette, "PNG", transparency=0), "ok", "image/png")
    yield Specimen("png-palette-alpha.png", _save(palette, "PNG", transparency=bytes(range(0, 256, 16))), "ok",
                   "image/png")
    yield Specimen("gif.gif", _save(photo(), "GIF"), "ok", "image/gif")
    yield Specimen("gif-animated.gif", animated("GIF"), "ok", "image/gif")
    yield Specimen("gif-transparent.gif", _save(palette, "GIF", transparency=0), "ok", "image/gif")
    yield Specimen("bmp.bmp", _save(photo(), "BMP"), "ok", "image/bmp")
    yield Specimen("bmp-palette.bmp", _save(palette, "BMP"), "ok", "image/bmp")
    yield Specimen("tiff.tif", _save(photo(), "TIFF"), "ok", "image/tiff")
    yield Specimen("tiff-lzw.tif", _save(photo(), "TIFF", compression="tiff_lzw"), "ok", "image/tiff")
    yield Specimen("tiff-cmyk.tif", _save(photo(mode="CMYK"), "TIFF"), "ok", "image/tiff")
    yield Specimen("tiff-16bit.tif", _save(photo().convert("I;16"), "TIFF"), "ok", "image/tiff")
    yield Specimen("tiff-float.tif", _save(photo().convert("F"), "TIFF"), "any4xx", "image/tiff")
    yield Specimen("tiff-32bit-int.tif", _save(photo().convert("I"), "TIFF"), "ok", "image/tiff")
    yield Specimen("tiff-multipage.tif", animated("TIFF"), "ok", "image/tiff")
    if features.check("webp"):
        yield Specimen("webp-lossy.webp", _save(photo(), "WEBP"), "ok", "image/webp")
        yield Specimen("webp-lossless-alpha.webp", _save(photo(mode="RGBA"), "WEBP", lossless=True), "ok",
                       "image/webp")
        yield Specimen("webp-animated.webp", animated("WEBP"), "ok", "image/webp")
    yield Specimen("1x1.png", _save(photo((1, 1)), "PNG"), "ok", "image/png")
    yield Specimen("1x1.jpg", _save(photo((1, 1)), "JPEG"), "ok", "image/jpeg")
    yield Specimen("10000x10.png", _save(photo((10000, 10)), "PNG"), "ok", "image/png")
    yield Specimen("10x10000.jpg", _save(photo((10, 10000)), "JPEG"), "ok", "image/jpeg")
    yield Specimen("big-photo-3000x2000.jpg", _save(photo((3000, 2000)), "JPEG", quality=70), "ok", "image/jpeg")
    yield Specimen("mislabelled-png-as-jpeg.jpg", _save(photo(), "PNG"), "ok", "image/jpeg")

    # -- files the service must refuse with a reason --------------------------------------------
    yield Specimen("zero-bytes.jpg", b"", "422", "image/jpeg")
    yield Specimen("random-bytes.jpg", bytes(rnd.randrange(256) for _ in range(4096)), "422", "image/jpeg")
    yield Specimen("text-as-jpeg.jpg", b"hello, I am definitely a photo of a kurti\n" * 20, "422", "image/jpeg")
    yield Specimen("html-as-png.png", b"<html><script>alert(1)</script></html>", "422", "image/png")
    yield Specimen("truncated.jpg", jpeg[: len(jpeg) // 2], "422", "image/jpeg")
    yield Specimen("truncated-header.jpg", jpeg[:20], "422", "image/jpeg")
    yield Specimen("jpeg-soi-only.jpg", b"\xff\xd8\xff", "422", "image/jpeg")
    png = _save(photo(), "PNG")
    yield Specimen("truncated.png", png[: len(png) // 2], "422", "image/png")
    yield Specimen("png-bad-crc.png", png[:40] + bytes([png[40] ^ 0xFF]) + png[41:], "422", "image/png")
    yield Specimen("png-header-only.png", png[:33], "422", "image/png")
    gif = animated("GIF")
    yield Specimen("truncated.gif", gif[: len(gif) // 2], "any4xx", "image/gif")
    yield Specimen("png-empty-idat.png", png_raw(64, 64, 8, 2, b""), "422", "image/png")
    yield Specimen("png-zero-width.png", png_raw(0, 10, 8, 2, b"\x00"), "422", "image/png")
    yield Specimen("bomb-png-100000x100000.png", png_bomb(), "413", "image/png")
    yield Specimen("bomb-png-10000x10000.png", png_bomb(10_000, 10_000), "413", "image/png")
    yield Specimen("bomb-jpeg-65000x65000.jpg", jpeg_claiming(65000, 65000), "413", "image/jpeg")
    yield Specimen("bomb-gif-65535x65535.gif", gif_claiming(65535, 65535), "413", "image/gif")
    yield Specimen("bomb-tiff-100000x100000.tif", tiff_claiming(100_000, 100_000), "413", "image/tiff")
    yield Specimen("bomb-bmp-60000x60000.bmp", bmp_claiming(60_000, 60_000), "413", "image/bmp")
    yield Specimen("png-ztxt-bomb.png", png_text_bomb(), "any4xx", "image/png")
    yield Specimen("too-large-upload.jpg", oversized_upload(max_upload_bytes), "413", "image/jpeg")

    # -- seeded random corruption: any answer but a 5xx ------------------------------------------
    for fmt, base in (("jpg", jpeg), ("png", png), ("gif", gif), ("tif", _save(photo(), "TIFF")),
                      ("bmp", _save(photo(), "BMP"))):
        for i, mutated in enumerate(mutations(base, mutants, seed=sum(fmt.encode()))):
            yield Specimen(f"mutant-{i}.{fmt}", mutated, "any4xx", "application/octet-stream")

    # -- formats Pillow reads that the service does not accept ----------------------------------
    yield Specimen("ico.ico", _save(photo((32, 32)), "ICO"), "415", "image/x-icon")
    yield Specimen("pcx.pcx", _save(photo(), "PCX"), "415", "image/x-pcx")
    yield Specimen("tga.tga", _save(photo(), "TGA"), "415", "image/x-tga")
    yield Specimen("ppm.ppm", _save(photo(), "PPM"), "415", "image/x-portable-pixmap")
    yield Specimen("sgi.sgi", _save(photo(), "SGI"), "415", "image/sgi")
    yield Specimen("pdf.pdf", _save(photo(), "PDF"), "422", "application/pdf")
    yield Specimen("eps-header.eps", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n", "415",
                   "application/postscript")
    if features.check("jpg_2000"):
        yield Specimen("jpeg2000.jp2", _save(photo(), "JPEG2000"), "415", "image/jp2")
