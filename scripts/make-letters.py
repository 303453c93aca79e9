#!/usr/bin/env python3
"""Draws a 26-class letters data set from the machine's TrueType fonts, as an image folder for `lenet5 train`.

    python scripts/make-letters.py OUT_DIR [--fonts DIR] [--test-fonts PATTERN,...] [--per-font N]

Each capital letter A-Z is drawn white on black at 28x28, N times per font with a little jitter of size and
place. The fonts whose file names contain one of the test patterns (default: LiberationSerif,
DejaVuSerifCondensed) go to OUT_DIR/test, every other font to OUT_DIR/train, so that test accuracy is measured
on typefaces the network never saw. Needs Pillow.
"""
import argparse
import os
import random
import string

from PIL import Image, ImageDraw, ImageFont


def fonts_under(root):
    found = []
    for dirpath, _, names in os.walk(root):
        found += [os.path.join(dirpath, n) for n in names if n.lower().endswith((".ttf", ".otf"))]
    # Symbol, colour and demo fonts draw no Latin letters worth learning.
    skip = ("Math", "colr", "demo")
    return sorted(f for f in found if not any(s in os.path.basename(f) for s in skip))


def draw(letter, font_path, size, dx, dy):
    font = ImageFont.truetype(font_path, size)
    canvas = Image.new("L", (56, 56), 0)
    ImageDraw.Draw(canvas).text((28 + dx, 28 + dy), letter, fill=255, font=font, anchor="mm")
    box = canvas.getbbox()
    if box is None:
        return None
    # Crop to the ink, fit 20x20 keeping the aspect, centre in 28x28 (the MNIST framing).
    ink = canvas.crop(box)
    scale = 20 / max(ink.size)
    ink = ink.resize((max(1, round(ink.width * scale)), max(1, round(ink.height * scale))), Image.BILINEAR)
    out = Image.new("L", (28, 28), 0)
    out.paste(ink, ((28 - ink.width) // 2 + dx // 4, (28 - ink.height) // 2 + dy // 4))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--fonts", default="/usr/share/fonts")
    ap.add_argument("--test-fonts", default="LiberationSerif,DejaVuSerifCondensed")
    ap.add_argument("--per-font", type=int, default=5)
    args = ap.parse_args()
    tests = args.test_fonts.split(",")
    rng = random.Random(0)
    counts = {"train": 0, "test": 0}
    fonts = fonts_under(args.fonts)
    for font in fonts:
        part = "test" if any(t in os.path.basename(font) for t in tests) else "train"
        stem = os.path.splitext(os.path.basename(font))[0]
        for letter in string.ascii_uppercase:
            folder = os.path.join(args.out, part, letter)
            os.makedirs(folder, exist_ok=True)
            for k in range(args.per_font):
                img = draw(letter, font, rng.randint(30, 40), rng.randint(-3, 3), rng.randint(-3, 3))
                if img is not None:
                    img.save(os.path.join(folder, f"{stem}_{k}.png"))
                    counts[part] += 1
    print(f"{len(fonts)} fonts: {counts['train']} training and {counts['test']} test images in {args.out}")


if __name__ == "__main__":
    main()
