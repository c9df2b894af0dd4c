#!/usr/bin/env bash
# Every benchmark behind BENCHMARKS.md, in order (about 40 minutes on 2 CPU cores).
# Usage: bash bench/run_all.sh   (after setting up .venv-bench as in bench/README.md)
set -euo pipefail
cd "$(dirname "$0")/.."
P=${PYTHON:-.venv-bench/bin/python}
R=bench/results
run() { local name=$1; shift; echo "== $name" >&2; $P bench/bench.py "$@" --json "$R/$name.json" > "$R/$name.md"; }
run mlp_sg_B8_N50            --model mlp   --mode sg -B 8 -N 50 --repeats 20 --check
run lenet_sg_B8_N50          --model lenet --mode sg -B 8 -N 50 --repeats 10 --check
run mlp_sg_B8_N50_floor_only --model mlp   --mode sg -B 8 -N 50 --repeats 30 --methods floor,tfmollify_sg
run mlp_ng_B8_M10            --model mlp   --mode ng -B 8 -M 10 --repeats 20 --check
run lenet_ng_B8_M10          --model lenet --mode ng -B 8 -M 10 --repeats 10 --check
run mlp_fg_B8_M10_N10        --model mlp   --mode fg -B 8 -M 10 -N 10 --repeats 10 --check
run lenet_fg_B8_M10_N10      --model lenet --mode fg -B 8 -M 10 -N 10 --repeats 10 --check
run mobilenetv2_sg_B8_N50_bs64     --model mobilenetv2 --mode sg -B 8 -N 50 --batch-size 64 --repeats 3 --warmup 0
run mobilenetv2_ng_B8_M10_bs64     --model mobilenetv2 --mode ng -B 8 -M 10 --batch-size 64 --repeats 3 --warmup 0
run mobilenetv2_fg_B8_M10_N10_bs64 --model mobilenetv2 --mode fg -B 8 -M 10 -N 10 --batch-size 64 --repeats 3 --warmup 0
run vgg16_sg_B2_N50_bs32 --model vgg16 --mode sg -B 2 -N 50 --batch-size 32 --repeats 2 --warmup 0 \
    --methods floor_chunked,tfmollify_sg,xplique_sg,tf_explain,tf_keras_vis,pair_saliency
run vgg16_sg_B8_N50_bs32 --model vgg16 --mode sg -B 8 -N 50 --batch-size 32 --repeats 2 --warmup 0 \
    --methods floor_chunked,tfmollify_sg
echo "== noise cost" >&2
$P bench/noise_cost.py --repeats 300 --json $R/noise_cost_B8_N50_D784.json > $R/noise_cost_B8_N50_D784.md
echo "== memory" >&2
$P bench/memory.py --models lenet,mlp --N 50,200,1000 --batch-size 64 \
    --json $R/memory_lenet_mlp_B8_bs64.json > $R/memory_lenet_mlp_B8_bs64.md
echo "== samplers: cost per call, and error against a large-N truth (10 min)" >&2
$P bench/sampler_cost.py --json $R/sampler_cost_N64.json > $R/sampler_cost_N64.md
$P bench/rmse_vs_n.py --json $R/rmse_vs_n.json --plot $R/rmse_vs_n.png > $R/rmse_vs_n.md
