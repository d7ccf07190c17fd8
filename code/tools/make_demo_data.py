"""Generate a small synthetic stand-in for MiniPlaces in its exact on-disk layout.

    python -m tools.make_demo_data ../data                     # 10 classes, 120 images each
    python -m tools.make_demo_data ../data --classes 100 --train-per-class 50

Layout written (the same as MiniPlaces):
    <out>/train.txt              train/<letter>/<class>[/<sub>]/<8 digits>.jpg <label>
    <out>/val.txt                val/<8 digits>.jpg <label>
    <out>/categories.txt         /<letter>/<class>[/<sub>] <label>
    <out>/images/train/...       128x128 RGB JPEG
    <out>/images/val/...
    <out>/DEMO_DATASET.txt       marker: main.py announces every run on it as a demo run

Each class is a random "scene recipe": a sky/ground colour pair, an oriented
texture at a class-specific frequency and a class-specific kind of object.
Pairs of classes share the sky and the object and every image is jittered, so a
CNN learns the set well above chance but not perfectly in a few epochs.
"""
import argparse
import os
import sys

import cv2
import numpy as np

DEMO_MARKER = "DEMO_DATASET.txt"
JPEG_QUALITY = 90
IMG_SIZE = 128
CATEGORY_NAMES = [
    "abbey", "airport_terminal", "amphitheater", "amusement_park", "aquarium", "aqueduct", "arch",
    "art_gallery", "art_studio", "assembly_line", "attic", "auditorium", "badlands", "bakery/shop",
    "ballroom", "bamboo_forest", "banquet_hall", "bar", "baseball_field", "bathroom", "bedroom",
    "boardwalk", "boat_deck", "bookstore", "botanical_garden", "bowling_alley", "boxing_ring",
    "bridge", "building_facade", "bus_interior", "butchers_shop", "butte", "campsite", "candy_store",
    "canyon", "castle", "cemetery", "chalet", "church/outdoor", "classroom", "closet",
    "clothing_store", "coast", "cockpit", "coffee_shop", "conference_room", "construction_site",
    "corn_field", "corridor", "courtyard", "dam", "desert/sand", "dining_room", "driveway",
    "fire_station", "forest_path", "fountain", "gas_station", "golf_course", "harbor", "highway",
    "hospital_room", "hot_spring", "iceberg", "igloo", "kitchen", "lighthouse", "living_room",
    "lobby", "locker_room", "mansion", "marsh", "mausoleum", "mountain", "museum/indoor",
    "nursery", "ocean", "office", "orchard", "pagoda", "palace", "parking_lot", "pasture", "patio",
    "playground", "pond", "railroad_track", "rainforest", "restaurant", "river", "runway",
    "shed", "ski_slope", "skyscraper", "stadium/football", "swamp", "temple/east_asia", "tower",
    "valley", "windmill",
]
assert len(CATEGORY_NAMES) == 100



def save_jpeg(path, img):
    """Write an RGB array (H, W, 3) uint8 as a JPEG of quality JPEG_QUALITY; OSError on failure."""
    bgr = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(path, bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]):
        raise OSError(f"cannot write image {path}")

def class_folder(label):
    """Relative class folder of ``label``, e.g. 'c/church/outdoor' (two levels) or 'a/abbey'."""
    name = CATEGORY_NAMES[label]
    return f"{name[0]}/{name}"


def pick_labels(num_classes):
    """``num_classes`` label ids spread over [0, 100), always including a two-level class."""
    labels = np.linspace(0, 99, num_classes).round().astype(int).tolist()
    if num_classes < 100 and not any("/" in CATEGORY_NAMES[lab] for lab in labels):
        labels[-1] = CATEGORY_NAMES.index("temple/east_asia")
    return sorted(set(labels))


def class_recipe(label, rng):
    """Random but fixed cues of one class: colours, texture and object kind."""
    return {
        "sky": rng.uniform(40, 220, 3),
        "ground": rng.uniform(20, 200, 3),
        "horizon": rng.uniform(0.3, 0.7),
        "angle": rng.uniform(0, np.pi),
        "freq": rng.uniform(0.05, 0.35),
        "shape": int(rng.integers(0, 3)),
        "shape_color": rng.uniform(0, 255, 3),
        "count": int(rng.integers(1, 5)),
    }


