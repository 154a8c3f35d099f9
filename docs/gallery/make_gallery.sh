#!/bin/sh
# Rebuild every picture in this folder from a trained run: sh docs/gallery/make_gallery.sh runs/mnist
set -e
RUN=${1:-runs/mnist}
D=$(dirname "$0")
tinydiffusion viz schedule --out "$D/schedule.png"
tinydiffusion viz forward --out "$D/forward.png"
tinydiffusion viz diagnostic --run "$RUN" --out "$D/diagnostic.png"
tinydiffusion viz trajectory --run "$RUN" --out "$D/trajectory.png"
tinydiffusion viz loss --run "$RUN" --out "$D/loss.png"
