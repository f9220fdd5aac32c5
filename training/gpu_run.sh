#!/usr/bin/env bash
# The one call on a lent GPU machine (the `device` tool): train the GPU recipe from the carried
# shards and send back what the next session continues from. Prepared here by `make gpu-bundle`
# (shards/gpu: a 40 MB speaker-balanced subset of the corpus; .whl: soundfile for that image),
# then, in one call with a limit that leaves time to rerun:
#     run(command="bash training/gpu_run.sh", carry=["shards/gpu", ".whl"], timeout_s=560)
# The machine has PyTorch, numpy, scipy, numba, onnxruntime and tqdm but no corpus (only what the
# call carries: 64 MiB with the repository), no soundfile, soxr, pesq or pystoi: so no
# validation there; the snapshots come back and are chosen on val2 here.
# Settings (environment): MINUTES of training (default 7), OUT (the folder that comes back;
# default runs/gpu_out), RUN (the run folder, resumable; default runs/gpu), WHEELS (default .whl),
# CONFIG (default training/configs/gpu.json, the shipped network; training/configs/gpu_wide3.json
# trains the third widening from its committed CPU state).
# Further arguments are overrides for python -m training.train (e.g. train.batch_size=256).
set -uo pipefail
OUT=${OUT:-runs/gpu_out}
RUN=${RUN:-runs/gpu}
MINUTES=${MINUTES:-7}
WHEELS=${WHEELS:-.whl}
CONFIG=${CONFIG:-training/configs/gpu.json}
mkdir -p "$OUT" "$RUN"
if compgen -G "$WHEELS/*.whl" >/dev/null; then
    site=$(mktemp -d)
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$site" "$WHEELS"/*.whl || exit 3
    export PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
{ nvidia-smi; python3 -c "import torch; print('torch', torch.__version__, torch.cuda.is_available())"; } \
    >"$OUT/machine.txt" 2>&1
python3 -m training.train --config "$CONFIG" --out "$RUN" \
    --max-minutes "$MINUTES" "$@" >"$OUT/train.log" 2>&1
status=$?
# what comes back (at most 8 files of 16 MiB): the resume state, the losses, and in one tar the
# snapshots (every train.snapshot_every steps) with the last step's weights and their average
# when the schedule ran to its end
for f in last.pt train.csv config.json; do [ -f "$RUN/$f" ] && cp "$RUN/$f" "$OUT/"; done
weights=$(cd "$RUN" && ls -d snaps step*.pt avg.pt 2>/dev/null)
[ -n "$weights" ] && tar -cf "$OUT/snaps.tar" -C "$RUN" $weights
tail -c 4000 "$OUT/train.log" | tr '\r' '\n' | tail -n 25
exit $status
