#!/usr/bin/env bash
# Download MiniPlaces (100 scene classes, 100K train / 10K val, 128x128 JPEG) into data/:
#   data/train.txt  data/val.txt  data/images/train/...  data/images/val/...
# Needs gdown (pip install -r requirements.txt) and internet access to Google Drive and GitHub.
set -euo pipefail

GDRIVE_ID="16GYHdSWS3iMYwMPv5FpeDZN2rH7PR0F2"
LISTS_URL="https://raw.githubusercontent.com/CSAILVision/miniplaces/master/data"
EXPECT_TRAIN="${EXPECT_TRAIN:-100000}"
EXPECT_VAL="${EXPECT_VAL:-10000}"
DATA_DIR="${1:-$(cd "$(dirname "$0")" && pwd)/data}"

fail() {
  echo "error: $*" >&2
  echo "       Offline? Fetch https://drive.google.com/uc?id=${GDRIVE_ID} and ${LISTS_URL}/{train,val}.txt" >&2
  echo "       on a connected machine, copy them into ${DATA_DIR}, and run this script again;" >&2
  echo "       or try everything on the generated demo set: (cd code && python -m tools.make_demo_data ../data)" >&2
  exit 1
}

mkdir -p "$DATA_DIR"
cd "$DATA_DIR"
if [ -f train.txt ] && [ ! -f DEMO_DATASET.txt ] && [ -d images/train ]; then
  echo "MiniPlaces is already in $DATA_DIR; nothing to do."
  exit 0
fi
if [ -f DEMO_DATASET.txt ]; then
  echo "Replacing the generated demo set in $DATA_DIR by MiniPlaces."
  rm -rf images train.txt val.txt categories.txt DEMO_DATASET.txt
fi

if [ ! -f data.tar.gz ]; then
  command -v gdown >/dev/null || fail "gdown is not installed (pip install -r requirements.txt)"
  echo "Downloading the images from Google Drive (about 460 MB) ..."
  gdown --quiet "$GDRIVE_ID" -O data.tar.gz.part || fail "could not download the MiniPlaces images from Google Drive"
  mv data.tar.gz.part data.tar.gz
fi
for split in train val; do
  if [ ! -f "$split.txt" ]; then
    curl -fsSL --max-time 60 "$LISTS_URL/$split.txt" -o "$split.txt.part" || fail "could not download $split.txt from GitHub"
    mv "$split.txt.part" "$split.txt"
  fi
done

echo "Unpacking ..."
rm -rf .unpack && mkdir .unpack
tar -xzf data.tar.gz -C .unpack || fail "data.tar.gz is not a valid archive (a partial download?); delete it and retry"
images_root=$(find .unpack -type d -name train -prune -exec dirname {} \; | head -n 1)
[ -n "$images_root" ] && [ -d "$images_root/val" ] || fail "the archive has no train/ and val/ image folders"
rm -rf images && mv "$images_root" images && rm -rf .unpack

n_train=$(grep -c . train.txt); n_val=$(grep -c . val.txt)
[ "$n_train" -eq "$EXPECT_TRAIN" ] || fail "train.txt lists $n_train images, expected $EXPECT_TRAIN"
[ "$n_val" -eq "$EXPECT_VAL" ] || fail "val.txt lists $n_val images, expected $EXPECT_VAL"
for list in train.txt val.txt; do
  missing=$(cut -d' ' -f1 "$list" | while read -r rel; do [ -f "images/$rel" ] || echo "$rel"; done | head -n 3)
  [ -z "$missing" ] || fail "images listed in $list are missing, e.g. $missing"
done
rm -f data.tar.gz
echo "MiniPlaces is ready in $DATA_DIR: $n_train train and $n_val val images."
