"""MiniPlaces dataset: ``root/<split>.txt`` lists ``relpath label`` per line and the
images live under ``root/images/<relpath>`` (class folders of one or two levels)."""
import os
import torch
from torch.utils import data
from utils import load_image

GET_DATA_HINT = ("get MiniPlaces with ../download_dataset.sh, or make the small demo set "
                 "with: python -m tools.make_demo_data ../data")


def collate_uint8(batch):
    """DataLoader ``collate_fn`` for (image, label) items: uint8 (C, H, W) images, e.g. the HWC
    views of ``custom_transforms.ToUint8Tensor``, become one (B, C, H, W) uint8 batch in
    channels_last memory (one plain copy of the HWC pixels), labels a (B,) int64 tensor; any
    other items are collated as PyTorch's default does."""
    images, labels = zip(*batch)
    if not all(isinstance(x, torch.Tensor) and x.dtype == torch.uint8 and x.dim() == 3 for x in images):
        return data.default_collate(batch)
    hwc = torch.stack([x.permute(1, 2, 0) for x in images])  # (B, H, W, C); a memcpy for HWC views
    return hwc.permute(0, 3, 1, 2), torch.tensor(labels)  # (B, C, H, W) in channels_last memory


def read_label_file(label_file, num_classes):
    """Parse ``relpath label`` lines into [(relpath, label)], naming bad lines."""
    items = []
    with open(label_file, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            line = line.strip()
            if not line:
                continue
            parts = line.split()
            if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
                raise ValueError(f"{label_file}:{lineno}: expected 'relative/path.jpg label', got {line!r}")
            label = int(parts[1])
            if not 0 <= label < num_classes:
                raise ValueError(f"{label_file}:{lineno}: label {label} is outside [0, {num_classes})")
            items.append((parts[0], label))
    return items


class MiniPlacesLoader(data.Dataset):
    """
    A simple dataloader for mini places
    """

    def __init__(self, root_folder, label_file=None, num_classes=100, split="train",
                 transforms=None):
        """One split of MiniPlaces (or of the generated demo set in the same layout).

        Args:
            root_folder: folder holding ``<split>.txt`` and ``images/``.
            label_file: list to read instead of ``root_folder/<split>.txt``.
            num_classes: labels must lie in [0, num_classes).
            split: "train", "val" or "test".
            transforms: callable applied to each (H, W, 3) uint8 RGB image.
        Items are ``(transforms(image), label)`` with label an int.
        Raises:
            FileNotFoundError: the label file or the images folder is missing.
            ValueError: a line of the label file is malformed (file and line number).
        """
        if split not in ("train", "val", "test"):
            raise ValueError(f"split must be train, val or test, got {split!r}")
        self.root_folder = root_folder
        self.split = split
        self.transforms = transforms
        self.n_classes = num_classes
        if label_file is None:
            label_file = os.path.join(root_folder, split + ".txt")
        if not os.path.isfile(label_file):
            raise FileNotFoundError(f"label file {label_file} does not exist; {GET_DATA_HINT}")
        image_root = os.path.join(root_folder, "images")
        if not os.path.isdir(image_root):
            raise FileNotFoundError(f"image folder {image_root} does not exist; {GET_DATA_HINT}")
        self.file_label_list = read_label_file(label_file, num_classes)
        if not self.file_label_list:
            raise ValueError(f"label file {label_file} lists no images")

    def __len__(self):
        return len(self.file_label_list)

    def __getitem__(self, index):
        filename, label = self.file_label_list[index]
        img = load_image(os.path.join(self.root_folder, "images", filename))
        if self.transforms is not None:
            img = self.transforms(img)
        return img, label

    def get_index_mapping(self):
        # load the train label file
        train_label_file = os.path.join(self.root_folder, self.split + ".txt")
        if not os.path.exists(train_label_file):
            raise ValueError("Label file {:s} does not exist!".format(label_file))
        with open(train_label_file) as f:
            lines = f.readlines()

        # get the category names
        id_index_map = {}
        for line in lines:
            filename, label_id = line.rstrip("\n").split(" ")
            cat_name = filename.split("/")[-2]
            id_index_map[label_id] = cat_name

        return id_index_map