def render(recipe, rng):
    """One (128, 128, 3) uint8 image of a class recipe with per-image jitter."""
    s = IMG_SIZE
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) / s  # (s, s) each
    horizon = recipe["horizon"] + rng.uniform(-0.15, 0.15)
    sky = recipe["sky"] + rng.normal(0, 35, 3)
    ground = recipe["ground"] + rng.normal(0, 35, 3)
    img = np.where((yy < horizon)[..., None], sky, ground).astype(np.float32)  # (s, s, 3)
    angle = recipe["angle"] + rng.normal(0, 0.25)
    freq = recipe["freq"] * s * rng.uniform(0.8, 1.25)
    wave = np.sin(freq * (xx * np.cos(angle) + yy * np.sin(angle)) + rng.uniform(0, 2 * np.pi))
    img += 35.0 * wave[..., None] * (yy > horizon)[..., None]
    for _ in range(recipe["count"] + int(rng.integers(0, 2))):
        cx, cy = rng.uniform(0.1, 0.9), rng.uniform(0.15, 0.85)
        r = rng.uniform(0.06, 0.16)
        if recipe["shape"] == 0:
            mask = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
        elif recipe["shape"] == 1:
            mask = (abs(xx - cx) < r * 0.6) & (abs(yy - cy) < r * 1.6)
        else:
            mask = (yy > cy - r) & (yy < cy + r) & (abs(xx - cx) < (yy - cy + r) * 0.6)
        img[mask] = recipe["shape_color"] + rng.normal(0, 20, 3)
    img += rng.normal(0, 18, img.shape)
    img *= rng.uniform(0.75, 1.25)
    return np.clip(img, 0, 255).astype(np.uint8)


def make_demo_dataset(out_dir, num_classes=10, train_per_class=100, val_per_class=20, seed=0):
    """Write the demo set into ``out_dir`` (see the module docstring); returns the labels used.

    Refuses to write into a folder that already holds a real MiniPlaces copy.
    """
    if os.path.isfile(os.path.join(out_dir, "train.txt")) and not os.path.isfile(
            os.path.join(out_dir, DEMO_MARKER)):
        raise FileExistsError(f"{out_dir} already holds a dataset that is not the demo set; "
                              "choose another folder")
    if not 1 <= num_classes <= 100:
        raise ValueError(f"--classes must be in [1, 100], got {num_classes}")
    rng = np.random.default_rng(seed)
    labels = pick_labels(num_classes)
    recipes = {lab: class_recipe(lab, rng) for lab in labels}
    for a, b in zip(labels[::2], labels[1::2]):  # pairs share sky and object: confusable
        recipes[b].update(sky=recipes[a]["sky"], shape=recipes[a]["shape"])
    train_lines, val_lines = [], []
    for lab in labels:
        folder = os.path.join(out_dir, "images", "train", class_folder(lab))
        os.makedirs(folder, exist_ok=True)
        for i in range(train_per_class):
            rel = f"train/{class_folder(lab)}/{i + 1:08d}.jpg"
            save_jpeg(os.path.join(out_dir, "images", rel), render(recipes[lab], rng))
            train_lines.append(f"{rel} {lab}")
    os.makedirs(os.path.join(out_dir, "images", "val"), exist_ok=True)
    val_items = [lab for lab in labels for _ in range(val_per_class)]
    for i, lab in enumerate(rng.permutation(val_items).tolist()):
        rel = f"val/{i + 1:08d}.jpg"
        save_jpeg(os.path.join(out_dir, "images", rel), render(recipes[lab], rng))
        val_lines.append(f"{rel} {lab}")
    with open(os.path.join(out_dir, "train.txt"), "w") as f:
        f.write("\n".join(train_lines) + "\n")
    with open(os.path.join(out_dir, "val.txt"), "w") as f:
        f.write("\n".join(val_lines) + "\n")
    with open(os.path.join(out_dir, "categories.txt"), "w") as f:
        f.write("".join(f"/{class_folder(lab)} {lab}\n" for lab in range(100)))
    with open(os.path.join(out_dir, DEMO_MARKER), "w") as f:
        f.write(f"Synthetic demo set made by code/tools/make_demo_data.py: {len(labels)} classes, "
                f"{train_per_class} train and {val_per_class} val images per class, seed {seed}.\n"
                "It is NOT MiniPlaces: numbers measured on it say nothing about MiniPlaces.\n")
    return labels


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="folder to write (e.g. ../data)")
    parser.add_argument("--classes", type=int, default=10, help="number of classes (1-100)")
    parser.add_argument("--train-per-class", type=int, default=100)
    parser.add_argument("--val-per-class", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        labels = make_demo_dataset(args.out_dir, args.classes, args.train_per_class,
                                   args.val_per_class, args.seed)
    except (FileExistsError, ValueError) as e:
        sys.exit(f"error: {e}")
    print(f"wrote the DEMO set ({len(labels)} classes) to {args.out_dir}: not MiniPlaces")


if __name__ == "__main__":
    main()
