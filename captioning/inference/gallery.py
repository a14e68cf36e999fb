"""An HTML page showing each image beside its caption, like neuraltalk2's vis page.

The page is one self-contained file: each image is embedded as a PNG thumbnail (data: URI), so it
can be mailed or moved without the images. Written atomically.
"""

import base64
import html
import io

from PIL import Image, ImageOps

from textgen.io import atomic_write_text

THUMBNAIL = 320  # longest side of the embedded images, in pixels

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; background: #fafafa; color: #222; }}
h1 {{ font-size: 1.3em; }}
.item {{ display: flex; align-items: center; gap: 1.5em; margin: 1em 0; padding: 0.8em;
         background: #fff; border: 1px solid #ddd; }}
.item img {{ flex: none; width: {size}px; height: auto; image-rendering: pixelated;
             border: 1px solid #ccc; }}
.caption {{ font-size: 1.4em; }}
.meta {{ color: #777; font-size: 0.85em; margin-top: 0.4em; }}
.beams {{ margin: 0.4em 0 0 0; padding-left: 1.4em; }}
.beams li {{ margin: 0.15em 0; }}
</style>
</head>
<body>
<h1>{title}</h1>
{items}
</body>
</html>
"""

ITEM = """<div class="item">
<img src="data:image/png;base64,{data}" alt="{caption}">
<div><div class="caption">{caption}</div>
<div class="meta">{file} &middot; log p = {log_prob:.3f}</div>{beams}</div>
</div>"""

# --n-best: every beam kept, best first, under the caption.
BEAM = """<li>{caption} <span class="meta">log p = {log_prob:.3f}</span></li>"""


def beam_list(result):
    if not result.n_best:
        return ""
    beams = "".join(
        BEAM.format(caption=html.escape(b["caption"]), log_prob=b["log_prob"])
        for b in result.n_best
    )
    return f'\n<ol class="beams">{beams}</ol>'


def thumbnail_png(path, size=THUMBNAIL):
    """The image at `path`, upright and RGB, at most `size` pixels on its longest side, as PNG."""
    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image).convert("RGB")
        image.thumbnail((size, size))
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        return buffer.getvalue()


def write_gallery(path, results, title="Captions", size=THUMBNAIL):
    """Writes the page for `results` ([CaptionResult]) to `path`."""
    items = "\n".join(
        ITEM.format(
            data=base64.b64encode(thumbnail_png(r.file, size)).decode("ascii"),
            caption=html.escape(r.caption),
            file=html.escape(r.file),
            log_prob=r.log_prob,
            beams=beam_list(r),
        )
        for r in results
    )
    atomic_write_text(path, PAGE.format(title=html.escape(title), size=size, items=items))
