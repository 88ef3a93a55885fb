"""Deterministic sample data: real image files (JPEG, PNG, WebP, GIF, AVIF) and a matching catalog.

2% of products (at least one) have no image and 1% of images (at least one) have no product, so the catalog step's
mismatch reporting has something to report. The same seed and count give the same bytes.
"""

from __future__ import annotations

import io
import json
import random
from dataclasses import dataclass
from pathlib import Path

from include.catalog_publisher.files import atomic_output

FORMATS = [
    ("JPEG", ".jpg", 0.55),
    ("PNG", ".png", 0.15),
    ("WEBP", ".webp", 0.15),
    ("GIF", ".gif", 0.1),
    ("AVIF", ".avif", 0.05),
]
CATEGORIES = ["shoes", "outerwear", "bags", "accessories", "home", "kitchen", "toys", "beauty"]
ADJECTIVES = ["Classic", "Urban", "Trail", "Everyday", "Premium", "Compact", "Vintage", "Eco"]
NOUNS = ["Sneaker", "Jacket", "Backpack", "Watch", "Lamp", "Kettle", "Puzzle", "Serum"]


@dataclass
class SampleData:
    images: int
    products: int
    products_without_image: int
    images_without_product: int


def product_id(n: int) -> str:
    return f"PROD-{n:06d}"


def _image_bytes(rng: random.Random, fmt: str, min_kb: int, max_kb: int) -> bytes:
    """A real, decodable image whose encoded size falls roughly in [min_kb, max_kb]."""
    from PIL import Image

    target = rng.randint(min_kb, max_kb) * 1024
    # Noise barely compresses, so pixel count steers size; a colour band keeps it an image.
    bytes_per_pixel = {"JPEG": 1.9, "PNG": 3.1, "WEBP": 1.8, "GIF": 1.1, "AVIF": 1.1}[fmt]
    side = max(16, int((target / bytes_per_pixel) ** 0.5))
    image = Image.frombytes("RGB", (side, side), rng.randbytes(side * side * 3))
    out = io.BytesIO()
    options = {"JPEG": {"quality": 90}, "WEBP": {"quality": 90}, "AVIF": {"quality": 90, "speed": 10}}.get(fmt, {})
    image.save(out, fmt, **options)
    return out.getvalue()


def generate(data_dir: str | Path, count: int = 300, seed: int = 7, min_kb: int = 20, max_kb: int = 200) -> SampleData:
    """Write `count` products to data_dir/products.json and their images to data_dir/images/."""
    rng = random.Random(seed)
    data = Path(data_dir)
    images_dir = data / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    without_image = set(rng.sample(range(1, count + 1), max(1, count // 50))) if count > 1 else set()
    orphans = [count + 1000 + i for i in range(max(1, count // 100))]
    products, written = [], 0
    for n in range(1, count + 1):
        pid = product_id(n)
        fmt, ext, _ = rng.choices(FORMATS, weights=[f[2] for f in FORMATS])[0]
        product = {
            "product_id": pid,
            "name": f"{rng.choice(ADJECTIVES)} {rng.choice(NOUNS)} {n}",
            "description": f"Sample product {n} for the image publishing demo.",
            "category": rng.choice(CATEGORIES),
            "price": round(rng.uniform(3, 500), 2),
            "currency": rng.choice(["EUR", "USD", "GBP"]),
            "stock": rng.randint(0, 1000),
            "tags": rng.sample(["new", "sale", "eco", "bestseller", "limited"], rng.randint(0, 3)),
            "attributes": {"color": rng.choice(["black", "white", "red", "blue"]), "weight_g": rng.randint(50, 5000)},
            "created_at": f"2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T10:00:00Z",
        }
        if n not in without_image:
            name = f"{pid}{ext}"
            (images_dir / name).write_bytes(_image_bytes(rng, fmt, min_kb, max_kb))
            written += 1
            if rng.random() < 0.5:
                product["image_url"] = f"data/images/{name}"  # a local path, replaced by the S3 URL
        products.append(product)
    for n in orphans:
        (images_dir / f"{product_id(n)}.jpg").write_bytes(_image_bytes(rng, "JPEG", min_kb, max_kb))
    with atomic_output(data / "products.json") as out:
        json.dump(products, out, indent=2, ensure_ascii=False)
        out.write("\n")
    return SampleData(written + len(orphans), count, len(without_image), len(orphans))


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Generate sample product images and catalog (deterministic).")
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--if-missing", action="store_true", help="do nothing when data-dir/products.json exists")
    args = parser.parse_args()
    if args.if_missing and (Path(args.data_dir) / "products.json").exists():
        print(f"sample data: {args.data_dir}/products.json exists, keeping it")
        return
    result = generate(args.data_dir, args.count, args.seed)
    print(
        f"sample data: {result.products} products ({result.products_without_image} without image), "
        f"{result.images} images ({result.images_without_product} without product) in {args.data_dir}"
    )


if __name__ == "__main__":
    main()
