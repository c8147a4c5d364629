#!/usr/bin/env bash
# Train geoseg's two default land-cover models on the Dubai aerial tiles, then score them.
#
# Data: "Semantic segmentation of aerial imagery" by Humans in the Loop, MBRSC imagery of
# Dubai, CC0 1.0 (see ../shared/data/README.md). Tiles 1-6 train, tiles 7-8 are held out
# for validation and the reported mIoU. No pretrained weights: trained from scratch.
#
# usage: examples/train_dubai.sh [DATA_DIR] [OUT_DIR]    (2 CPU cores: ~75 min in all;
#        MINUTES=N sets the training time per model)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
data="$(cd "${1:-$here/../../shared/data/dubai}" && pwd)"
out="$(mkdir -p "${2:-$here/../geoseg/models/weights}" && cd "${2:-$here/../geoseg/models/weights}" && pwd)"
minutes="${MINUTES:-30}"
train=("$data"/tile_{1,2,3,4,5,6})
val=(--val "$data/tile_7" --val "$data/tile_8")
common=(--class-colors "$here/dubai_classes.json" --band-names red,green,blue
        --miou-exclude unlabeled --crop-size 256 --batch-size 8 --steps-per-epoch 50
        --epochs 100 --max-minutes "$minutes" --lr 2e-3 --warmup-steps 30 --loss ce+dice
        --class-weights auto --tile-size 512 --overlap 64 --val-limit 24 --seed 0 --half
        --threads 2 --overwrite)

geoseg train "${train[@]}" "${val[@]}" "${common[@]}" \
    --model deeplab --backbone mobilenet_v2 -o "$out/deeplab.safetensors"
geoseg train "${train[@]}" "${val[@]}" "${common[@]}" \
    --model unet --backbone mobilenet_v2 --arch-param 'decoder_channels=[128,64,32,16,16]' \
    -o "$out/unet.safetensors"
# second stage: fine-tune the U-Net from its own bundle at a lower learning rate
# (later options override the same ones in "${common[@]}")
geoseg train "${train[@]}" "${val[@]}" "${common[@]}" \
    --init "$out/unet.safetensors" --max-minutes "${FINETUNE_MINUTES:-11}" --lr 6e-4 \
    --warmup-steps 10 --seed 1 -o "$out/unet.safetensors"
# third stage: fine-tune both once more, 13 minutes each (the shipped models: deeplab at
# lr 6e-4, seed 1; unet at lr 3e-4, seed 2; 25 steps per epoch)
for spec in "deeplab 6e-4 1" "unet 3e-4 2"; do
    set -- $spec
    geoseg train "${train[@]}" "${val[@]}" "${common[@]}" \
        --init "$out/$1.safetensors" --max-minutes "${STAGE3_MINUTES:-13}" --lr "$2" \
        --warmup-steps 10 --steps-per-epoch 25 --seed "$3" -o "$out/$1.safetensors"
done
# a time-limited run keeps its resumable checkpoint; the shipped models do not need it
rm -f "$out"/*.last.safetensors "$out"/*.state.json

# held-out tiles 7-8 through geoseg.prediction.pipeline.predict: prints the model-card figures and
# stores them in each bundle (provenance "heldout"), where the tests read them back
python "$here/evaluate_dubai.py" --data "$data" --record \
    "$out/deeplab.safetensors" "$out/unet.safetensors"
